"""Traces on disk (docs/trace.md): stream, read and validate them.

The work is split by job: :mod:`matcher.io.dataset` finds and opens the files
(hive partitions included), :mod:`matcher.io.rows` normalizes and checks rows,
:mod:`matcher.io.writers` writes Parquet atomically; this module streams a
trace through them and is the public face of all four (their public names are
re-exported here).

A trace is a Parquet file or a folder of Parquet files read as one dataset
(hidden files and files starting with ``_`` are skipped; files are read in
sorted path order; ``KEY=VALUE`` folders are hive partitions whose values are
read as columns). Every reader here streams row group by row group and
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
means ``uberx``), ``bad_trip_duration`` (negative, over a day, NaN or inf; null is fine),
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matcher.errors import TraceError
from matcher.io.atomic import short_error
from matcher.io.dataset import check_schema, file_schema, open_dataset, open_parquet, partition_columns
from matcher.io.rows import (
    DRIVER_ROWS,
    MAX_MS,
    MIN_MS,
    REQUEST_ROWS,
    Kind,
    Reasons,
    empty_quarantine,
    quarantine_table,
)
from matcher.io.writers import ROW_GROUP_ROWS, AtomicParquetWriter, concat_quarantine, write_quarantine, write_table

__all__ = [
    "MAX_MS",
    "MIN_MS",
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

DEFAULT_BATCH_ROWS = 65_536


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


class _File:
    """One file of a trace, read row group by row group with its partition columns appended.

    Only the contract columns are read for the row checks; every original column
    (:meth:`original`) only for a row group that has a row to quarantine.
    """

    def __init__(self, kind: Kind, f: str, parts: tuple[tuple[str, str | None], ...]):
        self.kind, self.f, self.parts = kind, f, parts
        self.pf: pq.ParquetFile = open_parquet(f)
        names = self.pf.schema_arrow.names
        self.wanted = [c for c in kind.schema.names if c in names]
        self.all_names = len(self.wanted) == len(names)
        self._rg = -1
        self._full: pa.Table | None = None

    def _read(self, rg: int, columns: list[str] | None) -> pa.Table:
        try:
            t = self.pf.read_row_group(rg, columns=columns)
        except (OSError, pa.ArrowException, ValueError) as e:
            raise TraceError(f"{self.f}: not a readable Parquet trace ({short_error(e)})") from None
        for name, col in partition_columns(self.parts, t.num_rows, self.kind.schema, self.f).items():
            t = t.append_column(name, col)
        return t

    def row_groups(self) -> Iterator[pa.Table]:
        for rg in range(self.pf.metadata.num_row_groups):
            self._rg, self._full = rg, None
            yield self._read(rg, self.wanted)

    def original(self, current: pa.Table) -> pa.Table:
        """Every column of the current row group (``current`` itself if it already holds them all)."""
        if self.all_names:
            return current
        if self._full is None:
            self._full = self._read(self._rg, None)
        return self._full

    def close(self) -> None:
        self.pf.close()


def _open_checked(kind: Kind, path) -> list[tuple[str, tuple]]:
    """(file, partition values) of every file of the trace, each checked against the contract's columns."""
    tf = open_dataset(path)
    for f, parts in zip(tf.files, tf.partitions):
        with open_parquet(f) as pf:
            check_schema(file_schema(pf, parts, f), kind.required, kind.name, f, partition_keys=tf.keys)
    return list(zip(tf.files, tf.partitions))


def _check_slice(kind: Kind, part: pa.Table, seen: set) -> tuple[Reasons, dict[str, pa.Array], np.ndarray]:
    """The row checks of one slice, duplicates of earlier ids included."""
    reasons, out, times = kind.check(part)
    reasons.flag(kind.dup_reason, _dedupe(out[kind.id_col], reasons.ok, seen))
    return reasons, out, times


