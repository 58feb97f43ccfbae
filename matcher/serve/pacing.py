"""Wake-ups from another thread, delivered to an event loop a few per turn.

A tick ends with one offer per matched ride, and each offer wakes one driver's long
poll. Woken all at once, a hundred long polls put their responses ahead of everything
else the loop had to do: a ride request that arrived meanwhile waited for all of them
(in ``serve_live``, the replica's slowest ride requests came in bursts, one per tick).
:class:`Pacer` delivers them ``per_turn`` at a time and then goes to the back of the
loop's queue, so work that was already waiting runs between two handfuls.

Guarantees: every call ``put`` accepts is made exactly once, on the loop's thread, in the
order of the ``put`` calls; a ``put`` never blocks on the loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

PER_TURN = 8


class Pacer:
    def __init__(self, loop: asyncio.AbstractEventLoop, per_turn: int = PER_TURN) -> None:
        self._loop = weakref.ref(loop)  # the loop owns its pacer (`pacer`), not the other way round
        self.per_turn = per_turn
        self._queue: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Call ``fn(arg)`` on the loop soon (safe from any thread)."""
        with self._lock:
            self._queue.append((fn, arg))
            if self._scheduled:
                return
            self._scheduled = True
        self._call_soon(threadsafe=True)

    def _call_soon(self, threadsafe: bool) -> None:
        loop = self._loop()
        if loop is None or loop.is_closed():
            return  # the loop is gone, and with it whoever waited
        (loop.call_soon_threadsafe if threadsafe else loop.call_soon)(self._turn)

    def _turn(self) -> None:
        for _ in range(self.per_turn):
            with self._lock:
                if not self._queue:
                    self._scheduled = False
                    return
                fn, arg = self._queue.popleft()
            try:
                fn(arg)
            except BaseException:
                self._call_soon(threadsafe=False)  # the others still get theirs
                raise
        self._call_soon(threadsafe=False)  # the rest after what is already waiting


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def pacer(loop: asyncio.AbstractEventLoop) -> Pacer:
    """The loop's pacer (one per loop, made on first use)."""
    p = _pacers.get(loop)
    if p is None:
        p = _pacers.setdefault(loop, Pacer(loop))
    return p
