"""Where shards run. The coordinator talks only to this interface.

``InProcessBackend`` keeps the :class:`~matcher.core.shard.ShardState` objects in the
calling process (no Ray); ``matcher.dist.ray_backend.RayBackend`` puts each in a Ray
actor. Both run the same shard code on the same inputs, so they give the same
results.

The tick protocol (both backends):

- ``tick(inputs, answer)`` hands shard ``s`` its input ``inputs[s]`` (``None``: nothing for
  that shard this call). Only the shards with ``answer[s]`` are waited for; their outputs
  come back in shard order, the others' entries are ``None``.
- A shard's inputs are applied in the order they were given, whether they were answered
  or not, and each exactly once (ticks are idempotent by tick id). An unanswered input
  may be applied later, but always before the next answered one of that shard, so an
  answered output always reflects every earlier input.
- The outputs of unanswered inputs are not lost: ``late()`` returns those that have
  completed since the last call (each shard's in tick order), ``drain()`` waits for all of
  them. Their ping refusals are counted from there.
- A shard that died for good (its restarts used up) raises :class:`ShardLostError` from
  ``tick``; from then on its inputs are ignored and it never answers.
- ``tick(..., idle)`` and ``solve_border(..., idle)``: a backend that waits for answers
  (Ray) runs the caller's other work while it waits, one piece per ``idle()`` call, until
  the answers are in or ``idle()`` returns False. The replay hands it the surge cells of
  past ticks (:mod:`matcher.sim.deferred`); the results are the same whenever they run.

What needs no answer is the coordinator's call (see ``Coordinator.tick``): a shard with no
request, or with no driver that could be offered, can produce no match and no deferred
edge, so nothing of its output is needed before the next tick.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from matcher.config import MatchConfig, ShardConfig
from matcher.core.shard import BorderResult, BorderTask, ShardState, TickInput, TickOutput


class ShardLostError(Exception):
    """A shard's actor is dead for good (its restarts are used up); it takes no more input."""

    def __init__(self, shard: int, detail: str):
        super().__init__(f"shard {shard} is lost: {detail}")
        self.shard = shard
        self.detail = detail


Idle = Callable[[], bool]
"""One piece of the caller's other work per call; False once there is none (``ShardBackend.tick``)."""


class ShardBackend(Protocol):
    n_shards: int

    def tick(
        self, inputs: Sequence[TickInput | None], answer: Sequence[bool], idle: Idle | None = None
    ) -> list[TickOutput | None]:
        """Give shard s ``inputs[s]``; wait only for the shards with ``answer[s]`` (module docstring).

        ``idle``: the caller's other work, run while the answers are awaited: called again
        and again, each call one piece of work, until the answers are in or it returns False
        (nothing left). A backend that does not wait (in-process) never calls it."""
        ...

    def late(self) -> list[TickOutput]:
        """Outputs of unanswered inputs completed since the last call (never blocks)."""
        ...

    def drain(self) -> list[TickOutput]:
        """Send everything held back, wait for it, and return the outputs ``late`` has not returned."""
        ...

    def solve_border(self, tasks: dict[int, BorderTask], idle: Idle | None = None) -> dict[int, BorderResult]:
        """Round 2 of a tick, only on ticks with border work: shard s solves tasks[s]; gathered by
        shard. ``idle``: as for :meth:`tick`."""
        ...

    def close(self) -> None: ...


BackendFactory = Callable[[ShardConfig, MatchConfig, str], ShardBackend]
"""``(shard config, match config, run name) -> backend``: what ``run_replay(backend_factory=...)`` takes."""


class InProcessBackend:
    """Every shard in this process: inputs are applied at once, answered or not."""

    def __init__(self, n_shards: int, match: MatchConfig):
        self.n_shards = n_shards
        self.shards = [ShardState(s, match) for s in range(n_shards)]
        self._late: list[TickOutput] = []

    def tick(
        self, inputs: Sequence[TickInput | None], answer: Sequence[bool], idle: Idle | None = None
    ) -> list[TickOutput | None]:
        outs: list[TickOutput | None] = []
        for shard, inp, want in zip(self.shards, inputs, answer):
            out = shard.tick(inp) if inp is not None else None
            if out is not None and not want:
                self._late.append(out)
                out = None
            outs.append(out)
        return outs

    def late(self) -> list[TickOutput]:
        done, self._late = self._late, []
        return done

    def drain(self) -> list[TickOutput]:
        return self.late()

    def solve_border(self, tasks: dict[int, BorderTask], idle: Idle | None = None) -> dict[int, BorderResult]:
        return {s: self.shards[s].solve_border(t) for s, t in tasks.items()}

    def close(self) -> None:
        pass


def keep_embedded_ray_on_loopback() -> None:
    """An embedded Ray is one machine: keep every Ray socket on 127.0.0.1.

    Ray 2.60 rewrites ``_node_ip_address="127.0.0.1"`` to the machine's address unless
    its multi-node support is off, which it reads once at import. So this must run
    before ray is imported, and never for a cluster whose nodes are not on 127.0.0.1
    (see :mod:`matcher.dist.runmode`, which decides).
    """
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def make_backend(shard: ShardConfig, match: MatchConfig, run_name: str, quiet: bool = False) -> ShardBackend:
    """The default backend factory: ``shard.backend`` names it (``quiet``: Ray's banners stay out)."""
    if shard.backend == "inprocess":
        return InProcessBackend(shard.shards, match)
    if shard.backend == "ray":
        from matcher.dist.runmode import resolve_target

        target = resolve_target(shard.address, os.environ)
        if target.loopback:
            keep_embedded_ray_on_loopback()  # before ray is imported
        from matcher.dist.ray_backend import RayBackend  # the only module that imports ray

        return RayBackend(shard, match, run_name, target, quiet=quiet)
    raise ValueError(f"unknown backend {shard.backend!r}")
