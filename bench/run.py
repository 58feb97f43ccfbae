"""Run the benchmarks: ``python -m bench.run [--quick] [--only NAME,...] [--out bench/results/latest.json]``.

Writes ``{"machine": {...}, "figures": {NAME: {"value", "unit", "target", "better", "ok", "note",
"measured_on"}}}`` and prints a table. Every figure is measured for real (medians over
repeats; ratios measured side by side in the same run); ``machine`` is this run's, and
with ``--only`` the figures not named are kept from the file, so each figure's
``measured_on`` names the CPU and date of its own measurement (figures kept from before
that field existed lack it). ``--quick`` shrinks
every size for a smoke run (< 60 s) and skips Ray and the 1M-request replay.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from . import _threads  # noqa: F401  (must come before numpy: thread-pool limits)

HERE = Path(__file__).resolve().parent


def _registry():
    """(function name, figures it produces, module:function), in run order (cheap and pinned first)."""
    return [
        ("geohash_encode_points_per_s", ("geohash_encode_points_per_s",), "index"),
        ("candidates_geohash_vs_kdtree", ("candidates_geohash_vs_kdtree",), "index"),
        ("tick_solve_ms_p50", ("tick_solve_ms_p50",), "core"),
        ("tick_dense_vs_sparse", ("tick_dense_vs_sparse",), "core"),
        ("queued_solve_speedup", ("queued_solve_speedup",), "core"),
        ("scaling_exponent", ("scaling_exponent",), "core"),
        ("ingest_pings_per_s", ("ingest_pings_per_s",), "core"),
        ("cost_ratio_sharded_vs_global", ("cost_ratio_sharded_vs_global",), "sharded"),
        (
            "shard_balance",
            ("shard_balance_4", "shard_balance_8", "coordinator_solve_share", "modeled_speedup_8"),
            "shards",
        ),
        ("nyc_day_sharded_vs_1", ("nyc_day_sharded_vs_1",), "shards"),
        ("wall_2_shards_vs_1", ("wall_2_shards_vs_1",), "shards"),
        ("ingest_pings_per_s_ray", ("ingest_pings_per_s_ray",), "ray_ingest"),
        ("replay_speedup_metro", ("replay_speedup_metro", "metro_tick_ms_p99", "littles_law_ratio"), "replay"),
        ("wait_ratio_batch_vs_greedy", ("wait_ratio_batch_vs_greedy",), "replay"),
        ("peak_rss_mb_replay_1m", ("peak_rss_mb_replay_1m",), "replay"),
        ("ray_overhead_small_city", ("ray_overhead_small_city",), "ray_overhead"),
        ("ray_overhead_metro", ("ray_overhead_metro",), "ray_overhead"),
        ("serve_live", tuple(_SERVE), "serve"),
        (
            "area_speedup_2_tasks",
            ("area_speedup_2_tasks", "area_speedup_2_tasks_embedded", "area_events_per_s"),
            "areas",
        ),
        (
            "area_projection",
            ("area_metro_speed", "area_nodes_realtime_100x50k", "area_nodes_10x_100x50k"),
            "areas",
        ),
    ]


# the declared unit/target/better of each figure (used when its function fails)
SPECS = {
    "geohash_encode_points_per_s": ("points/s", 2_000_000, "higher"),
    "candidates_geohash_vs_kdtree": ("x", 1.0, "higher"),
    "tick_solve_ms_p50": ("ms", 20, "lower"),
    "tick_dense_vs_sparse": ("x", 10, "higher"),
    "queued_solve_speedup": ("x", 1.0, "higher"),
    "scaling_exponent": ("slope", 1.3, "lower"),
    "ingest_pings_per_s": ("pings/s", 1_000_000, "higher"),
    "cost_ratio_sharded_vs_global": ("ratio", 1.001, "lower"),
    "shard_balance_4": ("ratio", 1.3, "lower"),
    "shard_balance_8": ("ratio", 1.3, "lower"),
    "coordinator_solve_share": ("share", 0.10, "lower"),
    "modeled_speedup_8": ("x", 5.0, "higher"),
    "nyc_day_sharded_vs_1": ("rel. diff", 0.01, "lower"),
    "wall_2_shards_vs_1": ("x", 1.0, "higher"),
    "ingest_pings_per_s_ray": ("pings/s", 200_000, "higher"),
    "replay_speedup_metro": ("x", 30, "higher"),
    "metro_tick_ms_p99": ("ms", 100, "lower"),
    "littles_law_ratio": ("ratio", None, None),
    "wait_ratio_batch_vs_greedy": ("ratio", 0.8, "lower"),
    "peak_rss_mb_replay_1m": ("MB", 2048, "lower"),
    "ray_overhead_small_city": ("ratio", 1.5, "lower"),
    "ray_overhead_metro": ("ratio", None, None),
    "area_speedup_2_tasks": ("x", 1.7, "higher"),
    "area_speedup_2_tasks_embedded": ("x", None, None),
    "area_events_per_s": ("events/s", None, None),
    "area_metro_speed": ("x", None, None),
    "area_nodes_realtime_100x50k": ("nodes", None, None),
    "area_nodes_10x_100x50k": ("nodes", None, None),
}
# the live service (bench/serve.py; one service run measures them all)
_SERVE = {
    "serve_batch_pings_per_s": ("pings/s", 12_500, "higher"),
    "serve_batch_put_ms_p99": ("ms", 50, "lower"),
    "serve_single_put_per_s": ("req/s", 1_000, "higher"),
    "serve_request_post_ms_p99": ("ms", 50, "lower"),
    "serve_request_to_offer_ms_p99": ("ms", 2_100, "lower"),
    "serve_audit_violations": ("violations", 0, "lower"),
}
SPECS.update(_SERVE)


def _select(only: str | None):
    reg = _registry()
    if not only:
        return reg
    want = {w.strip() for w in only.split(",") if w.strip()}
    known = {n for n, figs, _ in reg} | {f for _, figs, _ in reg for f in figs}
    unknown = want - known
    if unknown:
        raise SystemExit(f"bench.run: unknown figure(s) {sorted(unknown)}; known: {sorted(known)}")
    return [(n, figs, m) for n, figs, m in reg if n in want or want & set(figs)]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.3f}"
        return f"{v:.4g}"
    return str(v)


def table(figures: dict) -> str:
    rows = [("figure", "value", "unit", "target", "ok")]
    for name, f in figures.items():
        if f["target"] is None:
            tgt = "1 +- 0.1" if name == "littles_law_ratio" else "-"
        else:
            tgt = ("<= " if f["better"] == "lower" else ">= ") + _fmt(f["target"])
        ok = "yes" if f["ok"] else ("n/a" if f["value"] is None else "NO")
        rows.append((name, _fmt(f["value"]), f["unit"], tgt, ok))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join([r[0].ljust(w[0]), r[1].rjust(w[1]), r[2].ljust(w[2]), r[3].ljust(w[3]), r[4]]))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


def _clean(obj):
    """JSON without NaN/inf (they become null)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run; skips Ray and the 1M replay")
    p.add_argument("--only", default=None, help="comma list of figure names (or their function names)")
    p.add_argument("--out", default=str(HERE / "results" / "latest.json"), help="results JSON (default %(default)s)")
    p.add_argument(
        "--cache", default=str(HERE / ".cache"), help="synthetic inputs and scratch runs (default %(default)s)"
    )
    a = p.parse_args(argv)

    import importlib

    from .common import Context, failed, machine

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=a.quick, cache=Path(a.cache), results=out.parent)
    results = {"machine": machine(), "mode": "quick" if a.quick else "full", "figures": {}}
    if a.only and out.exists():
        # --only re-measures those figures and keeps the others of the existing results
        try:
            previous = json.loads(out.read_text())
            if previous.get("mode") == results["mode"]:
                results["figures"] = previous.get("figures", {})
        except (OSError, ValueError):
            pass
    results["machine"]["affinity_at_start"] = sorted(os.sched_getaffinity(0))
    results["machine"]["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    t_all = time.perf_counter()
    for name, figs, module in _select(a.only):
        ctx.log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            fn = getattr(importlib.import_module(f"bench.{module}"), name)
            got = fn(ctx)
        except Exception as e:  # noqa: BLE001 - one broken figure must not sink the others
            traceback.print_exc()
            got = {f: failed(*SPECS[f], f"{type(e).__name__}: {e}"[:400]) for f in figs}
        for f, v in got.items():
            v["seconds"] = round(time.perf_counter() - t0, 1)
            v["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine inflates wall times
            # --only keeps the other figures, measured on other days and maybe other machines
            v["measured_on"] = {"cpu": results["machine"]["cpu"], "date": results["machine"]["date"]}
            results["figures"][f] = v
            ctx.log(f"  {f} = {_fmt(v['value'])} {v['unit']} ({'ok' if v['ok'] else 'MISS'}) - {v['note']}")
        # write after every figure: a long run that dies keeps what it measured
        results["seconds"] = round(time.perf_counter() - t_all, 1)
        out.write_text(json.dumps(_clean(results), indent=2, allow_nan=False) + "\n")
    print(table(results["figures"]))
    print(f"\n{len(results['figures'])} figures in {time.perf_counter() - t_all:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
