"""Writing Parquet atomically: a file appears whole under its name or not at all.

:class:`AtomicParquetWriter` streams tables into a hidden temporary file in the
target folder and renames it into place on close (zstd, row groups of
``ROW_GROUP_ROWS``); :func:`write_table` and :func:`write_quarantine` are the
one-call forms. A failure to write (a read-only folder, a full disk) raises
:class:`~matcher.errors.MatcherError` naming the path and the cause.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from matcher.io.atomic import cannot_write, commit, temp_name
from matcher.io.schemas import QUARANTINE_BASE

__all__ = ["ROW_GROUP_ROWS", "AtomicParquetWriter", "concat_quarantine", "write_quarantine", "write_table"]

ROW_GROUP_ROWS = 128 * 1024


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
            raise cannot_write(self.path, e) from None
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
            try:
                self._flush(final=False)
            except (OSError, pa.ArrowException) as e:
                self.abort()
                raise cannot_write(self.path, e) from None

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
            commit(self.tmp, self.path)
        except (OSError, pa.ArrowException) as e:
            self.abort()
            raise cannot_write(self.path, e) from None
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


def concat_quarantine(tables: list[pa.Table]) -> pa.Table:
    """One quarantine table from pieces with possibly different original columns (missing ones are null)."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return QUARANTINE_BASE.empty_table()
    out = pa.concat_tables(tables, promote_options="permissive")
    return out


def write_quarantine(tables: list[pa.Table], path) -> str:
    """Write the quarantined rows (pieces from any readers) to ``path`` atomically; an empty file when none."""
    t = concat_quarantine(list(tables))
    for f in QUARANTINE_BASE:
        if f.name not in t.column_names:
            t = t.append_column(f, pa.nulls(t.num_rows, f.type))
    names = list(QUARANTINE_BASE.names) + [n for n in t.column_names if n not in QUARANTINE_BASE.names]
    t = t.select(names)
    return write_table(t, path, t.schema)
