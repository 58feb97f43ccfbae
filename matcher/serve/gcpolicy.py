"""Garbage collection for a process that must answer within milliseconds.

CPython's full (generation 2) collection scans every tracked object and holds the GIL
while it does. In the service's replica, 2,500 driver apps each holding a long poll keep
about 400,000 objects alive (a coroutine stack, tasks, futures and headers per request),
and the allocation churn of the requests around them triggered a full collection every
1-2 s that took 250-450 ms and freed nothing (measured with ``gc.callbacks`` on this
machine, bench ``serve_live`` rides phase). Every request in flight waited for it.

:func:`rare_full_collections` keeps the young generations as they are (they are cheap and
free most garbage), freezes what is alive at startup (modules, the app: never garbage)
out of every later scan, and runs the full collection on a timer instead of on
allocation counts: a cyclic garbage object lives at most ``every_s`` longer than it
would have, and the service pauses once per ``every_s`` instead of every second or two.
"""

from __future__ import annotations

import gc
import threading
import time

FULL_EVERY_S = 120.0
_started: list[threading.Thread] = []  # the collecting thread, once the policy is applied


def rare_full_collections(every_s: float = FULL_EVERY_S) -> threading.Thread:
    """Apply the policy to this process (idempotent); returns the collecting thread."""
    if _started:
        return _started[0]
    gc.collect()
    gc.freeze()
    young0, young1, _ = gc.get_threshold()
    # threshold 2 counts generation-1 collections between full ones: effectively never by count
    gc.set_threshold(young0, young1, 1 << 30)

    def run() -> None:
        while True:
            time.sleep(every_s)
            gc.collect()

    thread = threading.Thread(target=run, name="matcher-full-gc", daemon=True)
    thread.start()
    _started.append(thread)
    return thread
