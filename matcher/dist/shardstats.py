"""Per-shard figures of every tick: the rows of ``OUT/shards.parquet`` (docs/run-output.md).

One row per tick and shard: ``tick``, ``shard``, ``drivers`` (owned after the
tick), ``halo_drivers`` (read-only copies), ``pending`` (requests routed to the
shard), ``matched`` (matches the shard made, in either round), ``border`` (its
requests that went to round 2, wherever they were solved), ``solve_ms`` (CPU
time on the shard's thread: round 1, pings included, plus round 2),
``handoffs_in`` and ``handoffs_out`` (drivers whose owner became / stopped
being this shard). Columnar numpy lists; no per-row Python objects.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from matcher.core.shard import TickOutput
from matcher.dist.merge import Merged

__all__ = ["COLUMNS", "ShardStats"]

COLUMNS = (
    "tick",
    "shard",
    "drivers",
    "halo_drivers",
    "pending",
    "matched",
    "border",
    "solve_ms",
    "handoffs_in",
    "handoffs_out",
)


class ShardStats:
    """Accumulates the per-shard rows of a run (one block of K rows per tick)."""

    def __init__(self, n_shards: int) -> None:
        self.k = n_shards
        self._blocks: dict[str, list[npt.NDArray[np.generic]]] = {c: [] for c in COLUMNS}

    def add(
        self,
        tick: int,
        outs: list[TickOutput],
        merged: Merged,
        handoffs_in: npt.NDArray[np.int64],
        handoffs_out: npt.NDArray[np.int64],
    ) -> None:
        b = self._blocks
        b["tick"].append(np.full(self.k, tick, np.int64))
        b["shard"].append(np.arange(self.k, dtype=np.int32))
        b["drivers"].append(np.array([o.drivers for o in outs], np.int32))
        b["halo_drivers"].append(np.array([o.halo_drivers for o in outs], np.int32))
        b["pending"].append(np.array([o.pending for o in outs], np.int32))
        b["matched"].append(merged.matched_by.astype(np.int32))
        b["border"].append(np.array([len(o.deferred_req) for o in outs], np.int32))
        b["solve_ms"].append(np.array([o.cpu_ms for o in outs], np.float64) + merged.border_cpu_ms)
        b["handoffs_in"].append(np.asarray(handoffs_in, np.int32))
        b["handoffs_out"].append(np.asarray(handoffs_out, np.int32))

    def __len__(self) -> int:
        return sum(len(x) for x in self._blocks["tick"])

    def columns(self) -> dict[str, npt.NDArray[np.generic]]:
        """The rows so far, one array per column (COLUMNS order)."""
        empty = {"solve_ms": np.float64, "tick": np.int64}
        return {c: np.concatenate(v) if v else np.empty(0, empty.get(c, np.int32)) for c, v in self._blocks.items()}