def _quarantined(kind: Kind, reasons: Reasons, rows: np.ndarray, original: pa.Table) -> tuple[list[str], pa.Table]:
    """The reasons of a slice's bad rows and their quarantine table (``original``: the slice, every column)."""
    bad = np.flatnonzero(~reasons.ok)
    names = [reasons.names[c - 1] for c in reasons.code[bad]]
    return names, quarantine_table(kind.name, rows[bad], names, original.take(pa.array(bad)))


def _valid_batch(kind: Kind, out: dict[str, pa.Array], good: np.ndarray) -> pa.RecordBatch:
    take = pa.array(good)
    return pa.RecordBatch.from_arrays([out[c].take(take) for c in kind.schema.names], schema=kind.schema)


def _scan(
    kind: Kind, path, batch_rows: int, on_quarantine: Callable[[pa.Table], None] | None, stats: _Stats
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Valid normalized batches with their input row numbers, in input order (files, row groups, slices)."""
    if batch_rows <= 0:
        raise ValueError("batch_rows must be > 0")
    files = _open_checked(kind, path)
    stats.files = len(files)
    seen: set = set()
    row0 = 0
    for f, parts in files:
        src = _File(kind, f, parts)
        try:
            for t in src.row_groups():
                for off in range(0, t.num_rows, batch_rows):
                    part = t.slice(off, batch_rows)
                    reasons, out, times = _check_slice(kind, part, seen)
                    rows = np.arange(row0 + off, row0 + off + part.num_rows, dtype=np.int64)
                    stats.rows += part.num_rows
                    if not reasons.ok.all():
                        names, q = _quarantined(kind, reasons, rows, src.original(t).slice(off, part.num_rows))
                        stats.quarantined.update(names)
                        if on_quarantine is not None:
                            on_quarantine(q)
                    good = np.flatnonzero(reasons.ok)
                    if len(good):
                        stats.valid += len(good)
                        stats.times(times[good])
                        yield _valid_batch(kind, out, good), rows[good]
                row0 += t.num_rows
        finally:
            src.close()
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
    for batch, _rows in _scan(REQUEST_ROWS, path, batch_rows, _collector(quarantine), _Stats()):
        yield batch


def iter_drivers(
    path, batch_rows: int = DEFAULT_BATCH_ROWS, quarantine: list | None = None
) -> Iterator[pa.RecordBatch]:
    """As :func:`iter_requests`, for a driver file (schema DRIVERS)."""
    for batch, _rows in _scan(DRIVER_ROWS, path, batch_rows, _collector(quarantine), _Stats()):
        yield batch


def _read(kind: Kind, path, sort: bool) -> tuple[pa.Table, pa.Table]:
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
    return _read(REQUEST_ROWS, path, sort=True)


def read_drivers(path) -> tuple[pa.Table, pa.Table]:
    """(valid drivers in input order, quarantined rows) of a driver file."""
    return _read(DRIVER_ROWS, path, sort=False)


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


def _validate_one(kind: Kind, path) -> ValidationReport:
    stats = _Stats()
    rep = ValidationReport(path=os.fspath(path), kind=kind.name)
    try:
        for _ in _scan(kind, path, DEFAULT_BATCH_ROWS * 4, None, stats):
            pass
    except TraceError as e:
        rep.ok, rep.error = False, str(e)
    rep.files, rep.rows, rep.valid = stats.files, stats.rows, stats.valid
    rep.quarantined = dict(sorted(stats.quarantined.items()))
    if kind is REQUEST_ROWS:
        rep.first, rep.last, rep.sorted = _fmt_ms(stats.first_ms), _fmt_ms(stats.last_ms), stats.sorted
    return rep


def validate(trace, drivers=None) -> ValidationReport:
    """Check a trace (and optionally a driver file) without replaying it; never raises for a bad file."""
    rep = _validate_one(REQUEST_ROWS, trace)
    if drivers is not None:
        rep.drivers = _validate_one(DRIVER_ROWS, drivers)
        rep.ok = rep.ok and rep.drivers.ok
    return rep
