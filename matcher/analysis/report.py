"""`matcher report DIR`: a self-contained HTML report of a run folder or a compare folder.

One file, no external resources: inline CSS, matplotlib figures (Agg) embedded as
base64 PNG. Shows the run parameters, the summaries side by side (best value per
row highlighted) and plots: rider wait CDF, pickup ETA histogram, request outcomes,
share served over time, tick latency over time, and requests in system (measured
vs Little's law).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from matcher.analysis.summary_text import _f0, _f1, _get, _int, _pct, _speedup, run_label
from matcher.errors import MatcherError
from matcher.io import atomic

# Okabe-Ito: distinguishable for colour-blind readers, one colour per run everywhere.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
OUTCOME_COLORS = {"completed": "#009E73", "cancelled": "#E69F00", "expired": "#D55E00"}

STYLE = {
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9.5,
    "axes.labelcolor": "#333333",
    "axes.edgecolor": "#999999",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8,
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "lines.linewidth": 1.8,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
FIGSIZE = (7.6, 3.6)
DPI = 110


# --- data --------------------------------------------------------------------------
@dataclass
class Run:
    label: str
    folder: Path
    summary: dict
    color: str
    requests: pl.DataFrame | None = None  # columns of matcher.analysis.metrics.request_table
    ticks: pl.DataFrame | None = None


def _load(label: str, folder: Path, summary: dict, color: str) -> Run:
    from matcher.analysis.metrics import read_ticks, run_request_table

    run = Run(label, folder, summary, color)
    try:
        run.requests = run_request_table(
            folder, ["request_ts", "end_ts", "outcome", "wait_s", "pickup_eta_s", "time_in_system_s"]
        )
    except (MatcherError, OSError, pl.exceptions.PolarsError):
        run.requests = None  # the table still shows; plots skip this run
    try:
        run.ticks = read_ticks(folder)
    except (OSError, pl.exceptions.PolarsError):
        run.ticks = None
    return run


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise MatcherError(f"{path}: cannot read ({e})") from None


def _runs_of(root: Path) -> tuple[str, dict, list[Run]]:
    if (root / "compare.json").exists():
        cmp = _read_json(root / "compare.json")
        labels = cmp.get("policies") or list(cmp.get("runs", {}))
        runs = []
        for i, label in enumerate(labels):
            summary = (cmp.get("runs") or {}).get(label)
            if summary is None and (root / label / "summary.json").exists():
                summary = _read_json(root / label / "summary.json")
            summary = dict(summary or {})
            summary.setdefault("label", label)
            runs.append(_load(label, root / label, summary, PALETTE[i % len(PALETTE)]))
        return "Policy comparison", {"trace": cmp.get("trace")}, runs
    if (root / "summary.json").exists():
        summary = _read_json(root / "summary.json")
        meta = _read_json(root / "run.json") if (root / "run.json").exists() else {}
        label = run_label({**meta, **summary})
        return "Replay", {"trace": meta.get("trace")}, [_load(label, root, summary, PALETTE[0])]
    raise MatcherError(f"{root}: not a run folder (summary.json) nor a compare folder (compare.json)")


# --- figures -------------------------------------------------------------------------
def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _legend_below(fig, ax, styles: tuple[tuple[str, str], ...] = ()) -> None:
    """One legend under the axes: runs in rows of at most 3, then a row of grey line-style keys."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    ncol = min(3, max(len(handles), len(styles)))
    rows = [list(zip(handles[i : i + ncol], labels[i : i + ncol])) for i in range(0, len(handles), ncol)]
    if styles:
        rows.append([(Line2D([], [], color="#777777", linestyle=ls, linewidth=1.4), text) for text, ls in styles])
    blank = (Line2D([], [], alpha=0.0), "")
    rows = [row + [blank] * (ncol - len(row)) for row in rows]
    ordered = [rows[r][c] for c in range(ncol) for r in range(len(rows))]  # legend fills column by column
    fig.legend([h for h, _ in ordered], [t for _, t in ordered], loc="outside lower center", ncol=ncol)


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def _values(df: pl.DataFrame | None, col: str, where: pl.Expr | None = None) -> np.ndarray:
    if df is None:
        return np.empty(0)
    if where is not None:
        df = df.filter(where)
    a = df[col].drop_nulls().cast(pl.Float64).to_numpy()
    return a[np.isfinite(a)]


