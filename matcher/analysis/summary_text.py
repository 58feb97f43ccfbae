"""Plain-text, side-by-side view of run summaries (one column per run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matcher.config import Policy


def run_label(summary: dict) -> str:
    """summary["label"], else ``greedy`` / ``batch-2s`` from policy and window."""
    if summary.get("label"):
        return str(summary["label"])
    policy = summary.get("policy") or "run"
    window = summary.get("window_s")
    if policy == Policy.BATCH and window is not None:
        return f"{Policy.BATCH.value}-{window:g}s"
    return str(policy)


def get_path(summary: dict, path: str) -> Any:
    value: Any = summary
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def fmt_int(v) -> str:
    return f"{int(v):,}"


def fmt_pct(v) -> str:
    return f"{100 * v:.1f}%"


def fmt_f1(v) -> str:
    return f"{v:,.1f}"


def fmt_f0(v) -> str:
    return f"{v:,.0f}"


def speedup(s: dict) -> float | None:
    sim, wall = s.get("sim_seconds"), s.get("wall_seconds")
    return sim / wall if sim is not None and wall else None


# (row label, value getter, formatter)
ROWS: list[tuple[str, Callable[[dict], Any], Callable[[Any], str]]] = [
    ("requests", lambda s: s.get("requests"), fmt_int),
    ("completed", lambda s: s.get("completed"), fmt_int),
    ("served rate", lambda s: s.get("served_rate"), fmt_pct),
    ("wait mean (s)", lambda s: get_path(s, "wait_s.mean"), fmt_f1),
    ("wait p50 (s)", lambda s: get_path(s, "wait_s.p50"), fmt_f1),
    ("wait p90 (s)", lambda s: get_path(s, "wait_s.p90"), fmt_f1),
    ("match delay mean (s)", lambda s: get_path(s, "match_delay_s.mean"), fmt_f1),
    ("pickup ETA mean (s)", lambda s: get_path(s, "pickup_eta_s.mean"), fmt_f1),
    ("pickup dist mean (m)", lambda s: get_path(s, "pickup_distance_m.mean"), fmt_f0),
    ("cancelled", lambda s: s.get("cancelled"), fmt_int),
    ("expired", lambda s: s.get("expired"), fmt_int),
    ("declines", lambda s: s.get("declines"), fmt_int),
    ("utilization", lambda s: s.get("utilization"), fmt_pct),
    ("tick p50 (ms)", lambda s: get_path(s, "tick_ms.p50"), fmt_f1),
    ("tick p99 (ms)", lambda s: get_path(s, "tick_ms.p99"), fmt_f1),
    ("speedup (sim/wall)", speedup, lambda v: f"{v:,.1f}x"),
]


def format_summary(summaries: list[dict]) -> str:
    """A compact table: one row per figure, one column per run; missing values show as ``-``."""
    labels = [run_label(s) for s in summaries]
    cells = []
    for name, get, fmt in ROWS:
        row = []
        for s in summaries:
            v = get(s)
            row.append("-" if v is None else fmt(v))
        cells.append((name, row))
    w0 = max(len(name) for name, _ in cells)
    widths = [max([len(lab)] + [len(row[i]) for _, row in cells]) for i, lab in enumerate(labels)]
    lines = [" " * w0 + "".join(f"  {lab:>{w}}" for lab, w in zip(labels, widths))]
    lines.append("-" * len(lines[0]))
    for name, row in cells:
        lines.append(f"{name:<{w0}}" + "".join(f"  {c:>{w}}" for c, w in zip(row, widths)))
    return "\n".join(lines)
