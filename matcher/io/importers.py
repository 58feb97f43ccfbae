"""Public trip data to traces (docs/trace.md): `matcher import SOURCE FILE... --out TRACE`.

Two sources, both New York records with New York local times:

* ``nyc-uber-2014``: FiveThirtyEight's Uber 2014 CSV (``Date/Time,Lat,Lon,Base``,
  dates written ``2014/4/1 00:11:00`` or ``4/1/2014 0:11:00``). The data has
  pickups only: ``request_time`` is the pickup time, no dropoff, no duration,
  ``ride_type`` ``uberx``. Every row is a distinct pickup (identical rows are
  real distinct pickups in the same minute and are all kept).
  ``request_id`` = ``uber14-<yyyymm>-<row>``: the local month of the file's first
  pickup and the 0-based data row in that file, zero padded to 7 digits.
* ``tlc-yellow``: NYC TLC yellow-taxi trip CSV with coordinates (2009-2016).
  The layout is detected from the header: 2015 (``tpep_pickup_datetime``,
  ``RateCodeID``), 2016 (``RatecodeID``), 2010-2014 (``pickup_datetime``) and
  2009 (``Trip_Pickup_DateTime``, ``Start_Lon``...). Pickup and dropoff points
  are kept; ``trip_duration_s`` = dropoff time - pickup time (both converted to
  UTC first, so a trip across a DST change has its true length; a dropoff in
  the repeated fall-back hour that would come before its pickup is read as the
  second occurrence).
  ``request_id`` = ``tlc-<file stem>-<row>`` (row zero padded to 8 digits).
  A dropoff point at 0,0 or missing becomes a missing dropoff (the row stays).

Local time to UTC (:func:`local_to_utc`) follows Python's ``zoneinfo`` with
``fold=0``: an ambiguous fall-back time (01:00-01:59 on the first Sunday of
November) is the first occurrence (EDT); a non-existent spring-forward time
(02:00-02:59 on the second Sunday of March, which only a clock that has not
yet moved can show) is read with the offset before the change (EST), i.e.
02:30 -> 07:30 UTC. Vectorized with ``pyarrow.compute.assume_timezone``.

Bad rows are quarantined, never dropped silently: ``missing_gps`` (pickup point
missing or with a coordinate exactly 0: the TLC's marker of no GPS fix),
``bad_pickup_coordinate`` (NaN or outside lat -90..90 / lng -180..180),
``bad_pickup_time`` (unparseable), ``bad_trip_duration`` (dropoff not after
pickup), ``malformed_csv_row`` (wrong number of fields; ``row`` is then the CSV
line number, or -1 if unknown). They go to ``<out stem>.quarantine.parquet``
beside the output (QUARANTINE_BASE columns with ``source`` = the CSV file name,
then the CSV columns as text); a stale one from an earlier import of the same
``out`` is removed when there is none.

``day`` (``--day YYYY-MM-DD``) keeps the rows whose local pickup date is that
day; ids are numbered before filtering, so they match a full import.

CSV files are read with pyarrow.csv (``.gz``/``.bz2`` transparently), one file
at a time in blocks; the converted rows (about 100 bytes each) are held in
memory to sort the whole trace by time and written with
:func:`matcher.io.trace.write_table` (atomic).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from matcher.core import geo
from matcher.errors import MatcherError, TraceError
from matcher.io.schemas import REQUESTS, TS
from matcher.io.trace import concat_quarantine, quarantine_table, write_quarantine, write_table

__all__ = ["IMPORTERS", "ImportReport", "import_nyc_uber_2014", "import_tlc_yellow", "local_to_utc", "quarantine_path"]

NY = "America/New_York"
BLOCK_BYTES = 16 << 20


# --------------------------------------------------------------------------- time


def local_to_utc(naive: pa.Array, tz: str = NY, ambiguous: str = "earliest") -> pa.Array:
    """Naive local wall-clock timestamps in ``tz`` -> timestamp[ms, UTC], as zoneinfo with fold=0.

    Ambiguous times take the earlier instant (``ambiguous="latest"``: the later one, as fold=1);
    non-existent times use the offset in force before the gap (02:30 on a spring-forward night in
    New York -> 07:30 UTC). Nulls stay null.
    """
    if isinstance(naive, pa.ChunkedArray):
        naive = naive.combine_chunks()
    t = naive.cast(pa.timestamp("ms"))
    # nonexistent="earliest" gives the last instant before the gap, whose local offset is the one
    # before the change; utc = local - offset(r0) is then exact for every row (for ordinary and
    # ambiguous rows local_timestamp(r0) == t).
    r0 = pc.assume_timezone(t, timezone=tz, ambiguous=ambiguous, nonexistent="earliest")
    local = pc.local_timestamp(r0).cast(pa.int64())
    offset = pc.subtract(local, r0.cast(pa.int64()))
    return pc.subtract(t.cast(pa.int64()), offset).cast(TS)


_UBER_FORMATS = ("%Y/%m/%d %H:%M:%S", "%m/%d/%Y %H:%M:%S", "%Y/%m/%d %H:%M", "%m/%d/%Y %H:%M")
_TLC_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M")


def _parse_times(s: pa.Array, formats: tuple[str, ...]) -> pa.Array:
    """Naive timestamp[s] from text in any of ``formats`` (null where none fits)."""
    s = pc.utf8_trim_whitespace(s)
    out = None
    for fmt in formats:
        got = pc.strptime(s, format=fmt, unit="s", error_is_null=True)
        out = got if out is None else pc.coalesce(out, got)
        if out.null_count == 0:
            break
    return out


_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def _parse_floats(s: pa.Array) -> np.ndarray:
    """float64 with NaN where the text is empty or not a plain decimal number."""
    s = pc.utf8_trim_whitespace(s)
    good = pc.fill_null(pc.match_substring_regex(s, _NUMBER), False)
    s = pc.if_else(good, s, pa.scalar(None, pa.string()))
    return np.asarray(s.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


# --------------------------------------------------------------------------- CSV


def _read_header(path: str) -> list[str]:
    try:
        with pa.input_stream(path, compression="detect") as f:
            head = f.read(1 << 16)
    except (OSError, pa.ArrowException) as e:
        raise TraceError(f"{path}: cannot read ({' '.join(str(e).split())[:160]})") from None
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    line = text.splitlines()[0] if text else ""
    names = next(csv.reader(io.StringIO(line)), [])
    if not names:
        raise TraceError(f"{path}: empty file (no CSV header)")
    return names


def _stream_csv(path: str, names: list[str], bad_rows: list[tuple[int, str]]):
    """Record batches with every column as text, in file order; malformed lines go to ``bad_rows``."""

    def on_invalid(row) -> str:
        bad_rows.append((row.number if row.number is not None else -1, row.text))
        return "skip"

    try:
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
            parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (OSError, pa.ArrowException) as e:
        raise TraceError(f"{path}: not a readable CSV file ({' '.join(str(e).split())[:160]})") from None
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as e:
            raise TraceError(f"{path}: CSV read failed ({' '.join(str(e).split())[:160]})") from None
        yield batch


def _find(names: list[str], *candidates: str) -> str | None:
    norm = {n.strip().lower(): n for n in names}
    for c in candidates:
        if c.lower() in norm:
            return norm[c.lower()]
    return None


def _file_stem(path: str) -> str:
    name = os.path.basename(path)
    for ext in (".gz", ".bz2", ".zst", ".xz"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.lower().endswith(".csv"):
        name = name[:-4]
    return name


def quarantine_path(out: str) -> str:
    """``<out stem>.quarantine.parquet`` beside ``out``."""
    out = os.fspath(out)
    stem = out[:-8] if out.endswith(".parquet") else out
    return stem + ".quarantine.parquet"


# --------------------------------------------------------------------------- report


@dataclass
class ImportReport:
    source: str
    out: str
    files: list[str] = field(default_factory=list)
    layouts: dict[str, str] = field(default_factory=dict)  # file -> detected header layout
    rows_read: int = 0
    rows_written: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    outside_day: int = 0  # rows left out by ``day`` (not quarantined: they are fine, just not asked for)
    day: str | None = None
    first: datetime | None = None  # earliest request_time written (UTC)
    last: datetime | None = None
    quarantine_file: str | None = None

    def __str__(self) -> str:
        names = ", ".join(
            os.path.basename(f) + (f" ({self.layouts[f]})" if f in self.layouts else "") for f in self.files
        )
        text = (
            f"{self.source}: read {self.rows_read:,} rows from {len(self.files)} file"
            f"{'s' if len(self.files) != 1 else ''} ({names}); wrote {self.rows_written:,} requests to {self.out}"
        )
        if self.day:
            text += f" (local day {self.day}; {self.outside_day:,} rows of other days left out)"
        if self.first is not None:
            span_h = (self.last - self.first).total_seconds() / 3600
            text += f", {self.first:%Y-%m-%d %H:%M}Z to {self.last:%Y-%m-%d %H:%M}Z ({span_h:,.1f} h)"
        if self.quarantined:
            q = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantined.items(), key=lambda kv: (-kv[1], kv[0])))
            text += f"; quarantined {sum(self.quarantined.values()):,} ({q}) to {self.quarantine_file}"
        else:
            text += "; nothing quarantined"
        return text + "."


# --------------------------------------------------------------------------- the shared pipeline


@dataclass
class _Converted:
    """One CSV batch turned into requests: ``reason`` is '' for a good row."""

    request_id: pa.Array | None  # filled by the pipeline
    local: pa.Array  # naive local pickup time (timestamp[s])
    utc: pa.Array  # timestamp[ms, UTC]
    lat: np.ndarray
    lng: np.ndarray
    reason: np.ndarray  # object array of str
    dropoff_lat: np.ndarray | None = None
    dropoff_lng: np.ndarray | None = None
    duration: np.ndarray | None = None


def _ms(ts: pa.Array) -> np.ndarray:
    """float64 ms since the epoch, NaN for null."""
    return np.asarray(ts.cast(pa.int64()).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))


def _ids(prefix: str, rows: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pa.array(rows, pa.int64()).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), text, "")


def _pickup_reasons(plat: np.ndarray, plng: np.ndarray, t_null: np.ndarray) -> np.ndarray:
    reason = np.full(len(plat), "", dtype=object)
    missing = np.isnan(plat) | np.isnan(plng) | (plat == 0.0) | (plng == 0.0)
    bad = ~geo.valid_coords(plat, plng)
    reason[t_null] = "bad_pickup_time"
    reason[(reason == "") & missing] = "missing_gps"
    reason[(reason == "") & bad] = "bad_pickup_coordinate"
    return reason


def _run(
    source: str,
    files: list[str],
    out: str,
    day: str | None,
    open_file: Callable[[str, list[str], ImportReport], Callable[[pa.RecordBatch, int], _Converted]],
) -> ImportReport:
    if not files:
        raise MatcherError(f"import {source}: no input file")
    the_day = None
    if day is not None:
        try:
            the_day = date.fromisoformat(str(day))
        except ValueError:
            raise MatcherError(f"--day {day!r}: expected YYYY-MM-DD") from None
    report = ImportReport(
        source=source,
        out=os.fspath(out),
        files=[os.fspath(f) for f in files],
        day=the_day.isoformat() if the_day else None,
    )
    quarantined: Counter = Counter()
    q_tables: list[pa.Table] = []
    parts: list[pa.Table] = []
    for fi, path in enumerate(report.files):
        if not os.path.isfile(path):
            raise TraceError(f"{path}: no such file")
        names = _read_header(path)
        convert = open_file(path, names, report)
        bad_rows: list[tuple[int, str]] = []
        row0 = 0
        for batch in _stream_csv(path, names, bad_rows):
            n = batch.num_rows
            conv = convert(batch, row0)
            rows = np.arange(row0, row0 + n, dtype=np.int64)
            reason = conv.reason
            bad = np.flatnonzero(reason != "")
            if len(bad):
                quarantined.update(reason[bad].tolist())
                q_tables.append(
                    quarantine_table(
                        os.path.basename(path),
                        rows[bad],
                        reason[bad].tolist(),
                        pa.Table.from_batches([batch]).take(pa.array(bad)),
                    )
                )
            keep = reason == ""
            if the_day is not None:
                local_day = (
                    pc.cast(conv.local, pa.date32()).cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False)
                )
                in_day = local_day == (the_day - date(1970, 1, 1)).days
                report.outside_day += int((keep & ~in_day).sum())
                keep &= in_day
            idx = np.flatnonzero(keep)
            row0 += n
            report.rows_read += n
            if not len(idx):
                continue
            take = pa.array(idx)
            cols = {
                "request_id": conv.request_id.take(take),
                "request_time": conv.utc.take(take),
                "pickup_lat": pa.array(conv.lat[idx]),
                "pickup_lng": pa.array(conv.lng[idx]),
                "ride_type": pa.array(["uberx"] * len(idx), pa.string()),
            }
            if conv.duration is not None:
                dlat, dlng = conv.dropoff_lat[idx], conv.dropoff_lng[idx]
                cols["dropoff_lat"] = pa.array(dlat, mask=np.isnan(dlat))
                cols["dropoff_lng"] = pa.array(dlng, mask=np.isnan(dlng))
                dur = conv.duration[idx]
                cols["trip_duration_s"] = pa.array(dur, mask=np.isnan(dur))
            t = pa.table(cols)
            t = t.append_column("_file", pa.array(np.full(len(idx), fi, np.int32)))
            t = t.append_column("_row", pa.array(rows[idx]))
            parts.append(t)
        if bad_rows:
            report.rows_read += len(bad_rows)
            quarantined["malformed_csv_row"] += len(bad_rows)
            q_tables.append(
                quarantine_table(
                    os.path.basename(path),
                    np.array([r for r, _ in bad_rows], np.int64),
                    ["malformed_csv_row"] * len(bad_rows),
                    pa.table({"line": [txt for _, txt in bad_rows]}),
                )
            )
    if not parts:
        raise TraceError(
            f"{report.files[0] if len(report.files) == 1 else source}: no usable row "
            f"({report.rows_read:,} read" + (f", none on {report.day}" if report.day else "") + ")"
        )
    table = pa.concat_tables(parts, promote_options="default")
    order = pc.sort_indices(
        table, sort_keys=[("request_time", "ascending"), ("_file", "ascending"), ("_row", "ascending")]
    )
    table = table.take(order).drop_columns(["_file", "_row"])
    write_table(table, out, REQUESTS)
    report.rows_written = table.num_rows
    times = table.column("request_time")
    report.first, report.last = pc.min(times).as_py(), pc.max(times).as_py()
    report.quarantined = dict(sorted(quarantined.items()))
    qpath = quarantine_path(out)
    if q_tables:
        write_quarantine([concat_quarantine(q_tables)], qpath)
        report.quarantine_file = qpath
    elif os.path.exists(qpath):
        os.remove(qpath)  # a stale one from an earlier import of the same out would mislead
    return report


# --------------------------------------------------------------------------- Uber 2014


def import_nyc_uber_2014(files: list[str], out: str, day: str | None = None) -> ImportReport:
    """FiveThirtyEight's Uber 2014 pickups (``Date/Time,Lat,Lon,Base``) to a trace at ``out``."""

    def open_file(path: str, names: list[str], report: ImportReport):
        c_time, c_lat, c_lon = _find(names, "Date/Time"), _find(names, "Lat"), _find(names, "Lon")
        if not (c_time and c_lat and c_lon):
            raise TraceError(
                f"{path}: not the Uber 2014 layout (expected columns Date/Time,Lat,Lon,Base; "
                f"header: {','.join(names)[:120]})"
            )
        month: list[str] = []  # the file's yyyymm, from its first parseable pickup time

        def convert(batch: pa.RecordBatch, row0: int):
            local = _parse_times(batch.column(c_time), _UBER_FORMATS)
            t_null = np.asarray(pc.is_null(local).to_numpy(zero_copy_only=False), bool)
            lat, lng = _parse_floats(batch.column(c_lat)), _parse_floats(batch.column(c_lon))
            reason = _pickup_reasons(lat, lng, t_null)
            if not month and (~t_null).any():
                first = local.filter(pc.invert(pc.is_null(local)))[0].as_py()
                month.append(f"{first:%Y%m}")
            conv = _Converted(None, local, local_to_utc(local), lat, lng, reason)
            rows = np.arange(row0, row0 + batch.num_rows, dtype=np.int64)
            conv.request_id = _ids(f"uber14-{month[0] if month else '000000'}-", rows, 7)
            return conv

        return convert

    return _run("nyc-uber-2014", files, out, day, open_file)