def _naive(ts: pl.Series | pl.Expr, dtype: pl.DataType | None = None):
    """UTC timestamps as naive (UTC wall clock) milliseconds, for numpy and matplotlib."""
    dtype = dtype if dtype is not None else getattr(ts, "dtype", None)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return ts.cast(pl.Datetime("ms"))


def _seconds_since(ts: pl.Series, origin) -> np.ndarray:
    """Seconds (float) from origin (a numpy datetime64[ms]) for a Datetime series."""
    a = _naive(ts).to_numpy().astype("datetime64[ms]")
    return (a - origin).astype("timedelta64[ms]").astype(np.float64) / 1000.0


def _time_axis(ax) -> None:
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, show_offset=True))


def _window_s(span_s: float) -> float:
    """Rolling window for time plots: an hour, a sixth of the request span (>= 1 min) under 3 hours."""
    if span_s >= 3 * 3600:
        return 3600.0
    w = max(60.0, span_s / 6.0)
    return float(max(60.0, round(w / 60.0) * 60.0))


def _window_text(w: float) -> str:
    return "hourly" if w == 3600 else f"{w / 60:g}-min"


def _fig_wait_cdf(runs: list[Run]) -> str:
    fig, ax = _figure(
        "Rider wait: request to pickup (completed rides)", "wait (min)", "share of rides waiting at most x"
    )
    drawn, right = False, 0.0
    for r in runs:
        w = _values(r.requests, "wait_s") / 60.0
        if w.size == 0:
            continue
        q = np.linspace(0.0, 1.0, min(w.size, 2000))
        x = np.quantile(w, q) if w.size > 2000 else np.sort(w)
        y = (np.arange(1, x.size + 1) / x.size) if w.size <= 2000 else q
        p90 = np.percentile(w, 90)
        right = max(right, float(np.percentile(w, 99.5)))
        ax.step(
            np.concatenate([[0.0], x]),
            np.concatenate([[0.0], y]) * 100,
            where="post",
            color=r.color,
            label=f"{r.label} (p50 {np.median(w):.1f}, p90 {p90:.1f} min)",
        )
        drawn = True
    if not drawn:
        _no_data(ax, "no completed ride")
    else:
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter())
        ax.set_ylim(0, 101)
        ax.set_xlim(0, right * 1.05 if right > 0 else None)
        ax.axhline(90, color="#bbbbbb", linewidth=0.8, linestyle=":")
        ax.legend(loc="lower right")
    return _png(fig)


def _fig_eta_hist(runs: list[Run]) -> str:
    fig, ax = _figure("Pickup ETA at the match that led to the pickup", "pickup ETA (min)", "rides")
    data = [(r, _values(r.requests, "pickup_eta_s") / 60.0) for r in runs]
    data = [(r, v) for r, v in data if v.size]
    if not data:
        _no_data(ax, "no pickup")
        return _png(fig)
    hi = max(float(np.percentile(v, 99.5)) for _, v in data)
    hi = hi if hi > 0 else 1.0
    bins = np.linspace(0.0, hi, 41)
    for r, v in data:
        ax.hist(
            np.clip(v, 0, hi),
            bins=bins,
            histtype="step",
            linewidth=1.8,
            color=r.color,
            label=f"{r.label} (mean {v.mean():.1f} min)",
        )
    ax.set_xlim(0, hi)
    ax.legend(loc="upper right")
    return _png(fig)


