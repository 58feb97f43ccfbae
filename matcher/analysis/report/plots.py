"""The report's plots over riders and time. Each returns a base64 PNG; the numbers come from
:mod:`matcher.analysis.metrics`, :mod:`matcher.analysis.supply` and :mod:`matcher.analysis.riders`.

Units, the same in every plot and table: rider times in seconds, tick times in milliseconds,
shares in percent; time axes in the report's local zone (said on the axis).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from matcher.analysis import metrics
from matcher.analysis.report.load import Frame, Run
from matcher.analysis.report.style import (
    DPI,
    FIGSIZE,
    OUTCOME_COLORS,
    figure,
    legend_below,
    naive_utc,
    no_data,
    png,
    seconds_since,
    time_axis,
    values,
    window_s,
    window_text,
)
from matcher.analysis.riders import cancel_by_eta, model_cancel_p
from matcher.analysis.supply import SupplyDemand


def wait_cdf(runs: list[Run]) -> str:
    fig, ax = figure("Rider wait: request to pickup (completed rides)", "wait (s)", "share of rides waiting at most x")
    drawn, right = False, 0.0
    for r in runs:
        w = values(r.requests, "wait_s")
        if w.size == 0:
            continue
        q = np.linspace(0.0, 1.0, min(w.size, 2000))
        x = np.quantile(w, q) if w.size > 2000 else np.sort(w)
        y = (np.arange(1, x.size + 1) / x.size) if w.size <= 2000 else q
        right = max(right, float(np.percentile(w, 99.5)))
        label = f"{r.label} (p50 {np.median(w):.0f} s, p90 {np.percentile(w, 90):.0f} s)"
        ax.step(np.concatenate([[0.0], x]), np.concatenate([[0.0], y]) * 100, where="post", color=r.color, label=label)
        drawn = True
    if not drawn:
        no_data(ax, "no completed ride")
        return png(fig)
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_ylim(0, 101)
    ax.set_xlim(0, right * 1.05 if right > 0 else None)
    ax.axhline(90, color="#bbbbbb", linewidth=0.8, linestyle=":")
    legend_below(fig, ax)
    return png(fig)


def eta_hist(runs: list[Run]) -> str:
    fig, ax = figure("Pickup ETA at the match that led to the pickup", "pickup ETA (s)", "rides")
    data = [(r, values(r.requests, "pickup_eta_s")) for r in runs]
    data = [(r, v) for r, v in data if v.size]
    if not data:
        no_data(ax, "no pickup")
        return png(fig)
    hi = max(float(np.percentile(v, 99.5)) for _, v in data)
    hi = hi if hi > 0 else 1.0
    bins = np.linspace(0.0, hi, 41)
    for r, v in data:
        label = f"{r.label} (mean {v.mean():.0f} s)"
        ax.hist(np.clip(v, 0, hi), bins=bins, histtype="step", linewidth=1.8, color=r.color, label=label)
    ax.set_xlim(0, hi)
    legend_below(fig, ax)  # below the axes: a legend inside would sit on the histogram's tail
    return png(fig)


def outcomes(runs: list[Run]) -> str:
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
                x, y = b.get_x() + b.get_width() / 2, b.get_y() + b.get_height() / 2
                ax.text(x, y, f"{s:.0f}%", ha="center", va="center", color="white", fontsize=8.5, fontweight="bold")
        left += share
    ax.set_xlim(0, 100)
    ax.xaxis.set_major_formatter(PercentFormatter())
    ax.grid(axis="y", visible=False)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncol=3)
    return png(fig)


def served_over_time(runs: list[Run], fr: Frame) -> str:
    w = window_s(fr.requests_s)
    fig, ax = figure(f"Share of requests served ({window_text(w)} rolling, by request time)", "", "served share")
    drawn = False
    for r in runs:
        if fr.origin is None or r.requests is None or r.requests.height == 0:
            continue
        t = seconds_since(r.requests["request_ts"], fr.origin)
        served = (r.requests["outcome"] == "completed").fill_null(False).to_numpy()
        end = max(float(t.max()), w)
        grid = np.linspace(min(w, end), end, 400)
        share = metrics.rolling_share(t, served, grid, w) * 100
        ax.plot(fr.to_datetime(grid), share, color=r.color, label=r.label)
        drawn = True
    if not drawn:
        no_data(ax)
        return png(fig)
    from matplotlib.ticker import PercentFormatter

    time_axis(ax, fr.tz, "request time")
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_ylim(0, 101)
    legend_below(fig, ax)
    return png(fig)


def tick_latency(runs: list[Run], fr: Frame) -> str:
    fig, ax = figure("Tick latency over sim time (p50 and p99 per time bin)", "", "wall time per tick (ms)")
    drawn = False
    for r in runs:
        tk = r.ticks
        if tk is None or tk.height == 0 or not {"ts", "wall_ms"} <= set(tk.columns):
            continue
        tk = tk.select(naive_utc(pl.col("ts"), tk.schema["ts"]), pl.col("wall_ms").cast(pl.Float64)).drop_nulls()
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
        extra = f" (p50 {s['p50']:.1f}, p99 {s['p99']:.1f} ms)" if s.get("p50") is not None and s.get("p99") else ""
        ax.plot(x, p50, color=r.color, label=f"{r.label}{extra}")
        ax.plot(x, p99, color=r.color, linestyle="--", linewidth=1.2, alpha=0.8)
        drawn = True
    if not drawn:
        no_data(ax, "no ticks.parquet")
        return png(fig)
    from matplotlib.ticker import LogFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    time_axis(ax, fr.tz, "sim time")
    legend_below(fig, ax, (("p50", "-"), ("p99", "--")))
    return png(fig)


def in_system(runs: list[Run], fr: Frame) -> str:
    w = window_s(fr.requests_s)
    title = f"Requests in system: measured vs Little's law ({window_text(w)} window)"
    fig, ax = figure(title, "", "open requests")
    drawn = False
    for r in runs:
        if fr.origin is None or r.requests is None or r.requests.height == 0:
            continue
        ends = r.requests.filter(pl.col("end_ts").is_not_null())
        grid = fr.grid()
        measured = metrics.in_system(
            seconds_since(r.requests["request_ts"], fr.origin), seconds_since(ends["end_ts"], fr.origin), grid
        )
        soj = ends["time_in_system_s"].cast(pl.Float64).to_numpy()
        little = metrics.littles_law(seconds_since(ends["request_ts"], fr.origin), soj, grid, w, fr.total_s)
        x = fr.to_datetime(grid)
        ax.plot(x, measured, color=r.color, label=r.label, drawstyle="steps-post", linewidth=1.4)
        ax.plot(x, little, color=r.color, linestyle="--", linewidth=1.4, alpha=0.9)
        drawn = True
    return _time_plot(fig, ax, fr, drawn, (("measured", "-"), ("λ·W (Little)", "--")))


def supply_demand(runs: list[Run], sd: dict[str, SupplyDemand], fr: Frame) -> str:
    fig, ax = figure("Supply and demand: available drivers and waiting riders", "", "count")
    drawn = False
    for r in runs:
        s = sd.get(r.label)
        if s is None or fr.origin is None:
            continue
        x = fr.to_datetime(s.grid_s)
        ax.plot(x, s.available, color=r.color, label=r.label, drawstyle="steps-post", linewidth=1.4)
        ax.plot(x, s.waiting, color=r.color, linestyle="--", drawstyle="steps-post", linewidth=1.4, alpha=0.9)
        drawn = True
    return _time_plot(fig, ax, fr, drawn, (("available drivers", "-"), ("riders waiting for a match", "--")))


def _time_plot(fig, ax, fr: Frame, drawn: bool, styles) -> str:
    """A counts-over-time plot finished: its time axis (local time), y from 0, the line styles' legend."""
    if not drawn:
        no_data(ax)
        return png(fig)
    time_axis(ax, fr.tz, "sim time")
    ax.set_ylim(bottom=0)
    legend_below(fig, ax, styles)
    return png(fig)


