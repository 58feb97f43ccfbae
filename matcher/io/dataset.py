"""The files of a trace: find them, open them, and check their columns (docs/trace.md).

A trace is one Parquet file or a folder of Parquet files read as one dataset.
In a folder, every file below it is part of the trace, in sorted path order,
except hidden files and folders and names starting with ``_`` (``_SUCCESS``,
``.part-0.crc``). A file that cannot be read (a broken link, no permission) or
is not Parquet is refused by name: nothing in a trace folder is skipped
silently.

Hive partitions: a folder ``KEY=VALUE`` on the way from the trace folder to a
file gives every row of that file the column ``KEY`` with that value (URL
escapes decoded, ``__HIVE_DEFAULT_PARTITION__`` is null). Such a column is read
like any other: a contract column (``ride_type``, ...) takes the value in its
contract type, an unknown key is an extra column (kept in the quarantine). A
trace whose files do not all sit under the same partition keys, a key that is
also a column of the file, or a value that is not of its column's type is
refused with one line.

A CSV or JSON file given as a trace (or found in one) is refused with a hint to
``matcher import``.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from matcher.errors import TraceError
from matcher.io.atomic import short_error
from matcher.io.schemas import DRIVERS, REQUESTS

__all__ = [
    "HIVE_NULL",
    "TraceFiles",
    "check_schema",
    "file_schema",
    "open_dataset",
    "open_parquet",
    "partition_columns",
]

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".json.gz", ".gz")
_IMPORT_HINT = "convert it first: matcher import nyc-uber-2014|tlc-yellow FILE... --out TRACE.parquet"


@dataclass(frozen=True)
class TraceFiles:
    """The Parquet files of a trace, in reading order, with each file's hive partition values."""

    path: str
    files: tuple[str, ...]
    partitions: tuple[tuple[tuple[str, str | None], ...], ...]  # per file: ((key, value), ...), in path order

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.partitions[0]) if self.partitions else ()


# --------------------------------------------------------------------------- finding


def _unreadable(path, exc: BaseException) -> TraceError:
    return TraceError(f"{path}: not a readable Parquet trace ({short_error(exc)})")


def _looks_like_text(path: str) -> str | None:
    """ "CSV" or "JSON" if the file looks like one (by name or by its first bytes), else None."""
    low = path.lower()
    head = b""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        pass
    if head.startswith(b"PAR1"):
        return None
    if any(low.endswith(s) for s in (".json", ".jsonl", ".ndjson", ".json.gz")) or head.lstrip()[:1] in (b"{", b"["):
        return "JSON"
    if any(low.endswith(s) for s in _TEXT_SUFFIXES) or (
        head and b"\0" not in head and (b"," in head.split(b"\n", 1)[0] or b"\t" in head.split(b"\n", 1)[0])
    ):
        return "CSV"
    return None


def _not_parquet(path: str, exc: BaseException) -> TraceError:
    kind = _looks_like_text(path)
    if kind:
        return TraceError(f"{path}: not a readable Parquet trace (looks like {kind}; {_IMPORT_HINT})")
    return _unreadable(path, exc)


def _skipped(name: str) -> bool:
    return name.startswith((".", "_"))


