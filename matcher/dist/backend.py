"""Where shards run. The coordinator talks only to this interface.

``InProcessBackend`` keeps the :class:`~matcher.core.shard.ShardState` objects in the
calling process (no Ray); ``matcher.dist.ray_backend.RayBackend`` puts each in a Ray
actor. Both run the same shard code on the same inputs, so they give the same
results.
"""

from __future__ import annotations

import os
import sys
from typing import Protocol

from matcher.config import MatchConfig, ShardConfig
from matcher.core.shard import BorderResult, BorderTask, ShardState, TickInput, TickOutput


class ShardBackend(Protocol):
    n_shards: int

    def tick(self, inputs: list[TickInput]) -> list[TickOutput]:
        """Run one tick on every shard (inputs[s] for shard s) and gather the outputs in shard order."""
        ...

    def solve_border(self, tasks: dict[int, BorderTask]) -> dict[int, BorderResult]:
        """Round 2 of a tick, only on ticks with border work: shard s solves tasks[s]; gathered by shard."""
        ...

    def close(self) -> None: ...


class InProcessBackend:
    def __init__(self, n_shards: int, match: MatchConfig):
        self.n_shards = n_shards
        self.shards = [ShardState(s, match) for s in range(n_shards)]

    def tick(self, inputs: list[TickInput]) -> list[TickOutput]:
        return [s.tick(i) for s, i in zip(self.shards, inputs)]

    def solve_border(self, tasks: dict[int, BorderTask]) -> dict[int, BorderResult]:
        return {s: self.shards[s].solve_border(t) for s, t in tasks.items()}

    def close(self) -> None:
        pass


def keep_embedded_ray_on_loopback() -> None:
    """An embedded Ray is one machine: keep every Ray socket on 127.0.0.1.

    Ray 2.60 rewrites ``_node_ip_address="127.0.0.1"`` to the machine's address unless
    its multi-node support is off, which it reads once at import. So this must run
    before ray is imported, and never for ``--address`` (a real cluster must reach us).
    """
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def make_backend(shard: ShardConfig, match: MatchConfig, run_name: str) -> ShardBackend:
    if shard.backend == "inprocess":
        return InProcessBackend(shard.shards, match)
    if shard.backend == "ray":
        if shard.address is None:
            keep_embedded_ray_on_loopback()
        from matcher.dist.ray_backend import RayBackend  # the only module that imports ray

        return RayBackend(shard, match, run_name)
    raise ValueError(f"unknown backend {shard.backend!r}")