# --------------------------------------------------------------------------- TLC yellow

_TLC_LAYOUTS = (
    # (label, pickup time, dropoff time, pickup lng, pickup lat, dropoff lng, dropoff lat, marker)
    (
        "2015",
        "tpep_pickup_datetime",
        "tpep_dropoff_datetime",
        "pickup_longitude",
        "pickup_latitude",
        "dropoff_longitude",
        "dropoff_latitude",
        "RateCodeID",
    ),
    (
        "2016",
        "tpep_pickup_datetime",
        "tpep_dropoff_datetime",
        "pickup_longitude",
        "pickup_latitude",
        "dropoff_longitude",
        "dropoff_latitude",
        "RatecodeID",
    ),
    (
        "2010-2014",
        "pickup_datetime",
        "dropoff_datetime",
        "pickup_longitude",
        "pickup_latitude",
        "dropoff_longitude",
        "dropoff_latitude",
        None,
    ),
    ("2009", "Trip_Pickup_DateTime", "Trip_Dropoff_DateTime", "Start_Lon", "Start_Lat", "End_Lon", "End_Lat", None),
)


def _tlc_layout(path: str, names: list[str]) -> tuple[str, list[str]]:
    exact = {n.strip() for n in names}
    for label, *cols, marker in _TLC_LAYOUTS:
        found = [_find(names, c) for c in cols]
        if all(found) and (marker is None or marker in exact):
            return label, found
    for label, *cols, _marker in _TLC_LAYOUTS:  # same columns, an unexpected rate-code spelling
        found = [_find(names, c) for c in cols]
        if all(found):
            return label, found
    raise TraceError(
        f"{path}: not a TLC yellow-taxi layout with coordinates (need pickup/dropoff times and "
        f"longitude/latitude columns; header: {','.join(names)[:120]})"
    )


