"""Checks that a run folder keeps its contract (docs/run-output.md, rules 1-4).

``check_log(events)`` returns human-readable violations of the event log (an empty
list means the log is sound); ``check_run(out_dir)`` also checks that summary.json
equals a recomputation from the events (:mod:`matcher.analysis.metrics`).

Events are ordered by ``(ts, seq)``. Checked:

* ``seq`` is unique; ``seq``, ``ts``, ``kind`` are never null; ``kind`` is one of
  EVENT_KINDS; request kinds carry a ``request_id``; match/accept/decline/pickup/
  dropoff and driver_online/offline carry a ``driver_id``; every ``match`` has a
  finite, non-negative ``pickup_eta_s`` and ``pickup_distance_m``.
* rule 1: every request id has exactly one ``request`` event, which comes before
  its other events, and exactly one terminal event (dropoff/cancel/expire), which
  is its last event.
* rule 2: between a driver's ``match`` for a request and the first closing event
  (decline, cancel, dropoff) of that request for that driver, the driver has no
  other ``match``.
* rule 3: no ``match`` of a request to a driver after that driver's ``decline`` of it.
* rule 4: for the same request and driver: match before accept, accept before
  pickup, pickup before dropoff (each present one needs its predecessor).

Each kind of violation lists at most ``limit`` examples, then one "... and N more" line.
Vectorized with polars: a log of a million requests takes seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import polars as pl

from matcher.io.schemas import EVENT_KINDS, TERMINAL_KINDS

_REQUEST_KINDS = ("request", "match", "accept", "decline", "pickup", "dropoff", "cancel", "expire")
_DRIVER_KINDS = ("match", "accept", "decline", "pickup", "dropoff", "driver_online", "driver_offline")
_CLOSE_KINDS = ("decline", "cancel", "dropoff")
_NEEDED = ("seq", "ts", "kind", "request_id", "driver_id", "pickup_eta_s", "pickup_distance_m")

# summary.json keys of the contract (nested ones with their statistics)
SUMMARY_KEYS: dict[str, tuple[str, ...] | None] = {
    "policy": None,
    "window_s": None,
    "shards": None,
    "seed": None,
    "requests": None,
    "completed": None,
    "cancelled": None,
    "expired": None,
    "quarantined": None,
    "served_rate": None,
    "wait_s": ("mean", "p50", "p90", "p95"),
    "match_delay_s": ("mean", "p50", "p90"),
    "pickup_eta_s": ("mean", "p50", "p90"),
    "pickup_distance_m": ("mean", "p50", "p90"),
    "declines": None,
    "drivers": None,
    "utilization": None,
    "tick_ms": ("p50", "p99", "max"),
    "sim_seconds": None,
    "wall_seconds": None,
}


def _emit(out: list[str], df: pl.DataFrame, fmt, limit: int, what: str) -> None:
    """Append one message per row of df (at most limit), then a count of the rest."""
    if df.height == 0:
        return
    for row in df.head(limit).iter_rows(named=True):
        out.append(fmt(row))
    if df.height > limit:
        out.append(f"... and {df.height - limit} more {what}")


def _ts(ts) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if ts is not None else "?"


def _when(ts, seq) -> str:
    return f"{_ts(ts)} (seq {seq})"


def check_log(events: pl.DataFrame, limit: int = 20) -> list[str]:
    """Violations of the event-log contract, as one-line messages (empty: all good)."""
    out: list[str] = []
    missing = [c for c in _NEEDED if c not in events.columns]
    if missing:
        return [f"schema: the event log lacks column(s) {', '.join(missing)}"]
    ev = events.select(_NEEDED)

    # --- fields --------------------------------------------------------------------
    for col in ("seq", "ts", "kind"):
        n = ev[col].null_count()
        if n:
            out.append(f"fields: {n} event(s) with a null {col}")
    ev = ev.drop_nulls(["seq", "ts", "kind"])
    ev = ev.sort(["ts", "seq"]).with_row_index("pos").with_columns(pl.col("pos").cast(pl.Int64))

    dup = ev.group_by("seq").agg(pl.len().alias("n")).filter(pl.col("n") > 1).sort("seq")
    _emit(out, dup, lambda r: f"seq: {r['seq']} is used by {r['n']} events", limit, "duplicated seq values")

    bad_kind = ev.filter(~pl.col("kind").is_in(EVENT_KINDS)).group_by("kind").agg(pl.len().alias("n")).sort("kind")
    _emit(out, bad_kind, lambda r: f"kind: {r['n']} event(s) of unknown kind {r['kind']!r}", limit, "unknown kinds")

    no_req = ev.filter(pl.col("kind").is_in(_REQUEST_KINDS) & pl.col("request_id").is_null())
    _emit(
        out,
        no_req,
        lambda r: f"fields: {r['kind']} at {_when(r['ts'], r['seq'])} has no request_id",
        limit,
        "events without request_id",
    )
    no_drv = ev.filter(pl.col("kind").is_in(_DRIVER_KINDS) & pl.col("driver_id").is_null())
    _emit(
        out,
        no_drv,
        lambda r: f"fields: {r['kind']} of request {r['request_id']} at {_when(r['ts'], r['seq'])} has no driver_id",
        limit,
        "events without driver_id",
    )

    bad_match = ev.filter(
        (pl.col("kind") == "match")
        & ~(
            pl.col("pickup_eta_s").is_not_null()
            & pl.col("pickup_eta_s").is_finite()
            & (pl.col("pickup_eta_s") >= 0)
            & pl.col("pickup_distance_m").is_not_null()
            & pl.col("pickup_distance_m").is_finite()
            & (pl.col("pickup_distance_m") >= 0)
        )
    )
    _emit(
        out,
        bad_match,
        lambda r: (
            f"fields: match of request {r['request_id']} to driver {r['driver_id']} at "
            f"{_when(r['ts'], r['seq'])} lacks a valid pickup_eta_s/pickup_distance_m "
            f"({r['pickup_eta_s']}, {r['pickup_distance_m']})"
        ),
        limit,
        "match events without pickup_eta_s/pickup_distance_m",
    )

    rq = ev.filter(pl.col("request_id").is_not_null() & pl.col("kind").is_in(_REQUEST_KINDS))

    # --- rule 1 --------------------------------------------------------------------
    per = (
        rq.group_by("request_id")
        .agg(
            (pl.col("kind") == "request").sum().alias("n_req"),
            pl.col("kind").is_in(TERMINAL_KINDS).sum().alias("n_term"),
            pl.col("kind").filter(pl.col("kind").is_in(TERMINAL_KINDS)).alias("terms"),
            pl.col("kind").first().alias("first_kind"),
            pl.col("kind").last().alias("last_kind"),
            pl.col("ts").last().alias("last_ts"),
            pl.col("seq").last().alias("last_seq"),
        )
        .sort("request_id")
    )
    _emit(
        out,
        per.filter(pl.col("n_req") == 0),
        lambda r: f"rule 1: request {r['request_id']} has events but no `request` event",
        limit,
        "requests without a `request` event",
    )
    _emit(
        out,
        per.filter(pl.col("n_req") > 1),
        lambda r: f"rule 1: request {r['request_id']} has {r['n_req']} `request` events",
        limit,
        "requests with several `request` events",
    )
    _emit(
        out,
        per.filter((pl.col("n_req") == 1) & (pl.col("first_kind") != "request")),
        lambda r: f"rule 1: request {r['request_id']} has a `{r['first_kind']}` event before its `request` event",
        limit,
        "requests with events before their `request` event",
    )
    _emit(
        out,
        per.filter(pl.col("n_term") == 0),
        lambda r: (
            f"rule 1: request {r['request_id']} never ends (no dropoff, cancel or expire; last event "
            f"`{r['last_kind']}` at {_when(r['last_ts'], r['last_seq'])})"
        ),
        limit,
        "requests without a terminal event",
    )
    _emit(
        out,
        per.filter(pl.col("n_term") > 1),
        lambda r: f"rule 1: request {r['request_id']} has {r['n_term']} terminal events ({', '.join(r['terms'])})",
        limit,
        "requests with several terminal events",
    )
    _emit(
        out,
        per.filter((pl.col("n_term") >= 1) & ~pl.col("last_kind").is_in(TERMINAL_KINDS)),
        lambda r: (
            f"rule 1: request {r['request_id']} has a `{r['last_kind']}` event at "
            f"{_when(r['last_ts'], r['last_seq'])} after its terminal event"
        ),
        limit,
        "requests with events after their terminal event",
    )

    pairs = rq.filter(pl.col("driver_id").is_not_null())
    matches = pairs.filter(pl.col("kind") == "match").select("request_id", "driver_id", "pos", "ts", "seq")

    # --- rule 2 --------------------------------------------------------------------
    closes = pairs.filter(pl.col("kind").is_in(_CLOSE_KINDS)).select(
        "request_id", "driver_id", pl.col("pos").alias("close_pos")
    )
    m2 = (
        matches.join_asof(
            closes,
            left_on="pos",
            right_on="close_pos",
            by=["request_id", "driver_id"],
            strategy="forward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .sort("driver_id", "pos")
        .with_columns(
            pl.when(pl.col("driver_id").shift(-1) == pl.col("driver_id"))
            .then(pl.col("pos").shift(-1))
            .alias("next_pos"),
            pl.col("request_id").shift(-1).alias("next_req"),
            pl.col("ts").shift(-1).alias("next_ts"),
            pl.col("seq").shift(-1).alias("next_seq"),
        )
        .filter(
            pl.col("next_pos").is_not_null()
            & (pl.col("close_pos").is_null() | (pl.col("close_pos") > pl.col("next_pos")))
        )
        .sort("next_pos")
    )
    _emit(
        out,
        m2,
        lambda r: (
            f"rule 2: driver {r['driver_id']} matched to request {r['next_req']} at "
            f"{_when(r['next_ts'], r['next_seq'])} while its ride for request {r['request_id']} "
            f"(matched at {_when(r['ts'], r['seq'])}) was still open"
        ),
        limit,
        "double bookings",
    )

    # --- rule 3 --------------------------------------------------------------------
    declines = (
        pairs.filter(pl.col("kind") == "decline")
        .group_by("request_id", "driver_id")
        .agg(pl.col("pos").min().alias("decline_pos"), pl.col("ts").min().alias("decline_ts"))
    )
    m3 = (
        matches.join(declines, on=["request_id", "driver_id"], how="inner")
        .filter(pl.col("pos") > pl.col("decline_pos"))
        .sort("pos")
    )
    _emit(
        out,
        m3,
        lambda r: (
            f"rule 3: request {r['request_id']} matched again to driver {r['driver_id']} at "
            f"{_when(r['ts'], r['seq'])} after that driver declined it"
        ),
        limit,
        "rematches to a decliner",
    )

    # --- rule 4 --------------------------------------------------------------------
    steps = ("match", "accept", "pickup", "dropoff")
    first = (
        pairs.filter(pl.col("kind").is_in(steps))
        .group_by("request_id", "driver_id")
        .agg(
            *[pl.col("pos").filter(pl.col("kind") == k).min().alias(k) for k in steps],
            *[pl.col("ts").filter(pl.col("kind") == k).min().alias(f"{k}_ts") for k in steps],
        )
        .sort("request_id", "driver_id")
    )
    for prev, nxt in itertools.pairwise(steps):
        bad = first.filter(pl.col(nxt).is_not_null() & (pl.col(prev).is_null() | (pl.col(prev) > pl.col(nxt))))
        _emit(
            out,
            bad,
            lambda r, prev=prev, nxt=nxt: (
                f"rule 4: request {r['request_id']}, driver {r['driver_id']}: {nxt} at {_ts(r[nxt + '_ts'])} "
                + (f"without a {prev}" if r[prev] is None else f"before {prev} at {_ts(r[prev + '_ts'])}")
            ),
            limit,
            f"{nxt} events without an earlier {prev}",
        )
    return out


# --- a whole run folder --------------------------------------------------------------
def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check_run(out_dir: str | os.PathLike, limit: int = 20) -> list[str]:
    """check_log of OUT/events/ plus: summary.json exists, has every contract key, and
    equals :func:`matcher.analysis.metrics.summarize` recomputed from the events (meta from
    OUT/run.json, or from summary.json itself when there is no run.json)."""
    from matcher.analysis import metrics

    out_dir = Path(out_dir)
    events = metrics.read_events(out_dir)
    problems = check_log(events, limit=limit)
    path = out_dir / "summary.json"
    if not path.exists():
        return problems + [f"summary: {path} is missing"]
    try:
        with open(path) as f:
            summary = json.load(f)
    except ValueError as e:
        return problems + [f"summary: {path} is not valid JSON ({e})"]
    for key, sub in SUMMARY_KEYS.items():
        if key not in summary:
            problems.append(f"summary: key {key!r} is missing")
        elif sub is not None:
            if not isinstance(summary[key], dict):
                problems.append(f"summary: {key} is not an object")
            else:
                problems += [f"summary: key {key}.{s} is missing" for s in sub if s not in summary[key]]
    meta = metrics.read_meta(out_dir) or {
        k: summary.get(k)
        for k in (
            "policy",
            "window_s",
            "shards",
            "seed",
            "label",
            "drivers",
            "quarantined",
            "sim_seconds",
            "wall_seconds",
        )
    }
    expected = metrics.summarize(out_dir, meta, events=events)
    for key, want in expected.items():
        if key not in summary:
            continue
        got = summary[key]
        if isinstance(want, dict) and isinstance(got, dict):
            for s, w in want.items():
                if s in got and not _same(got[s], w):
                    problems.append(f"summary: {key}.{s} is {got[s]!r}, the events give {w!r}")
        elif not _same(got, want):
            problems.append(f"summary: {key} is {got!r}, the events give {want!r}")
    return problems