def _fig_outcomes(runs: list[Run]) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(FIGSIZE[0], max(1.6, 0.9 + 0.45 * len(runs))), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("What happened to the requests (share of requests)")
    labels = [r.label for r in runs][::-1]
    left = np.zeros(len(runs))
    for key in ("completed", "cancelled", "expired"):
        share = np.array(
            [
                (r.summary.get(key) or 0) / r.summary["requests"] * 100 if r.summary.get("requests") else 0.0
                for r in runs
            ][::-1]
        )
        bars = ax.barh(labels, share, left=left, color=OUTCOME_COLORS[key], label=key, height=0.6)
        for b, s in zip(bars, share):
            if s >= 6:
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    b.get_y() + b.get_height() / 2,
                    f"{s:.0f}%",
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=8.5,
                    fontweight="bold",
                )
        left += share
    ax.set_xlim(0, 100)
    ax.xaxis.set_major_formatter(PercentFormatter())
    ax.grid(axis="y", visible=False)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncol=3)
    return _png(fig)


@dataclass
class Span:
    origin: Any  # numpy datetime64[ms] (UTC) of the first request, None without requests
    requests_s: float = 1.0  # first to last request
    total_s: float = 1.0  # first request to the last end


def _span(runs: list[Run]) -> Span:
    starts, last_req, ends = [], [], []
    for r in runs:
        if r.requests is not None and r.requests.height:
            starts.append(r.requests["request_ts"].min())
            last_req.append(r.requests["request_ts"].max())
            ends.append(r.requests["end_ts"].max() or last_req[-1])
    if not starts:
        return Span(None)
    t0 = min(starts)
    return Span(
        np.datetime64(t0.replace(tzinfo=None), "ms"),
        max((max(last_req) - t0).total_seconds(), 1.0),
        max((max(ends + last_req) - t0).total_seconds(), 1.0),
    )


def _fig_served_over_time(runs: list[Run], span: Span) -> str:
    origin, w = span.origin, _window_s(span.requests_s)
    fig, ax = _figure(
        f"Share of requests served ({_window_text(w)} rolling, by request time)",
        "request time (UTC)",
        "served (completed) share",
    )
    drawn = False
    for r in runs:
        if origin is None or r.requests is None or r.requests.height == 0:
            continue
        t = _seconds_since(r.requests["request_ts"], origin)
        served = (r.requests["outcome"] == "completed").fill_null(False).to_numpy()
        order = np.argsort(t, kind="stable")
        t, served = t[order], served[order]
        cs = np.concatenate([[0], np.cumsum(served)])
        end = max(t[-1], w)
        grid = np.linspace(min(w, end), end, 400)
        hi = np.searchsorted(t, grid, side="right")
        lo = np.searchsorted(t, grid - w, side="right")
        n = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(n > 0, (cs[hi] - cs[lo]) / np.maximum(n, 1), np.nan) * 100
        x = origin + (grid * 1000).astype("timedelta64[ms]")
        ax.plot(x, share, color=r.color, label=r.label)
        drawn = True
    if not drawn:
        _no_data(ax)
    else:
        from matplotlib.ticker import PercentFormatter

        _time_axis(ax)
        ax.yaxis.set_major_formatter(PercentFormatter())
        ax.set_ylim(0, 101)
        _legend_below(fig, ax)
    return _png(fig)


