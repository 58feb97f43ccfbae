"""Rider cancellations against the pickup ETA they were offered.

The rider model (docs/cli.md, ``--cancel-base`` and ``--cancel-per-min``) makes a
rider more likely to cancel the longer the offered pickup ETA: on each match the
rider decides to cancel with probability ``min(0.5, base + per_min * ETA minutes)``,
at a uniform time within the ETA plus 30 s. This module measures it from the log.

Per ``match`` event: its ``pickup_eta_s``, and how that offer ended: the first
``decline``, ``cancel`` or ``dropoff`` of the same request and driver after it. An
offer *ends in a cancel* when that event is a ``cancel`` (a rider cancel, or the rare
driver dropping off the network mid-ride). A decline can end an offer before the
rider's cancel is due, so the measured share sits at or below the model's curve.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from matcher.analysis.metrics import SUMMARY_COLUMNS, nearest, ordered, request_slices, scan_events

_CLOSE = ("decline", "cancel", "dropoff")


def offer_outcomes(ev: pl.DataFrame) -> pl.DataFrame:
    """pickup_eta_s and ``ended`` (decline | cancel | dropoff | null while open) of every match in
    ``ev`` (events of whole requests, ordered by :func:`matcher.analysis.metrics.ordered`)."""
    ev = ev if "pos" in ev.columns else ordered(ev)
    named = pl.col("driver_id").is_not_null() & pl.col("request_id").is_not_null()
    matches = ev.filter((pl.col("kind") == "match") & named).select("request_id", "driver_id", "pos", "pickup_eta_s")
    closes = ev.filter(pl.col("kind").is_in(_CLOSE) & named).select(
        "request_id", "driver_id", pl.col("pos").alias("close_pos"), pl.col("kind").alias("ended")
    )
    return nearest(matches, closes, "pos", "close_pos", ["request_id", "driver_id"], "forward").select(
        pl.col("pickup_eta_s").cast(pl.Float64), "ended"
    )


def run_offer_outcomes(out_dir: str | os.PathLike) -> pl.DataFrame:
    """:func:`offer_outcomes` of a run folder, read in slices of requests (bounded memory)."""
    lf = scan_events(out_dir, SUMMARY_COLUMNS)
    n_events = lf.select(pl.len()).collect().item()
    parts = [offer_outcomes(ev) for ev in request_slices(lf, n_events)]
    if not parts:
        return pl.DataFrame(schema={"pickup_eta_s": pl.Float64, "ended": pl.String})
    return pl.concat(parts)


def wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (95 % by default) of k successes in n trials; NaN where n = 0."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        mid = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return mid - half, mid + half


def cancel_by_eta(outcomes: pl.DataFrame, bin_s: float = 60.0, min_offers: int = 20) -> pl.DataFrame:
    """Share of ended offers that ended in a cancel, by ETA bin of ``bin_s`` seconds.

    Columns: eta_lo_s, eta_hi_s, offers (ended), cancelled, share, lo, hi (Wilson 95 %).
    Bins with fewer than ``min_offers`` ended offers are left out.
    """
    df = outcomes.filter(pl.col("ended").is_not_null() & pl.col("pickup_eta_s").is_not_nan())
    df = df.drop_nulls("pickup_eta_s")
    out = (
        df.group_by((pl.col("pickup_eta_s") // bin_s).cast(pl.Int64).alias("b"))
        .agg(pl.len().alias("offers"), (pl.col("ended") == "cancel").sum().alias("cancelled"))
        .filter(pl.col("offers") >= min_offers)
        .sort("b")
    )
    lo, hi = wilson(out["cancelled"].to_numpy(), out["offers"].to_numpy())
    return out.select(
        (pl.col("b") * bin_s).cast(pl.Float64).alias("eta_lo_s"),
        ((pl.col("b") + 1) * bin_s).cast(pl.Float64).alias("eta_hi_s"),
        pl.col("offers").cast(pl.Int64),
        pl.col("cancelled").cast(pl.Int64),
        (pl.col("cancelled") / pl.col("offers")).alias("share"),
    ).with_columns(pl.Series("lo", lo), pl.Series("hi", hi))


def model_cancel_p(eta_s, base: float, per_min: float, cap: float = 0.5) -> np.ndarray:
    """The rider model's cancel probability for an offer with this pickup ETA."""
    return np.minimum(cap, base + per_min * np.asarray(eta_s, np.float64) / 60.0)