def _list_files(root: str) -> list[str]:
    """Every file below ``root`` that belongs to the trace, sorted; a broken entry is an error naming it."""
    out: list[str] = []

    def fail(e: OSError) -> None:
        raise TraceError(f"{e.filename or root}: cannot read this part of the trace ({short_error(e)})")

    for folder, dirs, names in os.walk(root, onerror=fail, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in names:
            if _skipped(name):
                continue
            f = os.path.join(folder, name)
            try:
                os.stat(f)  # follows links: a broken one is named here
                with open(f, "rb"):
                    pass
            except OSError as e:
                raise TraceError(f"{f}: cannot read this file of the trace ({short_error(e)})") from None
            out.append(f)
    return sorted(out)


def _partition_of(root: str, f: str) -> tuple[tuple[str, str | None], ...]:
    rel = os.path.relpath(os.path.dirname(f), root)
    parts = [] if rel == "." else rel.split(os.sep)
    out = []
    for p in parts:
        key, sep, value = p.partition("=")
        if not sep:
            continue
        key = urllib.parse.unquote(key)
        if not key:
            raise TraceError(f"{os.path.join(root, rel)}: a partition folder needs a column name before '=' ({p!r})")
        v = urllib.parse.unquote(value)
        out.append((key, None if v == HIVE_NULL else v))
    return tuple(out)


def open_dataset(path) -> TraceFiles:
    """The Parquet file or folder of Parquet files at ``path``, checked to be readable.

    Every file's footer is read once here, so a non-Parquet or truncated file
    anywhere in a folder is reported (by name) before any row is read.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        if os.path.islink(path):
            raise TraceError(f"{path}: not a readable Parquet trace (a broken link)")
        raise TraceError(f"{path}: not a readable Parquet trace (no such file or folder)")
    if os.path.isdir(path):
        files = _list_files(path)
        if not files:
            raise TraceError(f"{path}: not a readable Parquet trace (no Parquet file in this folder)")
        partitions = tuple(_partition_of(path, f) for f in files)
        keys = {tuple(k for k, _ in p) for p in partitions}
        if len(keys) > 1:
            a, b = sorted(keys, key=len)[:2]
            raise TraceError(
                f"{path}: hive partition folders differ between files "
                f"({'/'.join(a) or 'no partition'} vs {'/'.join(b) or 'no partition'}); "
                "every file must sit under the same KEY=VALUE folders"
            )
        dup = [k for k in next(iter(keys)) if next(iter(keys)).count(k) > 1]
        if dup:
            raise TraceError(f"{path}: partition key {dup[0]!r} appears twice on the way to a file")
    else:
        files, partitions = [path], ((),)
    tf = TraceFiles(path, tuple(files), partitions)
    for f in files:
        open_parquet(f).close()
    return tf


def open_parquet(f: str) -> pq.ParquetFile:
    """One file of a trace, opened (its footer read); a TraceError naming it if it is not usable Parquet."""
    try:
        return pq.ParquetFile(f)
    except (OSError, pa.ArrowException, ValueError) as e:
        raise _not_parquet(f, e) from None


# --------------------------------------------------------------------------- partitions


def _partition_array(name: str, value: str | None, n: int, target: pa.DataType | None, where: str) -> pa.Array:
    """``n`` copies of a partition value, in the contract type of its column (string if not a contract column)."""
    if value is None:
        return pa.nulls(n, target if target is not None else pa.string())
    text = pa.array([value], pa.string())
    if target is None or pa.types.is_string(target):
        arr = text
    else:
        try:
            if pa.types.is_timestamp(target):
                arr = text.cast(pa.timestamp("ms")).cast(target) if "+" not in value else text.cast(target)
            else:
                arr = text.cast(target)
        except (pa.ArrowException, ValueError):
            raise TraceError(
                f"{where}: partition value {name}={value!r} is not {_expected(name, target)}, the type of column '{name}'"
            ) from None
    return pa.repeat(arr[0], n)


def partition_columns(
    parts: tuple[tuple[str, str | None], ...], n: int, target_schema: pa.Schema, where: str
) -> dict[str, pa.Array]:
    """The partition columns of one file's slice of ``n`` rows, by name."""
    names = target_schema.names
    return {k: _partition_array(k, v, n, target_schema.field(k).type if k in names else None, where) for k, v in parts}


def file_schema(pf: pq.ParquetFile, parts: tuple[tuple[str, str | None], ...], f: str) -> pa.Schema:
    """A file's columns plus its partition columns (as strings); a key that is also a file column is refused."""
    schema = pf.schema_arrow
    for k, _ in parts:
        if k in schema.names:
            raise TraceError(f"{f}: column '{k}' is both in the file and a partition folder ({k}=...); keep one")
        schema = schema.append(pa.field(k, pa.string()))
    return schema


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


def check_schema(
    schema: pa.Schema, required: Iterable[str], kind: str, path, partition_keys: Iterable[str] = ()
) -> None:
    """Raise TraceError if ``schema`` lacks a required column or has a contract column of the wrong type.

    ``kind`` is ``"requests"`` or ``"drivers"`` (which contract table); extra columns are ignored.
    Columns named in ``partition_keys`` come from partition folders: their values are typed when read.
    """
    target = _KIND_SCHEMA[kind]
    names = schema.names
    from_folders = set(partition_keys)
    for name in required:
        if name not in names:
            raise TraceError(
                f"{path}: missing required column '{name}' ({kind} trace; has: {', '.join(names) or 'no column'})"
            )
    for f in target:
        n = names.count(f.name)
        if n == 0 or f.name in from_folders:
            continue
        if n > 1:
            raise TraceError(f"{path}: column '{f.name}' appears {n} times")
        actual = schema.field(f.name).type
        if not _accepts(f.name, f.type, actual):
            raise TraceError(f"{path}: column '{f.name}' has type {actual}, expected {_expected(f.name, f.type)}")
