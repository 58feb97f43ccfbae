"""Traces on disk (docs/trace.md): open, check, stream, validate and write them.

A trace is a Parquet file or a folder of Parquet files read as one dataset
(hidden files and files starting with ``_`` are skipped; files are read in
sorted path order). Every reader here streams row group by row group and
normalizes each slice to the exact Arrow schema of :mod:`matcher.io.schemas`
(``REQUESTS`` / ``DRIVERS``; timestamps ``timestamp[ms, UTC]``, coordinates
``float64``, strings ``string``).

Accepted input types (anything else is "the wrong type" and rejects the file):

* strings: ``string``, ``large_string``, ``string_view`` or a dictionary of
  those; ids (``request_id``, ``driver_id``) may also be integers (cast to
  their decimal text);
* timestamps: any unit and any time zone; a naive timestamp is UTC;
* numbers (coordinates, ``trip_duration_s``, ``rating``): any float, integer or
  decimal type (cast to ``float64``); ``trip_duration_s`` may also be a
  ``duration``;
* a column of Arrow type ``null`` (all values missing) is accepted for any
  column: its rows are then missing that value.

Bad rows never stop a run: each one is left out and kept, with the reason, in
the quarantine table (``QUARANTINE_BASE`` columns ``source``, ``row``,
``reason`` followed by the row's original columns as text). ``row`` is the
0-based row number in the input (over all files of a folder, in sorted path
order). The first failing check names the reason. Request reasons, in the
order checked: ``missing_request_id`` (null or empty), ``missing_request_time``,
``bad_request_time`` (outside 1900..2200), ``missing_pickup_coordinate``,
``bad_pickup_coordinate`` (NaN, inf or outside lat -90..90 / lng -180..180),
``bad_dropoff_coordinate`` (same rules; or only one of the two given),
``unknown_ride_type`` (compared trimmed and case-insensitively; null or empty
means ``uberx``), ``bad_trip_duration`` (negative, NaN or inf; null is fine),
``duplicate_request_id`` (the first otherwise-valid row with an id stays, later
ones are quarantined). Driver reasons: ``missing_driver_id``,
``missing_coordinate``, ``bad_coordinate``, ``unknown_vehicle_type``,
``bad_rating`` (outside 1..5 or NaN), ``bad_online_time`` (outside 1900..2200),
``bad_shift`` (online_until before online_from), ``duplicate_driver_id``.

Request times need not be sorted: :func:`read_requests` returns the valid rows
sorted by (request_time, input row). :func:`iter_requests` streams in input
order.

Whole-file problems (unreadable, not Parquet, truncated, missing required
column, wrong column type, no valid request at all) raise
:class:`~matcher.errors.TraceError` with a message naming the file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from matcher.config import RIDE_TYPES, VEHICLE_TYPES
from matcher.errors import MatcherError, TraceError
from matcher.io.atomic import temp_name
from matcher.io.schemas import DRIVERS, DRIVERS_REQUIRED, QUARANTINE_BASE, REQUESTS, REQUESTS_REQUIRED, TS

__all__ = [
    "ROW_GROUP_ROWS",
    "AtomicParquetWriter",
    "ValidationReport",
    "check_schema",
    "concat_quarantine",
    "empty_quarantine",
    "iter_drivers",
    "iter_requests",
    "open_dataset",
    "quarantine_table",
    "read_drivers",
    "read_requests",
    "validate",
    "write_quarantine",
    "write_table",
]

ROW_GROUP_ROWS = 128 * 1024
DEFAULT_BATCH_ROWS = 65_536

# Plausible instants (ms since the epoch): 1900-01-01 .. 2200-01-01 UTC.
MIN_MS = -2_208_988_800_000
MAX_MS = 7_258_118_400_000
_UNIT_MS = {"s": 1000, "ms": 1, "us": 1 / 1000, "ns": 1 / 1_000_000}


# --------------------------------------------------------------------------- opening


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # Arrow repeats the path and a lot of context; keep the tail that says what is wrong.
    for marker in (
        "Parquet magic bytes",
        "smaller than the minimum",
        "Couldn't deserialize",
        "No such file",
        "is a directory",
        "Permission denied",
    ):
        i = text.find(marker)
        if i >= 0:
            text = text[i:]
            break
    return text if len(text) <= 160 else text[:157] + "..."


def _unreadable(path, exc: BaseException) -> TraceError:
    return TraceError(f"{path}: not a readable Parquet trace ({_short(exc)})")


def open_dataset(path) -> ds.FileSystemDataset:
    """The Parquet file or folder of Parquet files at ``path`` as one dataset.

    Every file's footer is read once here, so a non-Parquet or truncated file
    anywhere in a folder is reported before any row is read.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TraceError(f"{path}: not a readable Parquet trace (no such file or folder)")
    try:
        dataset = ds.dataset(path, format="parquet")
    except (OSError, pa.ArrowException, ValueError) as e:
        raise _unreadable(path, e) from None
    files = sorted(dataset.files)
    if not files:
        raise TraceError(f"{path}: not a readable Parquet trace (no Parquet file in this folder)")
    for f in files:
        _parquet_file(dataset, f).close()
    return dataset


