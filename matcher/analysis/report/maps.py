"""Maps of geohash cells on a plain lat/lng projection (no tiles: the report works offline).

The x axis is longitude and the y axis latitude, with the aspect set to 1 / cos(latitude)
at the map's centre, so a kilometre is as long east-west as north-south there. A view is
widened along its short side to at most 3:1 (points along a line, or one point at a pole,
still make a map that can be drawn). Each map says its geohash precision and cell size;
each has a colour scale with its legend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC

import numpy as np
import polars as pl

from matcher.analysis import cells as cellmod
from matcher.analysis.report.load import Frame, Run
from matcher.analysis.report.style import DPI, no_data, png
from matcher.analysis.supply import SupplyDemand

TOO_FEW = "#e8e8e8"
MAX_COLS = 3
# (column of cells.cell_stats, title, colour-bar label, colour map, scale factor)
METRICS = (
    ("wait_mean_s", "Mean rider wait by area", "mean wait of completed rides (s)", "viridis", 1.0),
    ("expired_share", "Expired requests by area", "share of requests that expired (%)", "magma", 100.0),
    ("eta_mean_s", "Pickup ETA by area", "mean pickup ETA of picked-up rides (s)", "cividis", 1.0),
)
SD_FLOOR = 0.05  # cells where both time-averages are below this are left blank
SD_CLIP = 3.0  # log2 ratio shown within [-3, 3]: 1/8 to 8 drivers per waiting rider


MAX_RATIO = 3.0  # a view is at most 3 times as tall as wide, or as wide as tall
MIN_COS = 0.05  # the east-west scale near a pole, where cos(latitude) goes to 0


@dataclass(frozen=True)
class View:
    """What a map shows: its limits, its aspect (1 / cos of the middle latitude) and its
    height over its width in kilometres (within [1 / MAX_RATIO, MAX_RATIO])."""

    lat0: float
    lat1: float
    lng0: float
    lng1: float
    aspect: float
    ratio: float

    def apply(self, ax, labelsize: float) -> None:
        ax.set_xlim(self.lng0, self.lng1)
        ax.set_ylim(self.lat0, self.lat1)
        ax.set_aspect(self.aspect)
        ax.grid(False)
        ax.tick_params(labelsize=labelsize)


def view(box) -> View:
    """The padded ``box``, widened along its short side so that the map is never a sliver:
    points spread along a line (or a stray point at a pole) still give axes that can be drawn."""
    lat0, lat1, lng0, lng1 = _padded(box)
    lat0, lat1 = max(lat0, -90.0), min(lat1, 90.0)
    k = max(math.cos(math.radians((lat0 + lat1) / 2)), MIN_COS)
    h, w = lat1 - lat0, (lng1 - lng0) * k
    if h > w * MAX_RATIO:
        grow = (h / MAX_RATIO - w) / k / 2
        lng0, lng1, w = lng0 - grow, lng1 + grow, h / MAX_RATIO
    elif w > h * MAX_RATIO:
        grow = (w / MAX_RATIO - h) / 2
        lat0, lat1, h = lat0 - grow, lat1 + grow, w / MAX_RATIO
    return View(lat0, lat1, lng0, lng1, 1.0 / k, h / w)


def _panels(n: int, v: View, width: float = 7.6, extra_h: float = 0.9):
    from matplotlib.figure import Figure

    ncols = min(n, MAX_COLS)
    nrows = math.ceil(n / ncols)
    pw = (width - 0.9) / ncols
    ph = float(np.clip(pw * v.ratio, 1.4, 5.5))
    fig = Figure(figsize=(width, nrows * (ph + 0.35) + extra_h), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    for ax in axes[:n]:
        v.apply(ax, 7.5)
    return fig, list(axes[:n])


def _polys(names: np.ndarray) -> list[np.ndarray]:
    la0, la1, ln0, ln1 = cellmod.bounds(names)
    return [np.array([[a, c], [b, c], [b, d], [a, d]]) for a, b, c, d in zip(ln0, ln1, la0, la1)]


def _padded(box):
    lat0, lat1, lng0, lng1 = box
    pad_lat = (lat1 - lat0) * 0.04 + 1e-3
    pad_lng = (lng1 - lng0) * 0.04 + 1e-3
    return lat0 - pad_lat, lat1 + pad_lat, lng0 - pad_lng, lng1 + pad_lng


def metric_maps(runs: list[Run], stats: dict[str, pl.DataFrame], box, precision: int) -> list[tuple[str, str, str]]:
    """(png, alt, caption) per map metric: one panel per run, one colour scale across runs."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    out = []
    size = cellmod.cell_size_text(precision, (box[0] + box[1]) / 2) if box else ""
    for col, title, cbar, cmap, scale in METRICS:
        shown = [r for r in runs if r.label in stats]
        if box is None or not shown:
            from matcher.analysis.report.style import figure

            fig, ax = figure(title, "", "")
            no_data(ax, "no request with a valid pickup point")
            out.append((png(fig), title, "No map: no request has a valid pickup point."))
            continue
        vals = [
            stats[r.label].filter(pl.col("requests") >= cellmod.MIN_CELL_REQUESTS)[col].drop_nulls().to_numpy() * scale
            for r in shown
        ]
        allv = np.concatenate(vals) if vals else np.empty(0)
        lo, hi = (float(np.percentile(allv, 2)), float(np.percentile(allv, 98))) if allv.size else (0.0, 1.0)
        norm = Normalize(lo, hi if hi > lo else lo + 1)
        fig, axes = _panels(len(shown), view(box))
        fig.suptitle(f"{title} (geohash precision {precision}, cells about {size})", fontweight="bold", fontsize=11)
        for ax, r in zip(axes, shown):
            st = stats[r.label]
            enough = st.filter((pl.col("requests") >= cellmod.MIN_CELL_REQUESTS) & pl.col(col).is_not_null())
            few = st.filter(pl.col("requests") < cellmod.MIN_CELL_REQUESTS)
            if few.height:
                ax.add_collection(PolyCollection(_polys(few["cell"].to_numpy()), facecolors=TOO_FEW, edgecolors="none"))
            if enough.height:
                pc = PolyCollection(_polys(enough["cell"].to_numpy()), cmap=cmap, norm=norm, edgecolors="white")
                pc.set_linewidth(0.2)
                pc.set_array(enough[col].to_numpy() * scale)
                ax.add_collection(pc)
            ax.set_title(r.label, fontsize=9.5, color=r.color)
        sm = ScalarMappable(norm=norm, cmap=cmap)
        cb = fig.colorbar(sm, ax=axes, location="bottom", shrink=0.6, aspect=40, pad=0.02, extend="both")
        cb.set_label(cbar)
        from matplotlib.patches import Patch

        few_key = Patch(
            facecolor=TOO_FEW, edgecolor="#bbbbbb", label=f"fewer than {cellmod.MIN_CELL_REQUESTS} requests"
        )
        fig.legend(handles=[few_key], loc="outside lower right", fontsize=8)
        caption = (
            f"{title} per geohash cell of the pickup point (precision {precision}, about {size}); x: longitude, "
            f"y: latitude. Grey: fewer than {cellmod.MIN_CELL_REQUESTS} requests (too few for a mean). One colour "
            "scale across runs (2nd to 98th percentile of the cells; beyond it the ends of the scale). The view holds "
            "the central 98% of pickups."
        )
        out.append((png(fig), title, caption))
    return out


