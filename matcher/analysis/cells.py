"""Figures by area: geohash cells of the pickup points (the report's maps).

A request belongs to the cell of its pickup point (the ``lat``, ``lng`` of its
``request`` event). Per cell:

``requests``       requests made in the cell;
``wait_mean_s``    mean ``wait_s`` of its completed requests (null without one);
``expired_share``  expired / requests;
``eta_mean_s``     mean ``pickup_eta_s`` of its picked-up requests (null without one).

The definitions of ``wait_s``, ``pickup_eta_s`` and the outcome are those of
:mod:`matcher.analysis.metrics`. A cell with fewer than :data:`MIN_CELL_REQUESTS`
requests is reported but drawn as "too few requests": its mean would be noise.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from matcher.analysis.metrics import scan_events
from matcher.core import geo

MIN_CELL_REQUESTS = 10
PRECISIONS = (4, 5, 6, 7)  # 39 x 20 km, 4.9 x 4.9 km, 1.2 x 0.6 km, 153 x 153 m at the equator


def request_places(out_dir: str | os.PathLike) -> pl.DataFrame:
    """request_id, lat, lng: the pickup point of every request (its ``request`` event)."""
    return (
        scan_events(out_dir, ["kind", "request_id", "lat", "lng"])
        .filter(pl.col("kind") == "request")
        .group_by("request_id")
        .agg(pl.col("lat").first(), pl.col("lng").first())
        .collect()
    )


def choose_precision(lat, lng, min_share: float = 0.75, min_n: int = MIN_CELL_REQUESTS) -> int:
    """The finest precision of :data:`PRECISIONS` at which at least ``min_share`` of the valid
    points lie in cells holding at least ``min_n`` points (the coarsest without any point)."""
    lat, lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
    ok = geo.valid_coords(lat, lng)
    lat, lng = lat[ok], lng[ok]
    best = PRECISIONS[0]
    for p in PRECISIONS:
        if lat.size == 0:
            break
        _, inverse, counts = np.unique(geo.encode_int(lat, lng, p), return_inverse=True, return_counts=True)
        if (counts[inverse] >= min_n).mean() >= min_share:
            best = p
    return best


def cell_size_text(precision: int, lat: float) -> str:
    """E.g. ``"1.2 x 0.6 km"`` (east-west x north-south at latitude ``lat``)."""
    h, w = geo.cell_size_m(precision, lat)
    h, w = float(h), float(w)
    if max(h, w) >= 1000:
        return f"{w / 1000:.1f} x {h / 1000:.1f} km"
    return f"{w:.0f} x {h:.0f} m"


def cell_stats(requests: pl.DataFrame, places: pl.DataFrame, precision: int) -> pl.DataFrame:
    """One row per cell (module docstring), from ``requests`` (request_id, outcome, wait_s,
    pickup_eta_s: :func:`matcher.analysis.metrics.request_table` columns) and ``places``."""
    df = requests.select("request_id", "outcome", "wait_s", "pickup_eta_s").join(places, on="request_id", how="inner")
    ok = geo.valid_coords(df["lat"].to_numpy(), df["lng"].to_numpy())
    df = df.filter(pl.Series(ok))
    if df.height == 0:
        return pl.DataFrame(
            schema={
                "cell": pl.String,
                "requests": pl.UInt32,
                "wait_mean_s": pl.Float64,
                "expired_share": pl.Float64,
                "eta_mean_s": pl.Float64,
            }
        )
    cells = geo.encode(df["lat"].to_numpy(), df["lng"].to_numpy(), precision)
    return (
        df.with_columns(pl.Series("cell", cells, pl.String))
        .group_by("cell")
        .agg(
            pl.len().alias("requests"),
            pl.col("wait_s").filter(pl.col("outcome") == "completed").mean().alias("wait_mean_s"),
            (pl.col("outcome") == "expired").fill_null(False).mean().alias("expired_share"),
            pl.col("pickup_eta_s").drop_nulls().mean().alias("eta_mean_s"),
        )
        .sort("cell")
    )


def view_box(lat, lng, q: float = 1.0) -> tuple[float, float, float, float] | None:
    """(lat0, lat1, lng0, lng1) holding the central ``100 - 2q`` % of the valid points in each
    direction (outliers far out of town do not shrink the map); None without points."""
    lat, lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
    ok = geo.valid_coords(lat, lng)
    if not ok.any():
        return None
    la, ln = lat[ok], lng[ok]
    lat0, lat1 = np.percentile(la, [q, 100 - q])
    lng0, lng1 = np.percentile(ln, [q, 100 - q])
    return float(lat0), float(lat1), float(lng0), float(lng1)


def bounds(cells) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lat0, lat1, lng0, lng1) arrays of geohash strings."""
    return geo.bounds(np.asarray(cells, dtype=str))
