"""What the live service keeps on disk, and what it recovers from after a crash.

``OUT/journal.jsonl`` is the source of truth: one JSON line per ride event (the
event-log row plus what recovery needs: rider, idempotency key, destination, ...)
and per state change that has no event kind (``en_route``, ``arrived``), plus one
``start`` line per session. The journal is group-committed (:mod:`matcher.io.journal`):
an API call that changes a ride answers only after its line is fsynced, so an
acknowledged ride request survives ``kill -9`` of the service.

``OUT/events/part-*.parquet`` is the run-output event log (docs/run-output.md),
written from the journal every few seconds: a part is written only after the
journal lines of all its events are durable, so the Parquet log never holds an
event the journal lacks. After a crash, :class:`Store` reads the journal, finds
the last ``seq`` already in the Parquet parts and writes the rest again, so the
event log ends up with every journaled event exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matcher.io import journal as journal_mod
from matcher.io.atomic import remove_leftovers
from matcher.io.eventlog import PartWriter
from matcher.io.schemas import EVENT_KINDS, EVENTS

JOURNAL = "journal.jsonl"
_EVENT_KEYS = ("seq", "ts", "tick", "shard", "kind", "request_id", "driver_id", "lat", "lng", "eta", "dist")


def _max_seq(folder: Path) -> tuple[int, int]:
    """(largest seq in the Parquet parts or -1, next part number)."""
    parts = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
    top = -1
    for f in parts:
        col = pq.read_table(f, columns=["seq"]).column("seq")
        if len(col):
            top = max(top, int(pa.compute.max(col).as_py()))
    nxt = 1 + max((int(f.stem.split("-")[1]) for f in parts), default=-1)
    return top, nxt


class Store:
    """The journal and the Parquet event log of one live run folder."""

    def __init__(self, out: str | os.PathLike, min_interval_s: float = 0.0):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.out)  # temporary files of a writer killed mid-write
        path = self.out / JOURNAL
        self.torn_bytes = journal_mod.truncate_torn_tail(path)
        self.recovered: list[dict[str, Any]] = journal_mod.read(path)
        self.journal = journal_mod.Journal(path, min_interval_s)
        top, nxt = _max_seq(self.out / "events")
        self.events = PartWriter(self.out / "events", nxt)
        self._buf: list[dict[str, Any]] = [r for r in self.recovered if r.get("t") == "ev" and r["seq"] > top]
        self.seq = 1 + max((r["seq"] for r in self.recovered if r.get("t") == "ev"), default=-1)
        self.parts_written = 0

    def start_record(self) -> dict[str, Any] | None:
        """The first session's ``start`` line (its t0), if the folder holds a journal."""
        return next((r for r in self.recovered if r.get("t") == "start"), None)

    def append(self, record: dict[str, Any], callback: Callable[[BaseException | None], None] | None = None) -> None:
        """Journal a non-event line (``start``, ``state``)."""
        self.journal.append(record, callback)

    def event(
        self,
        ts_ms: int,
        tick: int,
        kind: str,
        request_id: str | None = None,
        driver_id: str | None = None,
        lat: float | None = None,
        lng: float | None = None,
        shard: int | None = None,
        eta: float | None = None,
        dist: float | None = None,
        extra: dict[str, Any] | None = None,
        callback: Callable[[BaseException | None], None] | None = None,
    ) -> int:
        """Journal one event (and buffer it for the Parquet log); returns its seq."""
        assert kind in EVENT_KINDS
        rec: dict[str, Any] = {
            "t": "ev",
            "seq": self.seq,
            "ts": int(ts_ms),
            "tick": int(tick),
            "shard": shard,
            "kind": kind,
            "request_id": request_id,
            "driver_id": driver_id,
            "lat": _num(lat),
            "lng": _num(lng),
            "eta": _num(eta),
            "dist": _num(dist),
        }
        if extra:
            rec["x"] = extra
        self.seq += 1
        self.journal.append(rec, callback)
        self._buf.append(rec)
        return rec["seq"]

    def flush_events(self, timeout: float = 30.0) -> int:
        """Write the buffered events as one Parquet part, once their journal lines are durable."""
        buf, self._buf = self._buf, []
        if not buf:
            return 0
        try:
            self.journal.sync(timeout)
        except BaseException:
            self._buf = buf + self._buf
            raise
        self.events.write(events_table(buf))
        self.parts_written += 1
        return len(buf)

    def close(self) -> None:
        self.flush_events()
        self.journal.close()


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def events_table(records: list[dict[str, Any]]) -> pa.Table:
    """Journal event lines -> a table of the EVENTS schema (docs/run-output.md)."""

    def col(k: str) -> list:
        return [r.get(k) for r in records]

    return pa.Table.from_arrays(
        [
            pa.array(col("seq"), pa.int64()),
            pa.array(col("ts"), pa.int64()).cast(EVENTS.field("ts").type),
            pa.array(col("tick"), pa.int64()),
            pa.array(col("shard"), pa.int32()),
            pa.array(col("kind"), pa.string()),
            pa.array(col("request_id"), pa.string()),
            pa.array(col("driver_id"), pa.string()),
            pa.array(col("lat"), pa.float64()),
            pa.array(col("lng"), pa.float64()),
            pa.array(col("eta"), pa.float64()),
            pa.array(col("dist"), pa.float64()),
        ],
        schema=EVENTS,
    )


def now_ms() -> int:
    return int(time.time() * 1000)
