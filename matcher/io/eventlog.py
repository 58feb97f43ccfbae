"""Spilling the event log (and the location history) to Parquet as a run goes.

Rows are buffered column-wise and written as whole part files
(``part-00000.parquet``, ...): each file is written under a temporary name and
renamed into place, so a run killed at any moment leaves only complete files.
Memory stays bounded by the buffer size whatever the length of the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matcher.core.states import DriverStatus
from matcher.io.atomic import atomic_path
from matcher.io.schemas import CELLS, EVENT_KINDS, EVENTS, LOCATIONS

KIND = {k: i for i, k in enumerate(EVENT_KINDS)}
_KIND_ARR = pa.array(EVENT_KINDS, pa.string())


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file so that ``path`` is either absent or complete."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


_LABELLED = np.array([KIND["request"], KIND["expire"]], np.int32)


class PartWriter:
    """Numbered part files in one folder, each written atomically."""

    def __init__(self, folder: Path, first_part: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.part = first_part

    def write_empty(self, table: pa.Table) -> None:
        """A part with no rows (a run with nothing to log still has a readable dataset)."""
        write_atomic(table, self.folder / f"part-{self.part:05d}.parquet")
        self.part += 1

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            write_atomic(table, self.folder / f"part-{self.part:05d}.parquet")
            self.part += 1


class EventLog:
    """Buffers events as columns; ids are resolved to strings only when a part is written."""

    _COLS = ("ts", "tick", "shard", "kind", "req", "key", "lat", "lng", "eta", "dist")

    def __init__(
        self,
        folder: Path,
        request_ids: pa.Array,
        driver_ids: pa.Array,
        t0_ms: int,
        rows_per_file: int = 250_000,
        first_seq: int = 0,
        first_part: int = 0,
    ):
        self.out = PartWriter(folder, first_part)
        self.request_ids, self.driver_ids = request_ids, driver_ids
        self.t0_ms = t0_ms
        self.rows_per_file = rows_per_file
        self.seq = first_seq
        self._buf: dict[str, list] = {c: [] for c in self._COLS}
        self.counts = np.zeros(len(EVENT_KINDS), np.int64)
        # (lat, lng, request index) -> shard: labels the `request` and `expire` events with the shard the
        # request was routed to when they happened (set by the replay; see label_shards)
        self.locate = None
        self._labelled = 0  # rows of the buffer already labelled

    def add(
        self,
        ts: float,
        tick: int,
        kind: str,
        req: int = -1,
        key: int = -1,
        lat: float = np.nan,
        lng: float = np.nan,
        shard: int = -1,
        eta: float = np.nan,
        dist: float = np.nan,
    ) -> None:
        b = self._buf
        b["ts"].append(ts)
        b["tick"].append(tick)
        b["shard"].append(shard)
        b["kind"].append(KIND[kind])
        b["req"].append(req)
        b["key"].append(key)
        b["lat"].append(lat)
        b["lng"].append(lng)
        b["eta"].append(eta)
        b["dist"].append(dist)
        if len(b["ts"]) >= self.rows_per_file:
            self.flush()

    def add_many(self, ts, tick, kind: str, req, key, lat, lng, shard, eta, dist) -> None:
        """Columnar append (match events of a tick arrive as arrays)."""
        n = len(req)
        b = self._buf
        for name, v in (
            ("ts", ts),
            ("tick", tick),
            ("shard", shard),
            ("req", req),
            ("key", key),
            ("lat", lat),
            ("lng", lng),
            ("eta", eta),
            ("dist", dist),
        ):
            b[name].extend(np.broadcast_to(v, n).tolist())
        b["kind"].extend([KIND[kind]] * n)
        if len(b["ts"]) >= self.rows_per_file:
            self.flush()

    def label_shards(self) -> None:
        """Set ``shard`` on the buffered `request` and `expire` events that have none, by `locate`.

        Called right after the world advanced to a tick, before the tick is
        routed, so the shard is the one the request was (or would be) routed to.
        """
        b = self._buf
        n = len(b["ts"])
        if self.locate is None or n == self._labelled:
            self._labelled = n
            return
        lo = self._labelled
        kind = np.asarray(b["kind"][lo:], np.int32)
        shard = np.asarray(b["shard"][lo:], np.int32)
        todo = np.flatnonzero(np.isin(kind, _LABELLED) & (shard < 0))
        if todo.size:
            lat = np.asarray(b["lat"][lo:], np.float64)[todo]
            lng = np.asarray(b["lng"][lo:], np.float64)[todo]
            req = np.asarray(b["req"][lo:], np.int64)[todo]
            for i, s in zip((lo + todo).tolist(), np.asarray(self.locate(lat, lng, req)).tolist()):
                b["shard"][i] = int(s)
        self._labelled = n

    def flush(self) -> None:
        self.label_shards()
        b = self._buf
        n = len(b["ts"])
        if n == 0:
            return
        kind = np.asarray(b["kind"], np.int32)
        np.add.at(self.counts, kind, 1)
        req = np.asarray(b["req"], np.int64)
        key = np.asarray(b["key"], np.int64)
        shard = np.asarray(b["shard"], np.int32)
        ts_ms = self.t0_ms + np.round(np.asarray(b["ts"]) * 1000.0).astype(np.int64)

        def ids(arr, codes):
            return arr.take(pa.array(np.where(codes >= 0, codes, 0), mask=codes < 0))

        def opt(x):
            x = np.asarray(x, np.float64)
            return pa.array(x, mask=np.isnan(x))

        table = pa.Table.from_arrays(
            [
                pa.array(np.arange(self.seq, self.seq + n, dtype=np.int64)),
                pa.array(ts_ms, pa.int64()).cast(EVENTS.field("ts").type),
                pa.array(np.asarray(b["tick"], np.int64)),
                pa.array(shard, mask=shard < 0),
                _KIND_ARR.take(pa.array(kind)),
                ids(self.request_ids, req),
                ids(self.driver_ids, key),
                opt(b["lat"]),
                opt(b["lng"]),
                opt(b["eta"]),
                opt(b["dist"]),
            ],
            schema=EVENTS,
        )
        self.out.write(table)
        self.seq += n
        self._buf = {c: [] for c in self._COLS}
        self._labelled = 0

    def count(self, kind: str) -> int:
        return int(self.counts[KIND[kind]]) + sum(1 for k in self._buf["kind"] if k == KIND[kind])


class LocationLog:
    """Driver location history (``--record-locations``): one row per driver per ping interval."""

    # status code -> the name written (the enum's, lower-cased: available, offered, en_route, on_trip, offline)
    STATUS = pa.array([DriverStatus(code).name.lower() for code in range(len(DriverStatus))], pa.string())

    def __init__(
        self, folder: Path, driver_ids: pa.Array, t0_ms: int, rows_per_file: int = 1_000_000, first_part: int = 0
    ):
        self.out = PartWriter(folder, first_part)
        self.driver_ids, self.t0_ms = driver_ids, t0_ms
        self.rows_per_file = rows_per_file
        self._parts: list[pa.Table] = []
        self._rows = 0

    def add(self, t: float, key, lat, lng, heading, speed, status) -> None:
        n = len(key)
        ts = pa.array(np.full(n, self.t0_ms + int(round(t * 1000)), np.int64)).cast(LOCATIONS.field("ts").type)
        self._parts.append(
            pa.Table.from_arrays(
                [
                    self.driver_ids.take(pa.array(key)),
                    ts,
                    pa.array(lat, pa.float64()),
                    pa.array(lng, pa.float64()),
                    pa.array(heading, pa.float32()),
                    pa.array(speed, pa.float32()),
                    self.STATUS.take(pa.array(status.astype(np.int32))),
                ],
                schema=LOCATIONS,
            )
        )
        self._rows += n
        if self._rows >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self.out.write(pa.concat_tables(self._parts))
        self._parts, self._rows = [], 0


def _part_no(f: Path) -> int:
    """The number of a part file ``part-NNNNN.parquet``."""
    return int(f.stem.split("-")[1])


class StagedTable:
    """One Parquet file (``path``) that grows as a run goes, with bounded memory and no loss at a crash.

    Rows are buffered as columns and written as whole part files to a hidden staging folder
    beside ``path`` (``.NAME.parts/part-*.parquet``, each atomic); :meth:`finish` combines the
    parts, in order, into ``path`` (atomically) and removes the folder. A writer that is
    killed leaves its parts; a new StagedTable on the same path continues after them (or
    from ``first_part``: a replay resumed from a checkpoint drops the parts written after it).
    """

    def __init__(self, path: Path, schema: pa.Schema, rows_per_part: int = 200_000, first_part: int | None = None):
        self.path, self.schema = Path(path), schema
        self.stage = self.path.with_name(f".{self.path.stem}.parts")
        if first_part is None:
            first_part = 1 + max((_part_no(f) for f in self.stage.glob("part-*.parquet")), default=-1)
        self.out = PartWriter(self.stage, first_part)
        self.drop_after_checkpoint()  # parts numbered from first_part on (none if it followed them)
        self.rows_per_part = rows_per_part
        self._parts: list[pa.Table] = []
        self._rows = 0

    def add(self, columns: dict) -> None:
        """Append rows given as {column: array} (every column of the schema)."""
        arrays = [
            v.cast(f.type) if isinstance(v := columns[f.name], pa.Array) else pa.array(v, f.type) for f in self.schema
        ]
        t = pa.Table.from_arrays(arrays, schema=self.schema)
        if t.num_rows:
            self._parts.append(t)
            self._rows += t.num_rows
        if self._rows >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self.out.write(pa.concat_tables(self._parts))
        self._parts, self._rows = [], 0

    def drop_after_checkpoint(self) -> None:
        """After a resume: remove the parts written after the checkpoint this table was saved in."""
        for f in self.stage.glob("part-*.parquet"):
            if _part_no(f) >= self.out.part:
                f.unlink()

    def finish(self) -> Path:
        """Combine every part (this writer's and any earlier one's) into ``path``; returns it."""
        self.flush()
        parts = sorted(self.stage.glob("part-*.parquet"), key=_part_no)
        with atomic_path(self.path) as tmp, pq.ParquetWriter(tmp, self.schema, compression="zstd") as w:
            for f in parts:
                w.write_table(pq.read_table(f, schema=self.schema))
        for f in parts:
            f.unlink()
        if self.stage.exists() and not any(self.stage.iterdir()):
            self.stage.rmdir()
        return self.path


class CellLog:
    """OUT/cells.parquet (schema CELLS): the per-tick surge figures of every tracked cell.

    A tick's rows are kept as the numpy arrays they come in and made into one Arrow table
    (cell names included) per ``BUFFER_ROWS`` rows or at `flush`: a table per tick cost more
    than the surge step itself."""

    BUFFER_ROWS = 50_000
    _COLS = ("tick", "ts", "cell", "precision", "demand", "supply", "demand_ewma", "supply_ewma", "ratio", "mult")

    def __init__(self, out: Path, first_part: int | None = None):
        self.table = StagedTable(Path(out) / "cells.parquet", CELLS, first_part=first_part)
        self._buf: dict[str, list[np.ndarray]] = {c: [] for c in self._COLS}
        self._rows = 0

    def __setstate__(self, d: dict) -> None:  # a checkpoint of an older release: no buffer
        d.setdefault("_buf", {c: [] for c in self._COLS})
        d.setdefault("_rows", 0)
        self.__dict__.update(d)

    def add(self, tick: int, ts_ms: int, cells, precision: int) -> None:
        """``cells``: a :class:`matcher.core.surge.CellTick`."""
        n = len(cells)
        if n == 0:
            return
        b = self._buf
        b["tick"].append(np.full(n, tick, np.int64))
        b["ts"].append(np.full(n, ts_ms, np.int64))
        b["cell"].append(np.asarray(cells.cells, np.uint64))
        b["precision"].append(np.full(n, precision, np.int8))
        b["demand"].append(cells.demand_now.astype(np.int32))
        b["supply"].append(cells.supply_now.astype(np.int32))
        b["demand_ewma"].append(np.asarray(cells.demand, np.float64))
        b["supply_ewma"].append(np.asarray(cells.supply, np.float64))
        b["ratio"].append(np.asarray(cells.ratio, np.float64))
        b["mult"].append(np.asarray(cells.multiplier, np.float64))
        self._rows += n
        if self._rows >= self.BUFFER_ROWS:
            self._move()

    def _move(self) -> None:
        """The buffered rows into the staged table, as one Arrow table."""
        if not self._rows:
            return
        from matcher.core import geo

        c = {k: np.concatenate(v) for k, v in self._buf.items()}
        p = c["precision"]
        names = geo.int_to_str(c["cell"], int(p[0]) if (p == p[0]).all() else p)
        self.table.add(
            {
                "tick": c["tick"],
                "ts": pa.array(c["ts"]).cast(CELLS.field("ts").type),
                "cell": pa.array(names, pa.string()),
                "demand": c["demand"],
                "supply": c["supply"],
                "demand_ewma": c["demand_ewma"],
                "supply_ewma": c["supply_ewma"],
                "ratio": c["ratio"],
                "surge_multiplier": c["mult"],
            }
        )
        self._buf = {k: [] for k in self._COLS}
        self._rows = 0

    def flush(self) -> None:
        self._move()
        self.table.flush()

    def drop_after_checkpoint(self) -> None:
        """After a resume: remove the parts written after the checkpoint this log was saved in."""
        self.table.drop_after_checkpoint()

    def finish(self) -> Path:
        self._move()
        return self.table.finish()
