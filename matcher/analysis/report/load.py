"""What a report reads: the runs of a run folder or a compare folder, and their common time frame.

compare.json comes in two forms, both read here (docs/run-output.md):

- current: ``{"trace": ABS, "baseline": LABEL, "tz": ZONE | null, "runs": [{"label", "path": ABS, ...summary}]}``;
- before it: ``{"trace", "policies": [LABEL...], "runs": {LABEL: summary}}``, runs in ``root/LABEL``.

A run's ``path`` is absolute; when it no longer exists (the compare folder was moved or
copied), ``root/LABEL`` is used instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from matcher.analysis.localtime import LocalTime, resolve
from matcher.analysis.metrics import read_meta, read_ticks, run_request_table
from matcher.analysis.report.style import PALETTE
from matcher.analysis.summary_text import run_label
from matcher.errors import MatcherError

REQUEST_COLUMNS = [
    "request_id",
    "request_ts",
    "end_ts",
    "outcome",
    "wait_s",
    "match_delay_s",
    "pickup_eta_s",
    "pickup_distance_m",
    "time_in_system_s",
]
GRID_POINTS = 600
PERIODS = 4  # supply/demand maps: the request span in this many equal periods


@dataclass
class Run:
    label: str
    folder: Path
    summary: dict
    color: str
    meta: dict = field(default_factory=dict)
    requests: pl.DataFrame | None = None  # REQUEST_COLUMNS of matcher.analysis.metrics.request_table
    ticks: pl.DataFrame | None = None
    problems: list[str] = field(default_factory=list)  # what could not be read (said in the report)


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise MatcherError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise MatcherError(f"{path}: not a JSON object")
    return data


def _load(label: str, folder: Path, summary: dict, color: str) -> Run:
    run = Run(label, folder, summary, color)
    try:
        run.meta = read_meta(folder)
    except (OSError, ValueError):
        run.problems.append("run.json unreadable")
    try:
        run.requests = run_request_table(folder, REQUEST_COLUMNS)
    except (MatcherError, OSError, pl.exceptions.PolarsError) as e:
        run.problems.append(f"events: {e}")  # the table still shows; plots skip this run
    try:
        run.ticks = read_ticks(folder)
    except (OSError, pl.exceptions.PolarsError) as e:
        run.problems.append(f"ticks.parquet: {e}")
    return run


def compare_entries(root: Path, cmp: dict) -> list[tuple[str, Path, dict | None]]:
    """(label, folder, summary or None) of each run of a compare.json, in either form."""
    runs = cmp.get("runs")
    out: list[tuple[str, Path, dict | None]] = []
    if isinstance(runs, list):  # current form
        for i, entry in enumerate(runs):
            if not isinstance(entry, dict) or not entry.get("label"):
                raise MatcherError(f"{root / 'compare.json'}: run {i} has no label")
            label = str(entry["label"])
            path = Path(entry["path"]) if entry.get("path") else root / label
            if not (path / "summary.json").exists() and (root / label / "summary.json").exists():
                path = root / label  # moved or copied compare folder
            summary = {k: v for k, v in entry.items() if k != "path"}
            out.append((label, path, summary if len(summary) > 1 else None))
        return out
    runs = runs if isinstance(runs, dict) else {}
    labels = cmp.get("policies") or list(runs)
    return [(str(label), root / str(label), runs.get(label)) for label in labels]


def runs_of(root: Path) -> tuple[str, dict, list[Run]]:
    """(kind, info, runs) of a compare folder (compare.json) or a run folder (summary.json)."""
    if (root / "compare.json").exists():
        cmp = _read_json(root / "compare.json")
        runs = []
        for i, (label, folder, summary) in enumerate(compare_entries(root, cmp)):
            if summary is None and (folder / "summary.json").exists():
                summary = _read_json(folder / "summary.json")
            summary = dict(summary or {})
            summary.setdefault("label", label)
            runs.append(_load(label, folder, summary, PALETTE[i % len(PALETTE)]))
        if not runs:
            raise MatcherError(f"{root / 'compare.json'}: lists no run")
        info = {"trace": cmp.get("trace"), "baseline": cmp.get("baseline"), "tz": cmp.get("tz")}
        return "Policy comparison", info, runs
    if (root / "summary.json").exists():
        summary = _read_json(root / "summary.json")
        meta = _read_json(root / "run.json") if (root / "run.json").exists() else {}
        label = run_label({**meta, **summary})
        info = {"trace": meta.get("trace"), "tz": meta.get("tz")}
        return "Replay", info, [_load(label, root, summary, PALETTE[0])]
    raise MatcherError(f"{root}: not a run folder (summary.json) nor a compare folder (compare.json)")


def baseline_of(runs: list[Run], named: str | None) -> Run:
    """The run every other is compared against: the one compare.json names, else greedy, else the first."""
    for want in (named, "greedy"):
        for r in runs:
            if want and r.label == want:
                return r
    return runs[0]


@dataclass
class Frame:
    """The common time frame of a report's plots (seconds from ``origin``, UTC)."""

    origin: Any  # numpy datetime64[ms] (naive UTC) of the first request; None without requests
    requests_s: float = 1.0  # first to last request
    total_s: float = 1.0  # first request to the last end
    tz: LocalTime = field(default_factory=lambda: LocalTime("UTC", "no coordinates: UTC"))

    @property
    def origin_ms(self) -> int:
        return int(self.origin.astype("datetime64[ms]").astype(np.int64))

    def grid(self, n: int = GRID_POINTS) -> np.ndarray:
        return np.linspace(0.0, self.total_s, n, endpoint=False)  # the last end closes every interval

    def periods(self, n: int = PERIODS) -> list[tuple[float, float]]:
        """The request span in n equal periods, the last one closed at the last end."""
        step = self.requests_s / n
        edges = [i * step for i in range(n)] + [max(self.total_s, self.requests_s) + 1e-3]
        return [(edges[i], edges[i + 1]) for i in range(n)]

    def to_datetime(self, seconds) -> np.ndarray:
        return self.origin + (np.asarray(seconds, np.float64) * 1000).astype("timedelta64[ms]")


def frame_of(runs: list[Run], tz: str | None, places: pl.DataFrame | None) -> Frame:
    starts, last_req, ends = [], [], []
    for r in runs:
        if r.requests is not None and r.requests.height:
            starts.append(r.requests["request_ts"].min())
            last_req.append(r.requests["request_ts"].max())
            ends.append(r.requests["end_ts"].max() or last_req[-1])
    lat = places["lat"].to_numpy() if places is not None and places.height else np.empty(0)
    lng = places["lng"].to_numpy() if places is not None and places.height else np.empty(0)
    local = resolve(tz, lat, lng)
    if not starts:
        return Frame(None, tz=local)
    t0 = min(starts)
    return Frame(
        np.datetime64(t0.replace(tzinfo=None), "ms"),
        max((max(last_req) - t0).total_seconds(), 1.0),
        max((max(ends + last_req) - t0).total_seconds(), 1.0),
        local,
    )


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