def cancels_by_eta(runs: list[Run], offers: dict[str, pl.DataFrame]) -> str:
    fig, ax = figure("Rider cancellations against the offered pickup ETA", "pickup ETA of the offer (s)", "")
    ax.set_ylabel("offers ending in a cancel")
    drawn, right = False, 0.0
    model_drawn: set[tuple[float, float]] = set()
    for r in runs:
        o = offers.get(r.label)
        if o is None:
            continue
        b = cancel_by_eta(o)
        if b.height == 0:
            continue
        mid = ((b["eta_lo_s"] + b["eta_hi_s"]) / 2).to_numpy()
        share = b["share"].to_numpy() * 100
        lo, hi = b["lo"].to_numpy() * 100, b["hi"].to_numpy() * 100
        ax.fill_between(mid, lo, hi, color=r.color, alpha=0.15, linewidth=0)
        ax.plot(
            mid, share, color=r.color, marker="o", markersize=3, label=f"{r.label} ({int(b['offers'].sum()):,} offers)"
        )
        right = max(right, float(b["eta_hi_s"].max()))
        sim = (r.meta.get("config") or {}).get("sim") or {}
        base, per_min = sim.get("cancel_base"), sim.get("cancel_per_min")
        if isinstance(base, (int, float)) and isinstance(per_min, (int, float)):
            model_drawn.add((float(base), float(per_min)))
        drawn = True
    if not drawn:
        no_data(ax, "too few ended offers")
        return png(fig)
    xs = np.linspace(0, right, 200)
    for base, per_min in sorted(model_drawn):
        ax.plot(xs, model_cancel_p(xs, base, per_min) * 100, color="#777777", linestyle="--", linewidth=1.2)
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set_xlim(0, right)
    ax.set_ylim(bottom=0)
    styles = (("rider model: min(50%, base + per-min × ETA)", "--"),) if model_drawn else ()
    legend_below(fig, ax, styles)
    return png(fig)
