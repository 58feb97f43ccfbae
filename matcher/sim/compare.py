"""`matcher compare`: one trace, fleet and seed replayed under several policies.

Writes DIR/<label>/ (a run folder per policy), DIR/compare.json and DIR/report.html.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from matcher.config import Policy
from matcher.errors import MatcherError

DEFAULT_BATCH_WINDOW_S = 2.0


def policy_label(policy: Policy, window: float | None) -> str:
    return Policy.GREEDY.value if policy == Policy.GREEDY else f"{Policy.BATCH.value}-{window:g}s"


def parse_policies(spec: str) -> list[tuple[str, Policy, float | None]]:
    """``"greedy,batch:2,batch:10"`` -> ``[("greedy", "greedy", None), ("batch-2s", "batch", 2.0),
    ("batch-10s", "batch", 10.0)]``. ``batch`` alone is ``batch:2``. Raises MatcherError (one line)
    on an empty list, an unknown policy, a bad window or a duplicate."""
    if isinstance(spec, list):  # already parsed (the CLI parses --policies as it reads it)
        return spec
    out: list[tuple[str, Policy, float | None]] = []
    items = [p.strip() for p in (spec or "").split(",")]
    if not any(items):
        raise MatcherError("--policies: empty list (expected e.g. greedy,batch:2,batch:10)")
    for item in items:
        if not item:
            raise MatcherError(f"--policies: empty item in {spec!r}")
        name, sep, arg = (x.strip() for x in item.partition(":"))
        if name == Policy.GREEDY:
            if sep:
                raise MatcherError(f"--policies: greedy takes no window: {item!r}")
            policy, window = Policy.GREEDY, None
        elif name == Policy.BATCH:
            if not sep:
                window = DEFAULT_BATCH_WINDOW_S
            else:
                try:
                    window = float(arg)
                except ValueError:
                    raise MatcherError(f"--policies: bad batch window in {item!r} (expected batch:SECONDS)") from None
                if not math.isfinite(window) or window <= 0:
                    raise MatcherError(f"--policies: batch window must be > 0 seconds: {item!r}")
            policy = Policy.BATCH
        else:
            raise MatcherError(f"--policies: unknown policy {item!r} (expected greedy or batch:SECONDS)")
        label = policy_label(policy, window)
        if any(label == o[0] for o in out):
            raise MatcherError(f"--policies: {label} is listed twice")
        out.append((label, policy, window))
    return out


def run_compare(args, policies: list[tuple[str, Policy, float | None]], config_from_args) -> dict:
    """Replay args.trace once per policy into args.out/<label>/, then write compare.json and report.html.

    Every run gets the same trace, fleet (args.drivers) and seed: only policy and window differ.
    compare.json (docs/run-output.md): ``{"trace": ABS, "baseline": LABEL, "tz": ZONE | null, "runs": [{"label",
    "path": ABS, ...summary}]}``, one object per policy in the order given, so DuckDB and polars
    read the runs as rows. ``args.out`` is held for the whole compare and must be new or empty, or a
    compare or run to replace with ``args.overwrite`` (removed whole: no stale policy folder or report
    stays). Returns the compare.json dict.
    """
    from matcher.analysis.metrics import write_json_atomic
    from matcher.analysis.report import build_report
    from matcher.analysis.summary_text import format_summary
    from matcher.io.runfolder import claim
    from matcher.sim.replay import run_replay  # lazily: the engine imports Ray and friends

    root = Path(args.out).resolve()
    runs: list[dict] = []
    with claim(root, kind="compare", overwrite=bool(getattr(args, "overwrite", False))):
        for label, policy, window in policies:
            cfg = config_from_args(args, policy=policy, window=window)
            cfg = dataclasses.replace(cfg, out=os.fspath(root / label), label=label)
            summary = dict(run_replay(cfg))
            summary["label"] = summary.get("label") or label
            runs.append({"label": summary["label"], "path": os.fspath(root / label), **summary})
        baseline = next((r["label"] for r in runs if r.get("policy") == Policy.GREEDY), runs[0]["label"])
        tz = getattr(args, "tz", None)
        compare = {"trace": os.path.abspath(cfg.trace), "baseline": baseline, "tz": tz, "runs": runs}
        write_json_atomic(root / "compare.json", compare)
        build_report(root)  # in compare.json's tz
    if not getattr(args, "quiet", False):
        print(format_summary([{k: v for k, v in r.items() if k != "path"} for r in runs]))
    return compare
