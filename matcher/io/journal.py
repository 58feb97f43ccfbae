"""An append-only journal with group commit: records are durable (written and fsynced) before
anyone is told they were accepted.

Each record is one line of JSON. ``append`` only buffers the line; a committer
thread writes everything buffered, fsyncs once and then runs the callbacks of
every record of that group. While one fsync runs, new records queue up for the
next one, so a busy journal commits many records per fsync (group commit) and
an idle one commits each record at once. Order is kept: a record is durable
only after every record appended before it.

Reading (:func:`read`) stops at the first line that is not whole JSON: a torn
last line can only belong to a record whose fsync never finished, which nobody
was told about.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matcher.io.atomic import sync_append

Callback = Callable[[BaseException | None], None]


class JournalClosed(RuntimeError):
    """An append after close (the service is shutting down)."""


class Journal:
    def __init__(self, path: str | os.PathLike, min_interval_s: float = 0.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._new = not self.path.exists()
        self._f = open(self.path, "ab")  # noqa: SIM115 - owned by the committer thread until close
        self._min_interval = float(min_interval_s)
        self._cond = threading.Condition()
        self._lines: list[bytes] = []
        self._callbacks: list[Callback] = []
        self._closing = False
        self._error: BaseException | None = None
        self.records = 0  # appended so far (this session)
        self.commits = 0  # fsyncs so far
        self.commit_ms: list[float] = []  # duration of recent fsync groups (the last 1,000)
        self._thread = threading.Thread(target=self._run, name="journal-commit", daemon=True)
        self._thread.start()

    def append(self, record: dict[str, Any], callback: Callback | None = None) -> None:
        """Buffer one record; ``callback(None)`` runs (in the committer thread) once it is on disk,
        ``callback(error)`` if writing it failed."""
        line = json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        with self._cond:
            if self._closing:
                raise JournalClosed("the journal is closed")
            if self._error is not None:
                raise OSError(f"the journal cannot be written: {self._error}")
            self._lines.append(line)
            if callback is not None:
                self._callbacks.append(callback)
            self.records += 1
            self._cond.notify()

    def barrier(self, callback: Callback) -> None:
        """``callback`` runs once every record appended so far is on disk."""
        with self._cond:
            if self._closing:
                raise JournalClosed("the journal is closed")
            self._callbacks.append(callback)
            self._cond.notify()

    def sync(self, timeout: float | None = None) -> None:
        """Block until every record appended so far is on disk (raises the write error, if any)."""
        done = threading.Event()
        box: list[BaseException | None] = [None]

        def cb(err: BaseException | None) -> None:
            box[0] = err
            done.set()

        self.barrier(cb)
        if not done.wait(timeout):
            raise TimeoutError("the journal did not commit in time")
        if box[0] is not None:
            raise box[0]

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while not self._lines and not self._callbacks and not self._closing:
                    self._cond.wait()
                lines, callbacks = self._lines, self._callbacks
                self._lines, self._callbacks = [], []
                closing = self._closing
            err: BaseException | None = None
            if lines:
                wait = self._min_interval - (time.monotonic() - last)
                if wait > 0:
                    time.sleep(wait)
                t0 = time.perf_counter()
                try:
                    self._f.write(b"".join(lines))
                    sync_append(self._f, self.path if self._new else None)
                    self._new = False
                except OSError as e:
                    err = e
                    with self._cond:
                        self._error = e
                last = time.monotonic()
                self.commits += 1
                self.commit_ms.append((time.perf_counter() - t0) * 1e3)
                if len(self.commit_ms) > 1000:
                    del self.commit_ms[:500]
            for cb in callbacks:
                try:
                    cb(err)
                except Exception:  # noqa: BLE001 - one waiter's failure must not stop the commits
                    pass
            if closing and not lines and not callbacks:
                with self._cond:
                    if not self._lines and not self._callbacks:
                        return

    def close(self) -> None:
        """Commit what is buffered, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._f.close()


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every whole record of a journal, in order (a torn last line is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    with open(p, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                out.append(json.loads(line))
            except ValueError:
                break
    return out


def truncate_torn_tail(path: str | os.PathLike) -> int:
    """Cut a torn last line off the journal (before appending again); returns bytes removed."""
    p = Path(path)
    if not p.exists():
        return 0
    data = p.read_bytes()
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            json.loads(line)
        except ValueError:
            break
        good += len(line)
    if good < len(data):
        with open(p, "r+b") as f:
            f.truncate(good)
            sync_append(f)
    return len(data) - good
