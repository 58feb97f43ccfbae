"""Rows of a trace: every column normalized to its contract type, and every row checked.

``Kind`` describes one input table (``REQUEST_ROWS``, ``DRIVER_ROWS``): its
schema, required columns, id column and its row check. A row check takes a
slice of the input (any accepted types, see :mod:`matcher.io.trace`) and gives
the first failing reason of each row (:class:`Reasons`), the slice's columns
in their contract types, and the row times in ms since the epoch.
:func:`quarantine_table` keeps rejected rows with their reason and their
original columns as text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from matcher.config import RIDE_TYPES, VEHICLE_TYPES
from matcher.core import geo
from matcher.io.schemas import DRIVERS, DRIVERS_REQUIRED, QUARANTINE_BASE, REQUESTS, REQUESTS_REQUIRED, TS

__all__ = [
    "DRIVER_REASONS",
    "DRIVER_ROWS",
    "MAX_MS",
    "MIN_MS",
    "REQUEST_REASONS",
    "REQUEST_ROWS",
    "Kind",
    "Reasons",
    "empty_quarantine",
    "quarantine_table",
]

# Plausible instants (ms since the epoch): 1900-01-01 .. 2200-01-01 UTC.
MIN_MS = -2_208_988_800_000
MAX_MS = 7_258_118_400_000
MAX_TRIP_S = 86_400.0  # a trip_duration_s over a day is not a trip (and would keep a replay going for ages)


# --------------------------------------------------------------------------- conversions


def _np_mask(arr: pa.Array) -> np.ndarray:
    """True where null."""
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)


def _decode(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _as_string(arr: pa.Array) -> pa.Array:
    arr = _decode(arr)
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_string(arr.type):
        return arr
    return arr.cast(pa.string())


def _as_float(arr: pa.Array) -> np.ndarray:
    """float64 values with NaN for nulls, plus nothing else: the caller checks nulls separately."""
    arr = _decode(arr)
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    if pa.types.is_duration(arr.type):
        scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[arr.type.unit]
        return arr.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) * scale
    if pa.types.is_float32(arr.type) or pa.types.is_float16(arr.type):
        # via the shortest decimal text, so a float32 40.7 becomes 40.7 and not 40.70000076293945
        arr = arr.cast(pa.float32()).cast(pa.string()).cast(pa.float64())
    elif not pa.types.is_float64(arr.type):
        arr = arr.cast(pa.float64(), safe=False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _as_ms(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ms since the epoch UTC, bad) for a timestamp array of any unit/tz; bad = outside 1900..2200."""
    arr = _decode(arr)
    n = len(arr)
    if pa.types.is_null(arr.type):
        return np.zeros(n, np.int64), np.zeros(n, bool)
    raw = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    unit = arr.type.unit
    if unit == "s":
        bad = (raw < MIN_MS // 1000) | (raw > MAX_MS // 1000)
        ms = np.where(bad, 0, raw) * 1000
    elif unit == "ms":
        ms = raw
        bad = (ms < MIN_MS) | (ms > MAX_MS)
    else:
        ms = np.floor_divide(raw, 1000 if unit == "us" else 1_000_000)
        bad = (ms < MIN_MS) | (ms > MAX_MS)
    return np.where(bad, 0, ms), bad


def _stringify(arr: pa.Array) -> pa.Array:
    """Any column as text, for the quarantine file (never raises)."""
    try:
        a = _decode(arr)
        if pa.types.is_null(a.type):
            return pa.nulls(len(a), pa.string())
        return a.cast(pa.string())
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        pass
    try:
        if pa.types.is_temporal(arr.type):
            return arr.cast(pa.int64()).cast(pa.string())
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        pass
    try:
        vals = arr.to_pylist()
    except Exception:  # noqa: BLE001 - a value Python cannot represent: keep the row, lose the text
        return pa.array(["<unprintable>"] * len(arr), pa.string())
    out = []
    for v in vals:
        if v is None:
            out.append(None)
        elif isinstance(v, bytes):
            out.append(v.decode("utf-8", "backslashreplace"))
        else:
            out.append(str(v))
    return pa.array(out, pa.string())


def quarantine_table(
    source: str, rows: np.ndarray, reasons: list[str] | np.ndarray, original: pa.Table | None
) -> pa.Table:
    """QUARANTINE_BASE columns then ``original``'s columns as text (a name clashing with a base column gets ``_input``)."""
    cols = [
        pa.array([source] * len(rows), pa.string()),
        pa.array(np.asarray(rows, np.int64), pa.int64()),
        pa.array(list(reasons), pa.string()),
    ]
    names = list(QUARANTINE_BASE.names)
    if original is not None:
        for name, col in zip(original.column_names, original.columns):
            new = name
            while new in names:
                new = f"{new}_input"
            names.append(new)
            cols.append(_stringify(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col))
    return pa.table(cols, names=names)


def empty_quarantine() -> pa.Table:
    return QUARANTINE_BASE.empty_table()


# --------------------------------------------------------------------------- row checks


def _check_coords(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """True where a present coordinate pair is unusable (NaN, inf, out of range)."""
    return ~geo.valid_coords(lat, lng)


def _norm_category(arr: pa.Array, allowed: tuple[str, ...], default: str) -> tuple[pa.Array, np.ndarray]:
    """Trimmed, lower-cased category (null/empty -> default) and a mask of unknown values."""
    s = _as_string(arr)
    s = pc.utf8_lower(pc.utf8_trim_whitespace(s))
    s = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)
    s = s.fill_null(default)
    unknown = np.asarray(
        pc.invert(pc.is_in(s, value_set=pa.array(allowed, pa.string()))).to_numpy(zero_copy_only=False), dtype=bool
    )
    return s, unknown


def _ids(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    s = _as_string(arr)
    missing = _np_mask(s) | np.asarray(pc.fill_null(pc.equal(s, ""), True).to_numpy(zero_copy_only=False), dtype=bool)
    return s, missing


def _ts_array(ms: np.ndarray, null: np.ndarray) -> pa.Array:
    return pa.array(ms, pa.int64(), mask=null).cast(TS)


def _f64_array(v: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    return pa.array(v, pa.float64(), mask=null if null is not None and null.any() else None)


class Reasons:
    """First failing reason per row: 0 = ok, k = reasons[k-1]."""

    def __init__(self, n: int, names: tuple[str, ...]):
        self.names = names
        self.code = np.zeros(n, np.int16)

    def flag(self, name: str, mask: np.ndarray) -> None:
        k = self.names.index(name) + 1
        self.code[(self.code == 0) & mask] = k

    @property
    def ok(self) -> np.ndarray:
        return self.code == 0


REQUEST_REASONS = (
    "missing_request_id",
    "missing_request_time",
    "bad_request_time",
    "missing_pickup_coordinate",
    "bad_pickup_coordinate",
    "bad_dropoff_coordinate",
    "unknown_ride_type",
    "bad_trip_duration",
    "duplicate_request_id",
)
DRIVER_REASONS = (
    "missing_driver_id",
    "missing_coordinate",
    "bad_coordinate",
    "unknown_vehicle_type",
    "bad_rating",
    "bad_online_time",
    "bad_shift",
    "duplicate_driver_id",
)


def _col(t: pa.Table, name: str, n: int) -> pa.Array:
    if name in t.column_names:
        return t.column(name).combine_chunks()
    return pa.nulls(n)


def _check_requests(t: pa.Table) -> tuple[Reasons, dict[str, pa.Array], np.ndarray]:
    n = t.num_rows
    r = Reasons(n, REQUEST_REASONS)
    rid, rid_missing = _ids(_col(t, "request_id", n))
    r.flag("missing_request_id", rid_missing)
    rt = _col(t, "request_time", n)
    rt_null = _np_mask(rt)
    r.flag("missing_request_time", rt_null)
    ms, bad_t = _as_ms(rt)
    r.flag("bad_request_time", bad_t & ~rt_null)
    plat_a, plng_a = _col(t, "pickup_lat", n), _col(t, "pickup_lng", n)
    r.flag("missing_pickup_coordinate", _np_mask(plat_a) | _np_mask(plng_a))
    plat, plng = _as_float(plat_a), _as_float(plng_a)
    r.flag("bad_pickup_coordinate", _check_coords(plat, plng))
    dlat_a, dlng_a = _col(t, "dropoff_lat", n), _col(t, "dropoff_lng", n)
    dlat_null, dlng_null = _np_mask(dlat_a), _np_mask(dlng_a)
    dlat, dlng = _as_float(dlat_a), _as_float(dlng_a)
    d_none = dlat_null & dlng_null
    r.flag("bad_dropoff_coordinate", ~d_none & ((dlat_null != dlng_null) | _check_coords(dlat, dlng)))
    ride, unknown = _norm_category(_col(t, "ride_type", n), RIDE_TYPES, "uberx")
    r.flag("unknown_ride_type", unknown)
    dur_a = _col(t, "trip_duration_s", n)
    dur_null = _np_mask(dur_a)
    dur = _as_float(dur_a)
    with np.errstate(invalid="ignore"):
        r.flag("bad_trip_duration", ~dur_null & ~(np.isfinite(dur) & (dur >= 0) & (dur <= MAX_TRIP_S)))
    out = {
        "request_id": rid,
        "request_time": _ts_array(ms, rt_null | bad_t),
        "pickup_lat": _f64_array(plat),
        "pickup_lng": _f64_array(plng),
        "dropoff_lat": _f64_array(dlat, d_none),
        "dropoff_lng": _f64_array(dlng, d_none),
        "ride_type": ride,
        "trip_duration_s": _f64_array(dur, dur_null),
    }
    return r, out, ms


def _check_drivers(t: pa.Table) -> tuple[Reasons, dict[str, pa.Array], np.ndarray]:
    n = t.num_rows
    r = Reasons(n, DRIVER_REASONS)
    did, did_missing = _ids(_col(t, "driver_id", n))
    r.flag("missing_driver_id", did_missing)
    lat_a, lng_a = _col(t, "lat", n), _col(t, "lng", n)
    r.flag("missing_coordinate", _np_mask(lat_a) | _np_mask(lng_a))
    lat, lng = _as_float(lat_a), _as_float(lng_a)
    r.flag("bad_coordinate", _check_coords(lat, lng))
    veh, unknown = _norm_category(_col(t, "vehicle_type", n), VEHICLE_TYPES, "uberx")
    r.flag("unknown_vehicle_type", unknown)
    rat_a = _col(t, "rating", n)
    rat_null = _np_mask(rat_a)
    rat = _as_float(rat_a)
    with np.errstate(invalid="ignore"):
        r.flag("bad_rating", ~rat_null & ~((rat >= 1.0) & (rat <= 5.0)))
    of_a, ou_a = _col(t, "online_from", n), _col(t, "online_until", n)
    of_null, ou_null = _np_mask(of_a), _np_mask(ou_a)
    of_ms, of_bad = _as_ms(of_a)
    ou_ms, ou_bad = _as_ms(ou_a)
    r.flag("bad_online_time", (of_bad & ~of_null) | (ou_bad & ~ou_null))
    r.flag("bad_shift", ~of_null & ~ou_null & (ou_ms < of_ms))
    out = {
        "driver_id": did,
        "lat": _f64_array(lat),
        "lng": _f64_array(lng),
        "vehicle_type": veh,
        "online_from": _ts_array(of_ms, of_null | of_bad),
        "online_until": _ts_array(ou_ms, ou_null | ou_bad),
        "rating": _f64_array(rat, rat_null),
    }
    return r, out, of_ms


@dataclass(frozen=True)
class Kind:
    name: str  # "requests" | "drivers"
    noun: str
    schema: pa.Schema
    required: tuple[str, ...]
    id_col: str
    dup_reason: str
    check: Callable[[pa.Table], tuple[Reasons, dict, np.ndarray]]


REQUEST_ROWS = Kind(
    "requests", "request", REQUESTS, REQUESTS_REQUIRED, "request_id", "duplicate_request_id", _check_requests
)
DRIVER_ROWS = Kind("drivers", "driver", DRIVERS, DRIVERS_REQUIRED, "driver_id", "duplicate_driver_id", _check_drivers)
