"""Shared look of the report's figures: colours, matplotlib style, PNG embedding, legends, time axes."""

from __future__ import annotations

import base64
import io

import numpy as np
import polars as pl

from matcher.analysis.localtime import LocalTime

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


def figure(title: str, xlabel: str, ylabel: str, size=FIGSIZE):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def png(fig) -> str:
    """The figure as base64 PNG (for a ``data:`` URI)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def legend_below(fig, ax, styles: tuple[tuple[str, str], ...] = ()) -> None:
    """One legend under the axes (never over the data): runs in rows of at most 3, then a
    row of grey line-style keys."""
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


def no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def values(df: pl.DataFrame | None, col: str, where: pl.Expr | None = None) -> np.ndarray:
    """Finite float values of a column (after an optional filter); empty without the frame."""
    if df is None:
        return np.empty(0)
    if where is not None:
        df = df.filter(where)
    a = df[col].drop_nulls().cast(pl.Float64).to_numpy()
    return a[np.isfinite(a)]


def naive_utc(ts: pl.Series | pl.Expr, dtype: pl.DataType | None = None):
    """UTC timestamps as naive (UTC wall clock) milliseconds, for numpy and matplotlib."""
    dtype = dtype if dtype is not None else getattr(ts, "dtype", None)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return ts.cast(pl.Datetime("ms"))


def seconds_since(ts: pl.Series, origin) -> np.ndarray:
    """Seconds (float) from origin (a numpy datetime64[ms], UTC) for a Datetime series."""
    a = naive_utc(ts).to_numpy().astype("datetime64[ms]")
    return (a - origin).astype("timedelta64[ms]").astype(np.float64) / 1000.0


def time_axis(ax, tz: LocalTime, what: str = "time", show_offset: bool = True) -> None:
    """Date ticks in the report's local zone (matplotlib reads naive datetime64 as UTC), and the
    zone said in the axis label."""
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator(minticks=4, maxticks=9, tz=tz.zone)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz=tz.zone, show_offset=show_offset))
    ax.set_xlabel(tz.axis_label(what))


def window_s(span_s: float) -> float:
    """Rolling window for time plots: an hour, a sixth of the request span (>= 1 min) under 3 hours."""
    if span_s >= 3 * 3600:
        return 3600.0
    w = max(60.0, span_s / 6.0)
    return float(max(60.0, round(w / 60.0) * 60.0))


def window_text(w: float) -> str:
    return "hourly" if w == 3600 else f"{w / 60:g}-min"
