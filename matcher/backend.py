"""Where shards run. The coordinator talks only to this interface.

``InProcessBackend`` keeps the :class:`~matcher.shard.ShardState` objects in the
calling process (no Ray); ``matcher.ray_backend.RayBackend`` puts each in a Ray
actor. Both run the same shard code on the same inputs, so they give the same
results.
"""
from __future__ import annotations

from typing import Protocol

from .config import MatchConfig, ShardConfig
from .shard import ShardState, TickInput, TickOutput


class ShardBackend(Protocol):
    n_shards: int

    def tick(self, inputs: list[TickInput]) -> list[TickOutput]:
        """Run one tick on every shard (inputs[s] for shard s) and gather the outputs in shard order."""
        ...

    def close(self) -> None: ...


class InProcessBackend:
    def __init__(self, n_shards: int, match: MatchConfig):
        self.n_shards = n_shards
        self.shards = [ShardState(s, match) for s in range(n_shards)]

    def tick(self, inputs: list[TickInput]) -> list[TickOutput]:
        return [s.tick(i) for s, i in zip(self.shards, inputs)]

    def close(self) -> None:
        pass


def make_backend(shard: ShardConfig, match: MatchConfig, run_name: str) -> ShardBackend:
    if shard.backend == "inprocess":
        return InProcessBackend(shard.shards, match)
    if shard.backend == "ray":
        from .ray_backend import RayBackend  # the only module that imports ray

        return RayBackend(shard, match, run_name)
    raise ValueError(f"unknown backend {shard.backend!r}")
