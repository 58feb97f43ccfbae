"""Work of past ticks that the tick loop never reads back, run while the shards solve.

On a Ray backend the coordinator waits for the shards' answers on most answered ticks
(about 1 ms each on the small-city day), and that wait is idle time of the process that
runs the loop. Work whose result nothing in the loop reads back (today: the surge cells
of each tick, written to OUT/cells.parquet) is handed to a :class:`Deferred` as a job
that holds a snapshot of its inputs, and the backend runs jobs while it waits
(:meth:`Deferred.run_one`, the ``idle`` of ``ShardBackend.tick``).

Guarantees:
- jobs run exactly once, one at a time, in the order they were added, so their output
  (rows appended to a log, a smoothed state) is the one of running each at once;
- at most ``limit`` jobs are held: adding one more first runs the oldest, so the lag and
  the memory are bounded (an in-process backend never waits, so there every job runs
  ``limit`` ticks late, in order);
- :meth:`drain` runs every job held; the loop drains before a checkpoint and at the end,
  so a checkpoint holds the state of every job of the ticks before it;
- a job that raises inside a wait does not fail the shards' tick: the error is kept, no
  later job runs, and :meth:`check` (called after the tick) raises it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["Deferred"]

LIMIT = 64  # jobs held before the oldest is run at once


class Deferred:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._jobs: deque[Callable[[], None]] = deque()
        self._error: BaseException | None = None
        self.in_waits = 0  # jobs run by a backend while it waited (the rest: at the limit or a drain)

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job: Callable[[], None]) -> None:
        self.check()
        self._jobs.append(job)
        while len(self._jobs) > self.limit:
            self._jobs.popleft()()

    def run_one(self) -> bool:
        """Run the oldest job; False if none was run (none held, or an earlier job failed).
        Never raises: a failure is kept for :meth:`check`."""
        if self._error is not None or not self._jobs:
            return False
        job = self._jobs.popleft()
        try:
            job()
        except Exception as e:  # noqa: BLE001 - raised by check(), outside the shards' tick
            self._error = e
            return False
        self.in_waits += 1
        return True

    def check(self) -> None:
        """Raise the error of a job that failed in a wait (once)."""
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def drain(self) -> None:
        self.check()
        while self._jobs:
            self._jobs.popleft()()
