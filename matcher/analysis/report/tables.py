"""The report's tables: run parameters, the summaries side by side, the hourly table, the headline.

Highlighting is honest: a row marks a value "best" only where higher (or lower) is
better for riders and the value beats every other run beyond noise
(:mod:`matcher.analysis.significance`). Utilization (more busy drivers is not better in
itself), tick latency and speedup (wall-clock figures of runs that do different work on
a shared machine) and the border share are never marked.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import polars as pl

from matcher.analysis import significance, world
from matcher.analysis.report.load import Frame, Run
from matcher.analysis.summary_text import fmt_f0, fmt_f1, fmt_int, fmt_pct, get_path, speedup


def _at(path: str) -> Callable[[dict], Any]:
    return lambda s: get_path(s, path)


# (row, figure path (for its standard error), getter, formatter, +1 higher is better / -1 lower / 0 never marked)
TABLE_ROWS: list[tuple[str, str, Callable[[dict], Any], Callable[[Any], str], int]] = [
    ("requests", "requests", _at("requests"), fmt_int, 0),
    ("completed", "completed", _at("completed"), fmt_int, +1),
    ("served rate", "served_rate", _at("served_rate"), fmt_pct, +1),
    ("cancelled", "cancelled", _at("cancelled"), fmt_int, -1),
    ("expired", "expired", _at("expired"), fmt_int, -1),
    ("wait mean (s)", "wait_s.mean", _at("wait_s.mean"), fmt_f1, -1),
    ("wait p50 (s)", "wait_s.p50", _at("wait_s.p50"), fmt_f1, -1),
    ("wait p90 (s)", "wait_s.p90", _at("wait_s.p90"), fmt_f1, -1),
    ("wait p95 (s)", "wait_s.p95", _at("wait_s.p95"), fmt_f1, -1),
    ("match delay mean (s)", "match_delay_s.mean", _at("match_delay_s.mean"), fmt_f1, -1),
    ("match delay p90 (s)", "match_delay_s.p90", _at("match_delay_s.p90"), fmt_f1, -1),
    ("pickup ETA mean (s)", "pickup_eta_s.mean", _at("pickup_eta_s.mean"), fmt_f1, -1),
    ("pickup ETA p90 (s)", "pickup_eta_s.p90", _at("pickup_eta_s.p90"), fmt_f1, -1),
    ("pickup distance mean (m)", "pickup_distance_m.mean", _at("pickup_distance_m.mean"), fmt_f0, -1),
    ("declines", "declines", _at("declines"), fmt_int, -1),
    ("utilization", "utilization", _at("utilization"), fmt_pct, 0),
    ("tick p50 (ms)", "tick_ms.p50", _at("tick_ms.p50"), fmt_f1, 0),
    ("tick p99 (ms)", "tick_ms.p99", _at("tick_ms.p99"), fmt_f1, 0),
    ("tick max (ms)", "tick_ms.max", _at("tick_ms.max"), fmt_f1, 0),
    ("border share", "border_share", _at("border_share"), fmt_pct, 0),
    ("fallback ticks", "fallback_ticks", _at("fallback_ticks"), fmt_int, 0),
    ("speedup (sim/wall)", "speedup", speedup, lambda v: f"{v:,.1f}x", 0),
]

PARAM_ROWS: list[tuple[str, Callable[[dict], Any]]] = [
    ("policy", lambda s: s.get("policy")),
    ("window (s)", lambda s: None if s.get("window_s") is None else f"{s['window_s']:g}"),
    ("shards", lambda s: s.get("shards")),
    ("seed", lambda s: s.get("seed")),
    ("drivers", lambda s: None if s.get("drivers") is None else fmt_int(s["drivers"])),
    ("quarantined rows", lambda s: None if s.get("quarantined") is None else fmt_int(s["quarantined"])),
    ("simulated time", lambda s: None if s.get("sim_seconds") is None else f"{s['sim_seconds'] / 3600:.2f} h"),
    ("wall time", lambda s: None if s.get("wall_seconds") is None else f"{s['wall_seconds']:.1f} s"),
]


def esc(v: Any) -> str:
    return html.escape("-" if v is None else str(v))


def _head(runs: list[Run]) -> str:
    cells = "".join(f'<th><span class="dot" style="background:{r.color}"></span>{esc(r.label)}</th>' for r in runs)
    return f"<thead><tr><th></th>{cells}</tr></thead>"


def _safe(get, s):
    try:
        return get(s)
    except (TypeError, KeyError, ValueError, ZeroDivisionError):
        return None


def params_table(runs: list[Run]) -> str:
    out = [f"<table>{_head(runs)}<tbody>"]
    for name, get in PARAM_ROWS + world.param_rows([r.summary for r in runs]):
        cells = "".join(f"<td>{esc(_safe(get, r.summary))}</td>" for r in runs)
        out.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def summary_table(runs: list[Run], ses: dict[str, dict[str, float]]) -> str:
    """The side-by-side table; a cell is ``class="best"`` only when best beyond noise."""
    out = [f"<table>{_head(runs)}<tbody>"]
    for name, key, get, fmt, direction in TABLE_ROWS:
        vals = [_safe(get, r.summary) for r in runs]
        best = significance.best_index(vals, [ses.get(r.label, {}).get(key) for r in runs], direction)
        cells = []
        for i, v in enumerate(vals):
            text = "-" if v is None else fmt(v)
            cls = ' class="best"' if i == best else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        out.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def headlines(runs: list[Run], base: Run, ses: dict[str, dict[str, float]]) -> list[str]:
    """One sentence per run against the baseline (none for a single run)."""
    return [
        significance.headline(
            r.label, r.summary, ses.get(r.label, {}), base.label, base.summary, ses.get(base.label, {})
        )
        for r in runs
        if r is not base
    ]


def hourly_table(runs: list[Run], fr: Frame) -> str:
    """Requests, served share and mean wait per local clock hour of the request time, per run."""
    zone = fr.tz.name
    frames = []
    for r in runs:
        if r.requests is None or r.requests.height == 0:
            continue
        df = r.requests.select(
            pl.col("request_ts").dt.convert_time_zone(zone).dt.truncate("1h").alias("hour"),
            (pl.col("outcome") == "completed").alias("served"),
            "wait_s",
        )
        agg = df.group_by("hour").agg(
            pl.len().alias("n"), pl.col("served").mean().alias("share"), pl.col("wait_s").mean().alias("wait")
        )
        frames.append((r, agg))
    if not frames:
        return '<p class="note">No request: no hourly table.</p>'
    hours = sorted(set().union(*(set(a["hour"].to_list()) for _, a in frames)))
    multi_day = len({h.date() for h in hours}) > 1
    head = "".join(
        f'<th colspan="3"><span class="dot" style="background:{r.color}"></span>{esc(r.label)}</th>' for r, _ in frames
    )
    sub = "".join("<th>requests</th><th>served</th><th>wait mean (s)</th>" for _ in frames)
    out = [
        f'<table class="hourly"><thead><tr><th>hour ({html.escape(zone)})</th>{head}</tr>',
        f"<tr><th></th>{sub}</tr></thead><tbody>",
    ]
    index = [{h: row for h, *row in a.select("hour", "n", "share", "wait").iter_rows()} for _, a in frames]
    for h in hours:
        label = h.strftime("%a %d %b %H:00" if multi_day else "%H:00")
        cells = []
        for idx in index:
            n, share, wait = idx.get(h, (0, None, None))
            cells.append(f"<td>{fmt_int(n)}</td><td>{esc(None if share is None else fmt_pct(share))}</td>")
            cells.append(f"<td>{esc(None if wait is None else fmt_f1(wait))}</td>")
        out.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


AREA_COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("requests", "requests", fmt_int),
    ("served", "served_rate", fmt_pct),
    ("wait mean (s)", "wait_s_mean", fmt_f1),
    ("wait p90 (s)", "wait_s_p90", fmt_f1),
    ("drivers", "drivers", fmt_int),
    ("utilization", "utilization", fmt_pct),
]


def areas_table(runs: list[Run]) -> str:
    """The ``areas`` rows of each run's summary (independent areas replayed apart), or "" without any."""
    out = []
    for r in runs:
        rows = r.summary.get("areas")
        if not isinstance(rows, list) or not rows:
            continue
        head = "".join(f"<th>{html.escape(name)}</th>" for name, _, _ in AREA_COLUMNS)
        out.append(f'<p class="note"><span class="dot" style="background:{r.color}"></span>{esc(r.label)}</p>')
        out.append(f"<table><thead><tr><th>area</th>{head}</tr></thead><tbody>")
        for row in rows:
            if not isinstance(row, dict):
                continue
            cells = []
            for _, key, fmt in AREA_COLUMNS:
                v = row.get(key)
                cells.append(f"<td>{html.escape('-' if not isinstance(v, (int, float)) else fmt(v))}</td>")
            out.append(f"<tr><th>{esc(row.get('area'))}</th>{''.join(cells)}</tr>")
        out.append("</tbody></table>")
    return "\n".join(out)
