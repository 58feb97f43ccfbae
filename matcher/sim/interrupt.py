"""Stopping a run on Ctrl-C or SIGTERM so that it can be resumed.

The command line installs :func:`install` for SIGINT and SIGTERM. While the
replay loop runs (inside :func:`graceful`), the first signal only sets a flag:
the loop sees it at the next tick boundary, writes a checkpoint there (the
state between two ticks, which a resume continues exactly) and raises
:class:`Interrupted`. A second signal, or one that arrives outside the loop
(reading the trace, writing the summary), raises :class:`Interrupted` at once;
the run can then be resumed from its last periodic checkpoint, if it has one.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["Interrupted", "graceful", "install", "reclaim", "requested", "restore"]

_state: dict = {"graceful": 0, "signum": None, "installed": False}


class Interrupted(BaseException):  # like KeyboardInterrupt: not an error of the run
    """The run was stopped by a signal; ``signum`` says which (exit code 128 + signum)."""

    def __init__(self, signum: int, checkpointed: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.checkpointed = checkpointed  # a checkpoint was written at the moment of the stop


def requested() -> int | None:
    """The signal that asked the running loop to stop, if any."""
    return _state["signum"]


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Inside: the first signal is a request the loop honours at the next tick boundary."""
    _state["graceful"] += 1
    try:
        yield
    finally:
        _state["graceful"] -= 1


def _handler(signum: int, frame) -> None:
    if _state["graceful"] and _state["signum"] is None:
        _state["signum"] = signum
        return
    raise Interrupted(signum)


def install() -> dict:
    """Route SIGINT and SIGTERM through this module (main thread only, at the edge); returns the
    handlers it replaced, for :func:`restore`."""
    _state["signum"] = None
    saved = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        saved[s] = signal.signal(s, _handler)
    _state["installed"] = True
    return saved


def reclaim() -> None:
    """Install the handlers again if :func:`install` ran: ``ray.init`` replaces the SIGTERM handler
    with its own (which exits with code 15 and no word) and Ray's native code may install one that
    dumps its stack; call it after starting and after closing a backend."""
    import threading

    if _state["installed"] and threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _handler)  # always: native code may have replaced the OS-level handler unseen


def restore(saved: dict) -> None:
    for s, h in saved.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    _state["signum"] = None
    _state["installed"] = False
