"""The per-shard load figure: pending, matched, solve time and border share per shard over time."""

from __future__ import annotations

import numpy as np
import polars as pl

from matcher.analysis.report.load import Frame, Run
from matcher.analysis.report.style import DPI, PALETTE, naive_utc, png, time_axis
from matcher.analysis.shardload import shard_load

PANELS = (
    ("pending", "pending requests", 1.0),
    ("matched", "matched per tick", 1.0),
    ("solve_ms", "solve time (ms)", 1.0),
    ("border_share", "border share (%)", 100.0),
)
MAX_BINS = 120


def _binned(df: pl.DataFrame) -> pl.DataFrame:
    """Means per shard over at most MAX_BINS time bins (a day of 2 s ticks is 43,200 rows)."""
    df = df.with_columns(naive_utc(pl.col("ts"), df.schema["ts"]).alias("ts"))
    t0, t1 = df["ts"].min(), df["ts"].max()
    span_ms = max(1, int((t1 - t0).total_seconds() * 1000))
    step = max(1, -(-span_ms // MAX_BINS))
    return (
        df.with_columns(((pl.col("ts") - t0).dt.total_milliseconds() // step).alias("b"))
        .group_by("shard", "b")
        .agg(pl.col(c).mean() for c, _, _ in PANELS)
        .with_columns((pl.lit(t0) + pl.duration(milliseconds=pl.col("b") * step + step // 2)).alias("t"))
        .sort("shard", "b")
    )


def shard_figure(run: Run, fr: Frame) -> tuple[str, str, str] | None:
    """(png, alt, caption) of one run's shard load; None when the run has no tick data."""
    from matplotlib.figure import Figure

    df, source = shard_load(run.folder)
    if df is None or df.height == 0:
        return None
    b = _binned(df)
    shards = sorted(b["shard"].unique().to_list(), key=lambda s: (len(s), s))
    fig = Figure(figsize=(7.6, 4.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (col, label, scale) in zip(axes, PANELS):
        for i, sh in enumerate(shards):
            d = b.filter(pl.col("shard") == sh)
            y = d[col].cast(pl.Float64).to_numpy() * scale
            ax.plot(d["t"].to_numpy(), y, color=PALETTE[i % len(PALETTE)], linewidth=1.2, label=f"shard {sh}")
        ax.set_title(label, fontsize=9.5)
        ax.set_ylim(bottom=0)
        time_axis(ax, fr.tz, "sim time", show_offset=False)
    for ax in axes[:2]:
        ax.set_xlabel("")
    handles, labels = axes[0].get_legend_handles_labels()
    if len(shards) > 1:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(shards), 6))
    fig.suptitle(f"Load per shard: {run.label}", fontweight="bold", fontsize=11)
    if source == "shards.parquet":
        caption = (
            f"Per shard from shards.parquet, means per time bin: pending requests, matches per tick, the shard's "
            f"solve time and its border share (border / pending). {len(shards)} shard(s)."
        )
    else:
        caption = (
            "From ticks.parquet: totals over all shards per tick (this run has no shards.parquet), means per time "
            "bin; border share is deferred / pending (border requests the coordinator solved)."
        )
    if not np.isfinite(b["border_share"].cast(pl.Float64).fill_null(np.nan).to_numpy()).any():
        caption += " No border share: no tick had pending requests."
    return png(fig), f"Shard load of {run.label}", caption
