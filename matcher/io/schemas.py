"""Arrow schemas of every public table: the single source of truth for code, docs and tests.

docs/trace.md (requests, drivers) and docs/run-output.md (events,
locations, quarantine).
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

# --- traces (inputs) -------------------------------------------------------
REQUESTS = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("request_time", TS, nullable=False),
        pa.field("pickup_lat", pa.float64(), nullable=False),
        pa.field("pickup_lng", pa.float64(), nullable=False),
        pa.field("dropoff_lat", pa.float64()),
        pa.field("dropoff_lng", pa.float64()),
        pa.field("ride_type", pa.string()),
        pa.field("trip_duration_s", pa.float64()),
    ]
)
REQUESTS_REQUIRED = ("request_id", "request_time", "pickup_lat", "pickup_lng")

DRIVERS = pa.schema(
    [
        pa.field("driver_id", pa.string(), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lng", pa.float64(), nullable=False),
        pa.field("vehicle_type", pa.string()),
        pa.field("online_from", TS),
        pa.field("online_until", TS),
        pa.field("rating", pa.float64()),
    ]
)
DRIVERS_REQUIRED = ("driver_id", "lat", "lng")

# --- run output --------------------------------------------------------------
EVENT_KINDS = (
    "request",
    "match",
    "accept",
    "decline",
    "pickup",
    "dropoff",
    "cancel",
    "expire",
    "driver_online",
    "driver_offline",
)
TERMINAL_KINDS = ("dropoff", "cancel", "expire")

EVENTS = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("tick", pa.int64(), nullable=False),
        pa.field("shard", pa.int32()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("driver_id", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lng", pa.float64()),
        pa.field("pickup_eta_s", pa.float64()),
        pa.field("pickup_distance_m", pa.float64()),
    ]
)

LOCATIONS = pa.schema(
    [
        pa.field("driver_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("lat", pa.float64()),
        pa.field("lng", pa.float64()),
        pa.field("heading_deg", pa.float32()),
        pa.field("speed_mps", pa.float32()),
        pa.field("status", pa.string()),
    ]
)

# cells.parquet: per-tick surge figures of every tracked geohash cell (matcher.core.surge).
CELLS = pa.schema(
    [
        pa.field("tick", pa.int64(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("cell", pa.string(), nullable=False),  # geohash, SurgeConfig.precision characters
        pa.field("demand", pa.int32(), nullable=False),  # open requests in the cell at this tick
        pa.field("supply", pa.int32(), nullable=False),  # available drivers in the cell at this tick
        pa.field("demand_ewma", pa.float64(), nullable=False),
        pa.field("supply_ewma", pa.float64(), nullable=False),
        pa.field("ratio", pa.float64(), nullable=False),  # demand_ewma / max(supply_ewma, min_supply)
        pa.field("surge_multiplier", pa.float64(), nullable=False),
    ]
)

# quarantine.parquet: the offending row's columns as strings, plus why.
QUARANTINE_BASE = pa.schema(
    [
        pa.field("source", pa.string()),  # "requests" or "drivers"
        pa.field("row", pa.int64()),  # 0-based row number in the input
        pa.field("reason", pa.string()),
    ]
)

# --- OUT/shards.parquet: one row per tick and shard (matcher.dist.shardstats) ---
SHARDS = pa.schema(
    [
        pa.field("tick", pa.int64(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("drivers", pa.int32(), nullable=False),
        pa.field("halo_drivers", pa.int32(), nullable=False),
        pa.field("pending", pa.int32(), nullable=False),
        pa.field("matched", pa.int32(), nullable=False),
        pa.field("border", pa.int32(), nullable=False),
        pa.field("solve_ms", pa.float64(), nullable=False),
        pa.field("handoffs_in", pa.int32(), nullable=False),
        pa.field("handoffs_out", pa.int32(), nullable=False),
    ]
)
