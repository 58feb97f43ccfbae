"""The live run's tables besides the event log: OUT/locations/ (from the pings),
OUT/ticks.parquet and OUT/cells.parquet (docs/run-output.md).

Rows are buffered as columns and written as whole part files every flush (a
``kill -9`` loses at most the rows since the last flush, never a file half
written); ticks and cells are staged parts combined into one file at shutdown
(:class:`matcher.io.eventlog.StagedTable`), so a restarted service continues them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from matcher.core.surge import CellTick
from matcher.dist.coordinator import TickStats
from matcher.io.eventlog import CellLog, LocationLog, PartWriter, StagedTable
from matcher.io.schemas import LOCATIONS
from matcher.sim.replay import TICKS_SCHEMA


def _next_part(folder: Path) -> int:
    return 1 + max((int(f.stem.split("-")[1]) for f in folder.glob("part-*.parquet")), default=-1)


class LiveLogs:
    def __init__(self, out: Path, driver_ids: list[str], t0_ms: int, record_locations: bool = True):
        self.out = Path(out)
        self.record = record_locations
        loc = self.out / "locations"
        self.locations = PartWriter(loc, _next_part(loc)) if record_locations else None
        self._one: list[tuple] = []
        self._many: list[tuple] = []
        self.location_rows = 0
        self.ticks = StagedTable(self.out / "ticks.parquet", TICKS_SCHEMA, rows_per_part=50_000)
        self.cell_rows = CellLog(self.out)

    # -- locations -------------------------------------------------------------
    def location_one(self, k: int, ts_ms: int, lat: float, lng: float, heading: float, speed: float, status: int):
        if self.record:
            self._one.append((k, ts_ms, lat, lng, heading, speed, status))

    def location_many(self, keys, ts_ms: int, lat, lng, heading, speed, status) -> None:
        if self.record and len(keys):
            self._many.append(
                (keys.copy(), np.full(len(keys), ts_ms, np.int64), lat.copy(), lng.copy(), heading, speed, status)
            )

    def take_locations(self, driver_ids: list[str]) -> tuple[list[tuple], list[str]] | None:
        """The buffered location rows and the ids they name, taken out of the buffer: quick, for
        the caller's lock (the pings append to the buffer under it); written by :meth:`flush`."""
        if self.locations is None or not (self._one or self._many):
            return None
        parts = list(self._many)
        if self._one:
            cols = list(zip(*self._one))
            parts.append(tuple(np.asarray(c) for c in cols))
        self._one, self._many = [], []
        return parts, list(driver_ids)

    def _write_locations(self, taken: tuple[list[tuple], list[str]] | None) -> None:
        if taken is None or self.locations is None:
            return
        parts, driver_ids = taken
        key = np.concatenate([np.asarray(p[0], np.int64) for p in parts])
        ids = pa.array(driver_ids, pa.string())
        table = pa.Table.from_arrays(
            [
                ids.take(pa.array(key)),
                pa.array(np.concatenate([np.asarray(p[1], np.int64) for p in parts])).cast(LOCATIONS.field("ts").type),
                pa.array(np.concatenate([np.asarray(p[2], np.float64) for p in parts])),
                pa.array(np.concatenate([np.asarray(p[3], np.float64) for p in parts])),
                pa.array(np.concatenate([np.asarray(p[4], np.float32) for p in parts])),
                pa.array(np.concatenate([np.asarray(p[5], np.float32) for p in parts])),
                LocationLog.STATUS.take(pa.array(np.concatenate([np.asarray(p[6], np.int32) for p in parts]))),
            ],
            schema=LOCATIONS,
        )
        self.locations.write(table)
        self.location_rows += table.num_rows

    # -- ticks and cells -----------------------------------------------------------
    def tick_row(self, tick: int, ts_ms: int, wall_ms: float, matched: int, stats: TickStats) -> None:
        """One row of ticks.parquet, every column of the replay's (the coordinator's TickStats)."""
        self.ticks.add(
            {
                "tick": [tick],
                "ts": pa.array([ts_ms], pa.int64()).cast(TICKS_SCHEMA.field("ts").type),
                "wall_ms": [wall_ms],
                "pending": [stats.pending],
                "matched": [matched],
                "deferred": [stats.deferred],
                "fallbacks": [stats.fallbacks],
                "solve_ms": [stats.solve_ms_max],
                "coordinator_ms": [stats.coordinator_ms],
                "critical_ms": [stats.critical_ms],
                "shard_cpu_ms": [stats.shard_cpu_ms],
                "round2": [stats.round2],
            }
        )

    def cells(self, tick: int, ts_ms: int, c: CellTick, precision: int) -> None:
        self.cell_rows.add(tick, ts_ms, c, precision)

    def flush(self, taken: tuple[list[tuple], list[str]] | None) -> None:
        """Write the rows ``taken`` (:meth:`take_locations`) and the buffered ticks and cells (which
        only the tick thread adds to and flushes, so this runs outside the pings' lock)."""
        self._write_locations(taken)
        self.ticks.flush()
        self.cell_rows.flush()

    def finish(self, driver_ids: list[str]) -> None:
        self._write_locations(self.take_locations(driver_ids))
        self.ticks.finish()
        self.cell_rows.finish()
