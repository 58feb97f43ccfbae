"""Supply and demand over time and by cell: available drivers against waiting riders.

Computed from the event log alone (docs/run-output.md), so every run folder has it.
Events are ordered by ``(ts, seq)``; an *interval* runs from an event that opens it
to the next event naming the same request (or driver), or to the log's last event:

waiting rider (demand)
    opened by the request's ``request`` event and by every ``decline`` (the ride is
    searching again); placed at the request's pickup point.
available driver (supply)
    opened by ``driver_online``, ``decline``, ``cancel`` and ``dropoff`` events naming
    the driver; placed where that event happened. An idle driver drifts toward recent
    demand between events, so event-based supply is placed where the driver became free.

Two files, when a run has them, replace the event-based figures:
``OUT/locations/`` (``--record-locations``) gives supply exactly, from the ``available``
rows of each location snapshot; ``OUT/cells.parquet`` (per tick and geohash cell:
``demand`` open requests, ``supply`` available drivers) gives both, at its own precision.

Memory: the log is read in slices by a hash of ``request_id`` (riders) or ``driver_id``
(drivers) of about :data:`matcher.analysis.metrics.SUMMARY_PASS_EVENTS` events, and each
slice is reduced to grid counts and per-cell sums before the next is read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from matcher.analysis.metrics import SUMMARY_PASS_EVENTS, in_system, scan_events
from matcher.core import geo

SEARCHING_OPENS = ("request", "decline")
AVAILABLE_OPENS = ("driver_online", "decline", "cancel", "dropoff")
SUPPLY_PRECISION = 5  # the surge cell (about 3.7 x 4.9 km at New York): ~ the 2 km candidate disc
_COLUMNS = ["seq", "ts", "kind", "request_id", "driver_id", "lat", "lng"]


@dataclass
class SupplyDemand:
    """Counts on a time grid (seconds from an origin) and time-averaged counts per cell and period."""

    grid_s: np.ndarray
    waiting: np.ndarray  # riders waiting for a match at each grid time
    available: np.ndarray  # available drivers at each grid time
    precision: int
    periods: list[tuple[float, float]]  # [start, end) seconds from the origin
    # one row per (period, cell): period (int), cell (str geohash), waiting, available (time averages)
    cells: pl.DataFrame = field(default_factory=pl.DataFrame)
    supply_source: str = "events"
    demand_source: str = "events"


def _ms(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ms", "UTC")).dt.epoch("ms")


def _slices(lf: pl.LazyFrame, key: str, n_events: int):
    passes = max(1, math.ceil(n_events / SUMMARY_PASS_EVENTS))
    named = lf.filter(pl.col(key).is_not_null())
    for i in range(passes):
        part = named if passes == 1 else named.filter(pl.col(key).hash(seed=1) % passes == i)
        yield part.sort(key, "ts", "seq").collect()


def intervals(ev: pl.DataFrame, key: str, opens: tuple[str, ...], end_ms: int, place_kind: str | None = None):
    """(start_ms, end_ms, lat, lng) numpy arrays of the intervals of ``ev`` (sorted by key, ts, seq).

    ``place_kind``: place every interval of a key at that key's event of this kind (the
    request's pickup point), instead of at the event that opens it.
    """
    ev = ev.with_columns(
        _ms("ts").alias("t"),
        pl.when(pl.col(key).shift(-1) == pl.col(key)).then(_ms("ts").shift(-1)).alias("next_t"),
    )
    if place_kind is not None:
        places = ev.filter(pl.col("kind") == place_kind).group_by(key).agg(pl.col("lat").first(), pl.col("lng").first())
        ev = ev.drop("lat", "lng").join(places, on=key, how="left", maintain_order="left")
    iv = ev.filter(pl.col("kind").is_in(opens)).select(
        "t", pl.col("next_t").fill_null(end_ms), pl.col("lat").cast(pl.Float64), pl.col("lng").cast(pl.Float64)
    )
    return tuple(iv[c].to_numpy() for c in ("t", "next_t", "lat", "lng"))


class _Acc:
    """Per-(period, cell) sums of overlap seconds, accumulated slice by slice."""

    def __init__(self, periods: list[tuple[float, float]], precision: int):
        self.periods, self.precision = periods, precision
        self.parts: list[pl.DataFrame] = []

    def add(self, start_s: np.ndarray, end_s: np.ndarray, lat: np.ndarray, lng: np.ndarray, weight=None) -> None:
        """Intervals ``[start_s, end_s)``; or, with ``weight`` (periods x points), point samples at ``start_s``."""
        ok = geo.valid_coords(lat, lng)
        if ok.any():
            self.add_cells(
                geo.encode(lat[ok], lng[ok], self.precision),
                start_s[ok],
                end_s[ok],
                None if weight is None else weight[:, ok],
            )

    def add_cells(self, cells: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, weight=None) -> None:
        for p, (p0, p1) in enumerate(self.periods):
            if weight is None:  # intervals: seconds inside the period, as a share of it
                w = np.clip(np.minimum(end_s, p1) - np.maximum(start_s, p0), 0.0, None) / max(p1 - p0, 1e-9)
            else:  # point samples: each weighs weight[p] inside its period
                w = np.where((start_s >= p0) & (start_s < p1), weight[p], 0.0)
            keep = w > 0
            if keep.any():
                df = pl.DataFrame({"cell": cells[keep], "w": w[keep]}, schema={"cell": pl.String, "w": pl.Float64})
                self.parts.append(
                    df.group_by("cell").agg(pl.col("w").sum()).with_columns(pl.lit(p, pl.Int32).alias("period"))
                )

    def frame(self, name: str) -> pl.DataFrame:
        if not self.parts:
            return pl.DataFrame(schema={"period": pl.Int32, "cell": pl.String, name: pl.Float64})
        return pl.concat(self.parts, how="diagonal").group_by("period", "cell").agg(pl.col("w").sum().alias(name))


def _from_events(out_dir, key, opens, place_kind, origin_ms, grid_s, periods, precision, end_ms):
    lf = scan_events(out_dir, _COLUMNS)
    n_events = lf.select(pl.len()).collect().item()
    counts = np.zeros(len(grid_s), np.int64)
    acc = _Acc(periods, precision)
    for ev in _slices(lf, key, n_events):
        start, end, lat, lng = intervals(ev, key, opens, end_ms, place_kind)
        s, e = (start - origin_ms) / 1000.0, (end - origin_ms) / 1000.0
        counts += in_system(s, e, grid_s)
        acc.add(s, e, lat, lng)
        del ev
    return counts, acc


def _read_dataset(path: Path, columns: list[str]) -> pl.DataFrame | None:
    pattern = os.fspath(path) if path.is_file() else f"{os.fspath(path)}/**/*.parquet"
    try:
        lf = pl.scan_parquet(pattern, hive_partitioning=path.is_dir())
        if not set(columns) <= set(lf.collect_schema().names()):
            return None
        return lf.select(columns).collect()
    except (OSError, pl.exceptions.PolarsError):
        return None


def _snapshots(df: pl.DataFrame, value: str, origin_ms, grid_s, periods, precision, cell_col=None):
    """Counts at each snapshot time (``t``) stepped onto the grid, and per-cell period means."""
    df = df.with_columns(((_ms("ts") - origin_ms) / 1000.0).alias("s"))
    per_t = df.group_by("s").agg(pl.col(value).sum()).sort("s")
    snap_t = per_t["s"].to_numpy()
    idx = np.searchsorted(snap_t, grid_s, side="right") - 1
    counts = np.where(idx >= 0, per_t[value].to_numpy()[np.maximum(idx, 0)], 0)
    per_period = np.array([max(1, int(((snap_t >= p0) & (snap_t < p1)).sum())) for p0, p1 in periods], np.float64)
    acc = _Acc(periods, precision)
    s = df["s"].to_numpy()
    weight = df[value].cast(pl.Float64).to_numpy()[None, :] / per_period[:, None]
    if cell_col is None:
        acc.add(s, s, df["lat"].to_numpy(), df["lng"].to_numpy(), weight=weight)
    else:
        acc.precision = int(df[cell_col].str.len_chars().max() or precision)
        acc.add_cells(df[cell_col].to_numpy().astype(str), s, s, weight=weight)
    return counts, acc, acc.precision


def supply_demand(
    out_dir: str | os.PathLike,
    origin_ms: int,
    grid_s: np.ndarray,
    periods: list[tuple[float, float]],
    precision: int = SUPPLY_PRECISION,
) -> SupplyDemand:
    """Waiting riders and available drivers of a run folder (module docstring)."""
    out = Path(out_dir)
    end_ms = scan_events(out, ["ts"]).select(_ms("ts").max()).collect().item()
    grid_s = np.asarray(grid_s, dtype=np.float64)
    sources = {"supply": "events", "demand": "events"}
    cells_file = _read_dataset(out / "cells.parquet", ["ts", "cell", "demand", "supply"])
    if cells_file is not None and cells_file.height:
        waiting, wacc, precision = _snapshots(cells_file, "demand", origin_ms, grid_s, periods, precision, "cell")
        available, aacc, _ = _snapshots(cells_file, "supply", origin_ms, grid_s, periods, precision, "cell")
        sources = {"supply": "cells.parquet", "demand": "cells.parquet"}
    else:
        waiting, wacc = _from_events(
            out, "request_id", SEARCHING_OPENS, "request", origin_ms, grid_s, periods, precision, end_ms
        )
        locs = (
            _read_dataset(out / "locations", ["ts", "lat", "lng", "status"]) if (out / "locations").is_dir() else None
        )
        if locs is not None and locs.height:
            locs = locs.with_columns((pl.col("status") == "available").cast(pl.Int64).alias("n"))
            available, aacc, _ = _snapshots(locs, "n", origin_ms, grid_s, periods, precision)
            sources["supply"] = "locations/"
        else:
            available, aacc = _from_events(
                out, "driver_id", AVAILABLE_OPENS, None, origin_ms, grid_s, periods, precision, end_ms
            )
    cells = wacc.frame("waiting").join(aacc.frame("available"), on=["period", "cell"], how="full", coalesce=True)
    cells = cells.with_columns(pl.col("waiting").fill_null(0.0), pl.col("available").fill_null(0.0))
    cells = cells.select("period", "cell", "waiting", "available").sort("period", "cell")
    return SupplyDemand(grid_s, waiting, available, precision, periods, cells, sources["supply"], sources["demand"])