def _parquet_file(dataset: ds.FileSystemDataset, f: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(dataset.filesystem.open_input_file(f))
    except (OSError, pa.ArrowException, ValueError) as e:
        raise _unreadable(f, e) from None


# --------------------------------------------------------------------------- schema


def _base_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_stringish(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)


def _accepts(name: str, target: pa.DataType, actual: pa.DataType) -> bool:
    actual = _base_type(actual)
    if pa.types.is_null(actual):
        return True
    if pa.types.is_string(target):
        return _is_stringish(actual) or (name.endswith("_id") and pa.types.is_integer(actual))
    if pa.types.is_timestamp(target):
        return pa.types.is_timestamp(actual)
    if pa.types.is_floating(target):
        return _is_number(actual) or (name == "trip_duration_s" and pa.types.is_duration(actual))
    return actual == target


def _expected(name: str, target: pa.DataType) -> str:
    if pa.types.is_string(target):
        return "a string" + (" or integer" if name.endswith("_id") else "")
    if pa.types.is_timestamp(target):
        return "a timestamp (any unit; naive = UTC)"
    return "a number (float64)"


_KIND_SCHEMA = {"requests": REQUESTS, "drivers": DRIVERS}


def check_schema(schema: pa.Schema, required: Iterable[str], kind: str, path) -> None:
    """Raise TraceError if ``schema`` lacks a required column or has a contract column of the wrong type.

    ``kind`` is ``"requests"`` or ``"drivers"`` (which contract table); extra columns are ignored.
    """
    target = _KIND_SCHEMA[kind]
    names = schema.names
    for name in required:
        if name not in names:
            raise TraceError(
                f"{path}: missing required column '{name}' ({kind} trace; has: {', '.join(names) or 'no column'})"
            )
    for f in target:
        n = names.count(f.name)
        if n == 0:
            continue
        if n > 1:
            raise TraceError(f"{path}: column '{f.name}' appears {n} times")
        actual = schema.field(f.name).type
        if not _accepts(f.name, f.type, actual):
            raise TraceError(f"{path}: column '{f.name}' has type {actual}, expected {_expected(f.name, f.type)}")


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
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(lat) & np.isfinite(lng) & (np.abs(lat) <= 90.0) & (np.abs(lng) <= 180.0)
    return ~ok


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


class _Reasons:
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


def _check_requests(t: pa.Table) -> tuple[_Reasons, dict[str, pa.Array], np.ndarray]:
    n = t.num_rows
    r = _Reasons(n, REQUEST_REASONS)
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
        r.flag("bad_trip_duration", ~dur_null & ~(np.isfinite(dur) & (dur >= 0)))
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


def _check_drivers(t: pa.Table) -> tuple[_Reasons, dict[str, pa.Array], np.ndarray]:
    n = t.num_rows
    r = _Reasons(n, DRIVER_REASONS)
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
class _Kind:
    name: str  # "requests" | "drivers"
    noun: str
    schema: pa.Schema
    required: tuple[str, ...]
    id_col: str
    dup_reason: str
    check: Callable[[pa.Table], tuple[_Reasons, dict, np.ndarray]]


_REQUESTS = _Kind(
    "requests", "request", REQUESTS, REQUESTS_REQUIRED, "request_id", "duplicate_request_id", _check_requests
)
_DRIVERS = _Kind("drivers", "driver", DRIVERS, DRIVERS_REQUIRED, "driver_id", "duplicate_driver_id", _check_drivers)


# --------------------------------------------------------------------------- streaming


@dataclass
class _Stats:
    files: int = 0
    rows: int = 0
    valid: int = 0
    quarantined: Counter = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None
    sorted: bool = True
    _prev_ms: int | None = None

    def times(self, ms: np.ndarray) -> None:
        if not len(ms):
            return
        lo, hi = int(ms.min()), int(ms.max())
        self.first_ms = lo if self.first_ms is None else min(self.first_ms, lo)
        self.last_ms = hi if self.last_ms is None else max(self.last_ms, hi)
        if self.sorted and (
            (self._prev_ms is not None and int(ms[0]) < self._prev_ms)
            or (len(ms) > 1 and bool((np.diff(ms) < 0).any()))
        ):
            self.sorted = False
        self._prev_ms = int(ms[-1])


def _dedupe(ids: pa.Array, ok: np.ndarray, seen: set) -> np.ndarray:
    """Mask of rows (among ``ok``) whose id was already seen; adds the new ids to ``seen``."""
    dup = np.zeros(len(ids), bool)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return dup
    vals = ids.take(pa.array(idx)).to_pylist()
    fresh = set(vals)
    if len(fresh) == len(vals) and seen.isdisjoint(fresh):
        seen |= fresh  # the common case: no duplicate, all in C
        return dup
    for i, v in zip(idx, vals):
        if v in seen:
            dup[i] = True
        else:
            seen.add(v)
    return dup


def _scan(
    kind: _Kind, path, batch_rows: int, on_quarantine: Callable[[pa.Table], None] | None, stats: _Stats
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Valid normalized batches with their input row numbers, in input order."""
    if batch_rows <= 0:
        raise ValueError("batch_rows must be > 0")
    dataset = open_dataset(path)
    files = sorted(dataset.files)
    for f in files:
        with _parquet_file(dataset, f) as pf:
            check_schema(pf.schema_arrow, kind.required, kind.name, f)
    stats.files = len(files)
    wanted = [fld.name for fld in kind.schema]
    seen: set = set()
    row0 = 0
    for f in files:
        pf = _parquet_file(dataset, f)
        try:
            names = pf.schema_arrow.names
            present = [c for c in wanted if c in names]
            extras = [c for c in names if c not in present]  # read only if a row is quarantined
            for rg in range(pf.metadata.num_row_groups):
                try:
                    t = pf.read_row_group(rg, columns=present)
                except (OSError, pa.ArrowException, ValueError) as e:
                    raise _unreadable(f, e) from None
                full: pa.Table | None = None
                for off in range(0, t.num_rows, batch_rows):
                    part = t.slice(off, batch_rows)
                    n = part.num_rows
                    reasons, out, times = kind.check(part)
                    dup = _dedupe(out[kind.id_col], reasons.ok, seen)
                    reasons.flag(kind.dup_reason, dup)
                    ok = reasons.ok
                    rows = np.arange(row0 + off, row0 + off + n, dtype=np.int64)
                    stats.rows += n
                    bad = np.flatnonzero(~ok)
                    if len(bad):
                        names_bad = [reasons.names[c - 1] for c in reasons.code[bad]]
                        stats.quarantined.update(names_bad)
                        if on_quarantine is not None:
                            if full is None:  # every original column, only for row groups with a bad row
                                if extras:
                                    try:
                                        full = pf.read_row_group(rg)
                                    except (OSError, pa.ArrowException, ValueError) as e:
                                        raise _unreadable(f, e) from None
                                else:
                                    full = t
                            orig = full.slice(off, n).take(pa.array(bad))
                            on_quarantine(quarantine_table(kind.name, rows[bad], names_bad, orig))
                    good = np.flatnonzero(ok)
                    if not len(good):
                        continue
                    take = pa.array(good)
                    batch = pa.RecordBatch.from_arrays([out[c].take(take) for c in wanted], schema=kind.schema)
                    stats.valid += len(good)
                    stats.times(times[good])
                    yield batch, rows[good]
                row0 += t.num_rows
        finally:
            pf.close()
    if stats.valid == 0:
        why = "0 rows" if stats.rows == 0 else f"all {stats.rows} rows quarantined: " + _reason_text(stats.quarantined)
        raise TraceError(f"{path}: holds no {kind.noun} ({why})")


def _reason_text(counts: Counter | dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _collector(quarantine: list | None):
    return None if quarantine is None else quarantine.append


def iter_requests(
    path, batch_rows: int = DEFAULT_BATCH_ROWS, quarantine: list | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream the valid requests of a trace as record batches of schema REQUESTS, in input order.

    Reads one row group at a time and cuts it into slices of at most ``batch_rows`` input rows
    (one batch per slice that keeps a row). Quarantined rows are appended to ``quarantine`` (a list,
    one pa.Table per slice) when given. Raises TraceError up front for an unusable file and at the
    end if no row was valid.
    """
    for batch, _rows in _scan(_REQUESTS, path, batch_rows, _collector(quarantine), _Stats()):
        yield batch


def iter_drivers(
    path, batch_rows: int = DEFAULT_BATCH_ROWS, quarantine: list | None = None
) -> Iterator[pa.RecordBatch]:
    """As :func:`iter_requests`, for a driver file (schema DRIVERS)."""
    for batch, _rows in _scan(_DRIVERS, path, batch_rows, _collector(quarantine), _Stats()):
        yield batch


def concat_quarantine(tables: list[pa.Table]) -> pa.Table:
    """One quarantine table from pieces with possibly different original columns (missing ones are null)."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return empty_quarantine()
    out = pa.concat_tables(tables, promote_options="permissive")
    return out


def _read(kind: _Kind, path, sort: bool) -> tuple[pa.Table, pa.Table]:
    q: list[pa.Table] = []
    batches, rows = [], []
    for b, r in _scan(kind, path, DEFAULT_BATCH_ROWS * 4, q.append, _Stats()):
        batches.append(b)
        rows.append(r)
    valid = pa.Table.from_batches(batches, schema=kind.schema)
    if sort and valid.num_rows:
        order = np.lexsort((np.concatenate(rows), valid.column("request_time").cast(pa.int64()).to_numpy()))
        valid = valid.take(pa.array(order))
    return valid.combine_chunks(), concat_quarantine(q)


def read_requests(path) -> tuple[pa.Table, pa.Table]:
    """(valid requests sorted by (request_time, input row), quarantined rows) of a trace."""
    return _read(_REQUESTS, path, sort=True)


def read_drivers(path) -> tuple[pa.Table, pa.Table]:
    """(valid drivers in input order, quarantined rows) of a driver file."""
    return _read(_DRIVERS, path, sort=False)


# --------------------------------------------------------------------------- writing


def _conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    n = table.num_rows
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                col = col.cast(f.type)
        elif f.nullable:
            col = pa.nulls(n, f.type)
        else:
            raise ValueError(f"table lacks required column {f.name!r}")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


class AtomicParquetWriter:
    """Streams tables into ``path`` (zstd, row groups of ``row_group_rows``) via a hidden temporary
    file in the same folder, renamed into place on :meth:`close`. On error (or :meth:`abort`) the
    temporary file is removed and ``path`` is left untouched: never a partial file at ``path``.
    """

    def __init__(self, path, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS, compression: str = "zstd"):
        self.path = os.fspath(path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        folder = os.path.dirname(os.path.abspath(self.path))
        self.tmp = os.fspath(temp_name(self.path))
        try:
            if os.path.isdir(self.path):
                raise IsADirectoryError(f"{self.path} is a folder")
            os.makedirs(folder, exist_ok=True)
            self._writer = pq.ParquetWriter(self.tmp, schema, compression=compression)
        except (OSError, pa.ArrowException) as e:
            raise MatcherError(f"{self.path}: cannot write ({_short(e)})") from None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0
        self._done = False

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        t = _conform(table, self.schema)
        if not t.num_rows:
            return
        self._pending.append(t)
        self._pending_rows += t.num_rows
        self.rows += t.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        t = pa.concat_tables(self._pending)
        full = (t.num_rows // self.row_group_rows) * self.row_group_rows
        cut = t.num_rows if final else full
        if cut:
            self._writer.write_table(t.slice(0, cut), row_group_size=self.row_group_rows)
        rest = t.slice(cut)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> str:
        if self._done:
            return self.path
        try:
            self._flush(final=True)
            self._writer.close()
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already failing; the temp file goes anyway
            pass
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_table(table: pa.Table, path, schema: pa.Schema | None = None) -> str:
    """Write ``table`` (conformed to ``schema`` when given) atomically to ``path``: zstd, ~128k-row row groups."""
    schema = schema if schema is not None else table.schema
    with AtomicParquetWriter(path, schema) as w:
        w.write(table)  # an empty table gives a valid file with the schema and no row group
    return os.fspath(path)


def write_quarantine(tables: list[pa.Table], path) -> str:
    """Write the quarantined rows (pieces from any readers) to ``path`` atomically; an empty file when none."""
    t = concat_quarantine(list(tables))
    for f in QUARANTINE_BASE:
        if f.name not in t.column_names:
            t = t.append_column(f, pa.nulls(t.num_rows, f.type))
    names = list(QUARANTINE_BASE.names) + [n for n in t.column_names if n not in QUARANTINE_BASE.names]
    t = t.select(names)
    return write_table(t, path, t.schema)


# --------------------------------------------------------------------------- validate


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass
class ValidationReport:
    """What :func:`validate` found. ``ok`` is False only if the file would be rejected (TraceError);
    quarantined rows alone keep it ok: a replay leaves them out and writes them to OUT/quarantine.parquet."""

    path: str
    kind: str = "requests"
    ok: bool = True
    error: str | None = None
    files: int = 0
    rows: int = 0
    valid: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    first: str | None = None  # earliest valid request_time (requests) / online_from (drivers), UTC
    last: str | None = None
    sorted: bool = True  # valid rows already in time order
    drivers: ValidationReport | None = None

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def format(self) -> str:
        lines = [self._line()]
        if self.drivers is not None:
            lines.append(self.drivers._line())
        return "\n".join(lines)

    def _line(self) -> str:
        if self.error:
            return f"rejected: {self.error}"
        noun = "requests" if self.kind == "requests" else "drivers"
        text = (
            f"ok: {self.path}: {self.rows:,} rows in {self.files} file{'s' if self.files != 1 else ''}, "
            f"{self.valid:,} valid {noun}"
        )
        if self.kind == "requests" and self.first:
            text += f" from {self.first} to {self.last}" + (
                "" if self.sorted else " (not in time order: replay sorts them)"
            )
        if self.quarantined:
            text += (
                f"; {self.quarantined_total:,} quarantined ({_reason_text(self.quarantined)}),"
                " left out of a replay and written to OUT/quarantine.parquet"
            )
        else:
            text += "; nothing quarantined"
        return text


def _validate_one(kind: _Kind, path) -> ValidationReport:
    stats = _Stats()
    rep = ValidationReport(path=os.fspath(path), kind=kind.name)
    try:
        for _ in _scan(kind, path, DEFAULT_BATCH_ROWS * 4, None, stats):
            pass
    except TraceError as e:
        rep.ok, rep.error = False, str(e)
    rep.files, rep.rows, rep.valid = stats.files, stats.rows, stats.valid
    rep.quarantined = dict(sorted(stats.quarantined.items()))
    if kind is _REQUESTS:
        rep.first, rep.last, rep.sorted = _fmt_ms(stats.first_ms), _fmt_ms(stats.last_ms), stats.sorted
    return rep


def validate(trace, drivers=None) -> ValidationReport:
    """Check a trace (and optionally a driver file) without replaying it; never raises for a bad file."""
    rep = _validate_one(_REQUESTS, trace)
    if drivers is not None:
        rep.drivers = _validate_one(_DRIVERS, drivers)
        rep.ok = rep.ok and rep.drivers.ok
    return rep