def _fig_ticks(runs: list[Run]) -> str:
    fig, ax = _figure(
        "Tick latency over sim time (p50 and p99 per time bin)", "sim time (UTC)", "wall time per tick (ms)"
    )
    drawn = False
    for r in runs:
        tk = r.ticks
        if tk is None or tk.height == 0 or not {"ts", "wall_ms"} <= set(tk.columns):
            continue
        tk = tk.select(_naive(pl.col("ts"), tk.schema["ts"]), pl.col("wall_ms").cast(pl.Float64)).drop_nulls()
        if tk.height == 0:
            continue
        nbins = int(max(1, min(120, tk.height // 5)))
        t0 = tk["ts"].min()
        span_ms = max(1, int((tk["ts"].max() - t0).total_seconds() * 1000))
        step = max(1, -(-span_ms // nbins))
        binned = (
            tk.with_columns(((pl.col("ts") - t0).dt.total_milliseconds() // step).alias("b"))
            .group_by("b")
            .agg(
                pl.col("wall_ms").quantile(0.5, "linear").alias("p50"),
                pl.col("wall_ms").quantile(0.99, "linear").alias("p99"),
            )
            .sort("b")
        )
        x = np.datetime64(t0, "ms") + (binned["b"].to_numpy() * step + step // 2).astype("timedelta64[ms]")
        p50 = np.maximum(binned["p50"].to_numpy(), 1e-3)
        p99 = np.maximum(binned["p99"].to_numpy(), 1e-3)
        s = r.summary.get("tick_ms") or {}
        extra = (
            f" (p50 {s['p50']:.1f}, p99 {s['p99']:.1f} ms)"
            if s.get("p50") is not None and s.get("p99") is not None
            else ""
        )
        ax.plot(x, p50, color=r.color, label=f"{r.label}{extra}")
        ax.plot(x, p99, color=r.color, linestyle="--", linewidth=1.2, alpha=0.8)
        drawn = True
    if not drawn:
        _no_data(ax, "no ticks.parquet")
    else:
        from matplotlib.ticker import LogFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
        _time_axis(ax)
        _legend_below(fig, ax, (("p50", "-"), ("p99", "--")))
    return _png(fig)


def _fig_in_system(runs: list[Run], span: Span) -> str:
    origin, w = span.origin, _window_s(span.requests_s)
    fig, ax = _figure(
        f"Requests in system: measured vs Little's law ({_window_text(w)} window)", "sim time (UTC)", "open requests"
    )
    drawn = False
    for r in runs:
        if origin is None or r.requests is None or r.requests.height == 0:
            continue
        t_in = np.sort(_seconds_since(r.requests["request_ts"], origin))
        ends = r.requests.filter(pl.col("end_ts").is_not_null())
        t_out = np.sort(_seconds_since(ends["end_ts"], origin))
        grid = np.linspace(0.0, span.total_s, 600)
        measured = np.searchsorted(t_in, grid, side="right") - np.searchsorted(t_out, grid, side="right")
        # Little: L = arrival rate x mean time in system, over a centred window, by arrival time
        arr = _seconds_since(ends["request_ts"], origin)
        soj = ends["time_in_system_s"].cast(pl.Float64).to_numpy()
        order = np.argsort(arr, kind="stable")
        arr, soj = arr[order], soj[order]
        cs = np.concatenate([[0.0], np.cumsum(soj)])
        lo = np.searchsorted(arr, grid - w / 2, side="left")
        hi = np.searchsorted(arr, grid + w / 2, side="left")
        little = (cs[hi] - cs[lo]) / w  # = (n / w) * (sum / n)
        inside = (grid - w / 2 >= 0) & (grid + w / 2 <= span.total_s)
        little = np.where(inside, little, np.nan)
        x = origin + (grid * 1000).astype("timedelta64[ms]")
        ax.plot(x, measured, color=r.color, label=r.label, drawstyle="steps-post", linewidth=1.4)
        ax.plot(x, little, color=r.color, linestyle="--", linewidth=1.4, alpha=0.9)
        drawn = True
    if not drawn:
        _no_data(ax)
    else:
        _time_axis(ax)
        ax.set_ylim(bottom=0)
        _legend_below(fig, ax, (("measured", "-"), ("λ·W (Little)", "--")))
    return _png(fig)


# --- table -----------------------------------------------------------------------------
# (row, getter, formatter, +1 higher is better / -1 lower is better / 0 neutral)
TABLE_ROWS: list[tuple[str, Callable[[dict], Any], Callable[[Any], str], int]] = [
    ("requests", lambda s: s.get("requests"), _int, 0),
    ("completed", lambda s: s.get("completed"), _int, +1),
    ("served rate", lambda s: s.get("served_rate"), _pct, +1),
    ("cancelled", lambda s: s.get("cancelled"), _int, -1),
    ("expired", lambda s: s.get("expired"), _int, -1),
    ("wait mean (s)", lambda s: _get(s, "wait_s.mean"), _f1, -1),
    ("wait p50 (s)", lambda s: _get(s, "wait_s.p50"), _f1, -1),
    ("wait p90 (s)", lambda s: _get(s, "wait_s.p90"), _f1, -1),
    ("wait p95 (s)", lambda s: _get(s, "wait_s.p95"), _f1, -1),
    ("match delay mean (s)", lambda s: _get(s, "match_delay_s.mean"), _f1, -1),
    ("match delay p90 (s)", lambda s: _get(s, "match_delay_s.p90"), _f1, -1),
    ("pickup ETA mean (s)", lambda s: _get(s, "pickup_eta_s.mean"), _f1, -1),
    ("pickup ETA p90 (s)", lambda s: _get(s, "pickup_eta_s.p90"), _f1, -1),
    ("pickup distance mean (m)", lambda s: _get(s, "pickup_distance_m.mean"), _f0, -1),
    ("declines", lambda s: s.get("declines"), _int, -1),
    ("utilization", lambda s: s.get("utilization"), _pct, +1),
    ("tick p50 (ms)", lambda s: _get(s, "tick_ms.p50"), _f1, -1),
    ("tick p99 (ms)", lambda s: _get(s, "tick_ms.p99"), _f1, -1),
    ("tick max (ms)", lambda s: _get(s, "tick_ms.max"), _f1, -1),
    ("border share", lambda s: s.get("border_share"), _pct, 0),
    ("fallback ticks", lambda s: s.get("fallback_ticks"), _int, -1),
    ("speedup (sim/wall)", _speedup, lambda v: f"{v:,.1f}x", +1),
]

PARAM_ROWS: list[tuple[str, Callable[[dict], Any]]] = [
    ("policy", lambda s: s.get("policy")),
    ("window (s)", lambda s: None if s.get("window_s") is None else f"{s['window_s']:g}"),
    ("shards", lambda s: s.get("shards")),
    ("seed", lambda s: s.get("seed")),
    ("drivers", lambda s: None if s.get("drivers") is None else _int(s["drivers"])),
    ("quarantined rows", lambda s: None if s.get("quarantined") is None else _int(s["quarantined"])),
    ("simulated time", lambda s: None if s.get("sim_seconds") is None else f"{s['sim_seconds'] / 3600:.2f} h"),
    ("wall time", lambda s: None if s.get("wall_seconds") is None else f"{s['wall_seconds']:.1f} s"),
]


def _esc(v: Any) -> str:
    return html.escape("-" if v is None else str(v))


def _table(runs: list[Run], rows, *, highlight: bool) -> str:
    head = "".join(f'<th><span class="dot" style="background:{r.color}"></span>{_esc(r.label)}</th>' for r in runs)
    out = [f"<table><thead><tr><th></th>{head}</tr></thead><tbody>"]
    for row in rows:
        name, get = row[0], row[1]
        vals = []
        for r in runs:
            try:
                vals.append(get(r.summary))
            except (TypeError, KeyError, ValueError, ZeroDivisionError):
                vals.append(None)
        texts = ["-" if v is None else (row[2](v) if len(row) > 2 else str(v)) for v in vals]
        best = set()
        if highlight and len(runs) > 1 and row[3] != 0:
            nums = [(v, t) for v, t in zip(vals, texts) if isinstance(v, (int, float))]
            if len(nums) > 1 and len({t for _, t in nums}) > 1:  # differences a reader can see
                target = (max if row[3] > 0 else min)(nums, key=lambda vt: vt[0])[1]
                best = {i for i, t in enumerate(texts) if t == target}
        cells = []
        for i, text in enumerate(texts):
            cls = ' class="best"' if i in best else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        out.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #222;
       max-width: 1180px; margin: 24px auto; padding: 0 20px; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin: 0 0 16px; }
table { border-collapse: collapse; background: white; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 14px; border-bottom: 1px solid #eee; }
thead th { border-bottom: 2px solid #ccc; text-align: right; white-space: nowrap; }
tbody th { text-align: left; font-weight: normal; color: #444; white-space: nowrap; }
td { text-align: right; }
td.best { background: #e3f4ea; font-weight: 600; color: #0b5d31; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 6px; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 14px; }
figure { margin: 0; background: white; border: 1px solid #e5e5e5; border-radius: 6px; padding: 8px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 12.5px; margin-top: 4px; }
.note { color: #666; font-size: 12.5px; }
code { background: #f0f0f0; padding: 0 3px; border-radius: 3px; }
"""


def render(root: Path) -> str:
    """The report HTML of a run or compare folder."""
    import matplotlib

    kind, info, runs = _runs_of(root)
    span = _span(runs)
    with matplotlib.rc_context(STYLE):
        figs = [
            (
                _fig_wait_cdf(runs),
                "Rider wait CDF",
                "Share of completed rides picked up within x minutes of the request (higher and further left is better).",
            ),
            (
                _fig_eta_hist(runs),
                "Pickup ETA histogram",
                "Estimated driver-to-pickup time on the match that led to each pickup (ETAs beyond the axis "
                "are counted in the last bin).",
            ),
            (
                _fig_outcomes(runs),
                "Request outcomes",
                "Each request ends exactly once: dropoff (completed), rider cancel, or expiry unmatched.",
            ),
            (
                _fig_served_over_time(runs, span),
                "Served share over time",
                "Completed share of the requests made in the trailing window, by request time: where supply ran short.",
            ),
            (
                _fig_ticks(runs),
                "Tick latency",
                "Wall time of one matching tick, all shards end to end, binned over simulated time (log scale).",
            ),
            (
                _fig_in_system(runs, span),
                "Requests in system",
                "Requests between their request and their end (solid). Dashed: Little's law, arrival rate × mean time "
                "in system of the requests arriving in a centred window; the two agree near steady state and part "
                "during warm-up and drain.",
            ),
        ]
    trace = info.get("trace")
    labels = ", ".join(r.label for r in runs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>matcher report: {html.escape(root.name or str(root))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(kind)}: {html.escape(root.name or str(root))}</h1>",
        f'<p class="sub">trace <code>{_esc(trace)}</code> · runs: {html.escape(labels)}</p>',
        "<h2>Run parameters</h2>",
        _table(runs, PARAM_ROWS, highlight=False),
        "<h2>Summary</h2>",
        _table(runs, TABLE_ROWS, highlight=True),
        '<p class="note">Best value per row highlighted. Definitions: <code>matcher/metrics.py</code>; '
        "every figure is recomputable from <code>events/</code>.</p>",
        "<h2>Plots</h2>",
        '<div class="figs">',
    ]
    for png, alt, caption in figs:
        parts.append(
            f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts += ["</div>", "</body></html>", ""]
    return "\n".join(parts)


def build_report(dir: str | os.PathLike) -> str:
    """(Re)build DIR/report.html from a compare folder (compare.json) or a run folder (summary.json);
    returns its path. Written atomically (temp file + rename)."""
    root = Path(dir)
    if not root.is_dir():
        raise MatcherError(f"{root}: no such folder")
    text = render(root)
    path = root / "report.html"
    atomic.write_text(path, text)
    return os.fspath(path)