def supply_demand_maps(runs: list[Run], sd: dict[str, SupplyDemand], box, fr: Frame) -> tuple[str, str, str]:
    """Available drivers per waiting rider by cell: one row of panels per run, one column per period."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    title = "Supply against demand by area"
    shown = [r for r in runs if r.label in sd]
    if box is None or not shown or fr.origin is None:
        from matcher.analysis.report.style import figure

        fig, ax = figure(title, "", "")
        no_data(ax)
        return png(fig), title, "No map: no request with a valid pickup point."
    first = sd[shown[0].label]
    periods, precision = first.periods, first.precision
    size = cellmod.cell_size_text(precision, (box[0] + box[1]) / 2)
    n = len(periods)
    from matplotlib.figure import Figure

    v = view(box)
    pw = 7.0 / n
    ph = float(np.clip(pw * v.ratio, 1.2, 4.0))
    fig = Figure(figsize=(7.6, len(shown) * (ph + 0.45) + 1.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(shown), n, squeeze=False)
    norm = Normalize(-SD_CLIP, SD_CLIP)
    tz = fr.tz.zone
    for i, r in enumerate(shown):
        s = sd[r.label]
        for p, ax in enumerate(axes[i]):
            v.apply(ax, 6.5)
            c = s.cells.filter(
                (pl.col("period") == p) & ((pl.col("waiting") >= SD_FLOOR) | (pl.col("available") >= SD_FLOOR))
            )
            if c.height:
                ratio_v = np.log2((c["available"].to_numpy() + 0.05) / (c["waiting"].to_numpy() + 0.05))
                pc = PolyCollection(_polys(c["cell"].to_numpy()), cmap="RdBu", norm=norm, edgecolors="white")
                pc.set_linewidth(0.2)
                pc.set_array(np.clip(ratio_v, -SD_CLIP, SD_CLIP))
                ax.add_collection(pc)
            p0, p1 = s.periods[p]
            # to the minute (periods are a quarter of the span, not whole minutes)
            a = fr.to_datetime([p0 + 30, min(p1, fr.requests_s) + 30]).astype("datetime64[m]").astype(object)
            t0, t1 = (x.replace(tzinfo=UTC).astimezone(tz) for x in a)
            ax.set_title(f"{t0:%H:%M}–{t1:%H:%M}" + (f"\n{r.label}" if p == 0 else ""), fontsize=8.5)
            if p > 0:
                ax.set_yticklabels([])
    sm = ScalarMappable(norm=norm, cmap="RdBu")
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), location="bottom", shrink=0.7, aspect=40, pad=0.02)
    ticks = np.arange(-SD_CLIP, SD_CLIP + 1)
    cb.set_ticks(ticks, labels=[f"{2**t:g}" if t >= 0 else f"1/{2**-t:g}" for t in ticks])
    cb.set_label("available drivers per waiting rider (red: riders wait for drivers; blue: drivers idle)")
    fig.suptitle(f"{title} (geohash precision {precision}, cells about {size})", fontweight="bold", fontsize=11)
    src = {first.supply_source, first.demand_source}
    caption = (
        f"Time-averaged available drivers against time-averaged riders waiting for a match, per cell and per quarter "
        f"of the request span ({fr.tz.name}), from {' and '.join(sorted(src))}. Colour: log scale of "
        f"(drivers + 0.05) / (riders + 0.05); cells where both are below {SD_FLOOR} are blank."
    )
    if first.supply_source == "events":
        caption += " Supply from events places a driver where it became free (record locations for exact supply)."
    return png(fig), title, caption
