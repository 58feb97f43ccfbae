"""Hand-written event logs and run folders for tests (no Ray, no replay engine).

A row is ``(t, kind, request_id=None, driver_id=None, extras=None)``:
``t`` seconds after BASE, ``extras`` a dict of column overrides (``seq``,
``pickup_eta_s``, ``pickup_distance_m``, ``lat``, ``lng``, ``tick``, ``shard``).
``seq`` defaults to the row's index, so list rows in the order they happened.
A ``match`` without overrides gets ``pickup_eta_s=60.0`` and ``pickup_distance_m=400.0``.

    write_run(tmp_path / "run", [
        (0, "driver_online", None, "d1"),
        (0, "request", "r1"),
        (2, "match", "r1", "d1", {"pickup_eta_s": 90.0, "pickup_distance_m": 500.0}),
        (5, "accept", "r1", "d1"),
        (90, "pickup", "r1", "d1"),
        (600, "dropoff", "r1", "d1"),
    ])
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from matcher.io.schemas import EVENTS

BASE = datetime(2014, 4, 1, 8, 0, tzinfo=UTC)
DEFAULT_ETA_S = 60.0
DEFAULT_DISTANCE_M = 400.0

DEFAULT_META = {
    "policy": "batch",
    "window_s": 2.0,
    "shards": 1,
    "seed": 0,
    "drivers": None,
    "quarantined": 0,
    "sim_seconds": None,
    "wall_seconds": 1.0,
    "label": None,
}


def events_table(rows, base: datetime = BASE, window_s: float = 2.0) -> pa.Table:
    """The rows as an Arrow table of schema matcher.io.schemas.EVENTS."""
    cols: dict[str, list] = {f.name: [] for f in EVENTS}
    for i, row in enumerate(rows):
        t, kind, *rest = row
        extras = rest.pop() if rest and isinstance(rest[-1], dict) else {}
        rid = rest[0] if len(rest) > 0 else None
        did = rest[1] if len(rest) > 1 else None
        rec = {
            "seq": i,
            "ts": base + timedelta(seconds=t),
            "tick": int(t // window_s),
            "shard": 0,
            "kind": kind,
            "request_id": rid,
            "driver_id": did,
            "lat": 40.75,
            "lng": -73.98,
            "pickup_eta_s": DEFAULT_ETA_S if kind == "match" else None,
            "pickup_distance_m": DEFAULT_DISTANCE_M if kind == "match" else None,
        }
        rec.update(extras)
        for name, column in cols.items():
            column.append(rec[name])
    return pa.table(cols, schema=EVENTS)


def events_frame(rows, base: datetime = BASE) -> pl.DataFrame:
    return pl.from_arrow(events_table(rows, base))


def ticks_table(
    wall_ms, base: datetime = BASE, window_s: float = 2.0, pending=None, matched=None, deferred=None, fallbacks=None
) -> pa.Table:
    n = len(wall_ms)
    return pa.table(
        {
            "tick": pa.array(range(n), pa.int64()),
            "ts": pa.array([base + timedelta(seconds=i * window_s) for i in range(n)], pa.timestamp("ms", tz="UTC")),
            "wall_ms": pa.array(wall_ms, pa.float64()),
            "pending": pa.array(pending or [0] * n, pa.int32()),
            "matched": pa.array(matched or [0] * n, pa.int32()),
            "deferred": pa.array(deferred or [0] * n, pa.int32()),
            "fallbacks": pa.array(fallbacks or [0] * n, pa.int32()),
        }
    )


def write_run(
    out,
    rows,
    *,
    meta: dict | None = None,
    ticks: pa.Table | list | None = None,
    parts: int = 1,
    summary: bool = True,
    base: datetime = BASE,
) -> Path:
    """Write a run folder: events/ (split over ``parts`` hive folders ``shard=i``), ticks.parquet,
    run.json, quarantine.parquet and (when ``summary``) summary.json via matcher.analysis.metrics."""
    from matcher.analysis.metrics import write_summary

    out = Path(out)
    table = events_table(rows, base)
    for p in range(parts):
        folder = out / "events" / f"shard={p}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(list(range(p, table.num_rows, parts))), folder / "part-0.parquet")
    if ticks is None:
        span = max((r[0] for r in rows), default=0)
        ticks = [10.0] * (int(span // 2) + 1)
    if isinstance(ticks, list):
        ticks = ticks_table(ticks, base)
    pq.write_table(ticks, out / "ticks.parquet")
    pq.write_table(
        pa.table(
            {"source": pa.array([], pa.string()), "row": pa.array([], pa.int64()), "reason": pa.array([], pa.string())}
        ),
        out / "quarantine.parquet",
    )
    full = {**DEFAULT_META, **(meta or {})}
    if full["drivers"] is None:
        full["drivers"] = len({r[3] for r in rows if r[1] == "driver_online"})
    if full["sim_seconds"] is None:
        full["sim_seconds"] = float(max((r[0] for r in rows), default=0) - min((r[0] for r in rows), default=0))
    (out / "run.json").write_text(json.dumps(full, indent=2))
    if summary:
        write_summary(out, full)
    return out


def ride(
    rid: str,
    did: str,
    t_request: float,
    t_match: float,
    t_accept: float,
    t_pickup: float,
    t_dropoff: float,
    eta: float = DEFAULT_ETA_S,
    dist: float = DEFAULT_DISTANCE_M,
) -> list[tuple]:
    """The rows of one completed ride (request, match, accept, pickup, dropoff)."""
    return [
        (t_request, "request", rid),
        (t_match, "match", rid, did, {"pickup_eta_s": eta, "pickup_distance_m": dist}),
        (t_accept, "accept", rid, did),
        (t_pickup, "pickup", rid, did),
        (t_dropoff, "dropoff", rid, did),
    ]


def in_time_order(rows) -> list[tuple]:
    """Rows sorted by t (stable: equal times keep their listed order)."""
    return sorted(rows, key=lambda r: r[0])


def tiny_log() -> list[tuple]:
    """A small valid log whose figures are computed by hand in tests/test_metrics.py.

    d1, d2 online at 0; d2 offline at 1000; the log ends at 1400.
    r1: request 0, match d1 2 (eta 100, 500 m), accept 5, pickup 100, dropoff 700   -> completed, wait 100
    r2: request 10, match d2 12 (eta 200, 1200 m), decline d2 20, expire 310          -> expired
    r3: request 50, match d2 54 (eta 300, 2000 m), accept 60, cancel d2 160           -> cancelled
    r4: request 800, match d1 806 (eta 50, 250 m), accept 810, pickup 1000, dropoff 1200 -> completed, wait 200
    r5: request 1100, expire 1400                                                     -> expired, never matched
    """
    rows = [
        (0, "driver_online", None, "d1"),
        (0, "driver_online", None, "d2"),
        *ride("r1", "d1", 0, 2, 5, 100, 700, eta=100.0, dist=500.0),
        (10, "request", "r2"),
        (12, "match", "r2", "d2", {"pickup_eta_s": 200.0, "pickup_distance_m": 1200.0}),
        (20, "decline", "r2", "d2"),
        (310, "expire", "r2"),
        (50, "request", "r3"),
        (54, "match", "r3", "d2", {"pickup_eta_s": 300.0, "pickup_distance_m": 2000.0}),
        (60, "accept", "r3", "d2"),
        (160, "cancel", "r3", "d2"),
        *ride("r4", "d1", 800, 806, 810, 1000, 1200, eta=50.0, dist=250.0),
        (1000, "driver_offline", None, "d2"),
        (1100, "request", "r5"),
        (1400, "expire", "r5"),
    ]
    return in_time_order(rows)