def import_tlc_yellow(files: list[str], out: str, day: str | None = None) -> ImportReport:
    """NYC TLC yellow-taxi trips with coordinates (2009-2016 layouts) to a trace at ``out``."""

    def open_file(path: str, names: list[str], report: ImportReport):
        label, (c_pt, c_dt, c_plng, c_plat, c_dlng, c_dlat) = _tlc_layout(path, names)
        report.layouts[path] = label
        prefix = f"tlc-{_file_stem(path)}-"

        def convert(batch: pa.RecordBatch, row0: int):
            local = _parse_times(batch.column(c_pt), _TLC_FORMATS)
            local_drop = _parse_times(batch.column(c_dt), _TLC_FORMATS)
            t_null = np.asarray(pc.is_null(local).to_numpy(zero_copy_only=False), bool)
            lat, lng = _parse_floats(batch.column(c_plat)), _parse_floats(batch.column(c_plng))
            reason = _pickup_reasons(lat, lng, t_null)
            utc = local_to_utc(local)
            pick_ms = _ms(utc)
            dur = (_ms(local_to_utc(local_drop)) - pick_ms) / 1000.0
            # a trip ending in the repeated fall-back hour "before" it began ended in the second occurrence
            dur_late = (_ms(local_to_utc(local_drop, ambiguous="latest")) - pick_ms) / 1000.0
            with np.errstate(invalid="ignore"):
                dur = np.where((dur <= 0) & (dur_late > 0), dur_late, dur)
            reason[(reason == "") & ~np.isnan(dur) & (dur <= 0)] = "bad_trip_duration"
            dlat, dlng = _parse_floats(batch.column(c_dlat)), _parse_floats(batch.column(c_dlng))
            no_drop = (dlat == 0) | (dlng == 0) | ~geo.valid_coords(dlat, dlng)  # NaN: missing, invalid too
            dlat, dlng = np.where(no_drop, np.nan, dlat), np.where(no_drop, np.nan, dlng)
            rows = np.arange(row0, row0 + batch.num_rows, dtype=np.int64)
            conv = _Converted(_ids(prefix, rows, 8), local, utc, lat, lng, reason, dlat, dlng, dur)
            return conv

        return convert

    return _run("tlc-yellow", files, out, day, open_file)


IMPORTERS = {"nyc-uber-2014": import_nyc_uber_2014, "tlc-yellow": import_tlc_yellow}
