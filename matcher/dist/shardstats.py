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

from collections.abc import Callable

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


StateRows = Callable[[], tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]]


class ShardStats:
    """Accumulates the per-shard rows of a run (one block of K rows per tick), indexed by shard id.

    A shard that was waited for fills its row from its output. A shard that was not
    (its answer could hold no match) gets ``drivers``, ``halo_drivers`` and
    ``pending`` from the coordinator's state (`add`'s `state`), then, once its late
    output arrives (`late`), the shard's own numbers and its CPU time. A lost shard
    keeps the coordinator's numbers. ``matched`` and round-2 CPU come from the merge.
    """

    def __init__(self, n_shards: int) -> None:
        self.k = n_shards
        self._blocks: dict[str, list[npt.NDArray[np.generic]]] = {c: [] for c in COLUMNS}
        self._at: dict[int, int] = {}  # tick -> its block

    def add(
        self,
        tick: int,
        outs: list[TickOutput],
        merged: Merged,
        handoffs_in: npt.NDArray[np.int64],
        handoffs_out: npt.NDArray[np.int64],
        state: StateRows | None = None,
    ) -> None:
        b, k = self._blocks, self.k
        drivers, halo, pending = np.zeros(k, np.int32), np.zeros(k, np.int32), np.zeros(k, np.int32)
        border, solve = np.zeros(k, np.int32), np.zeros(k, np.float64)
        if len(outs) < k and state is not None:
            own, held, pend = state()
            drivers[:], halo[:], pending[:] = own, held, pend
        for o in outs:
            drivers[o.shard], halo[o.shard], pending[o.shard] = o.drivers, o.halo_drivers, o.pending
            border[o.shard], solve[o.shard] = len(o.deferred_req), o.cpu_ms
        self._at[tick] = len(b["tick"])
        b["tick"].append(np.full(k, tick, np.int64))
        b["shard"].append(np.arange(k, dtype=np.int32))
        b["drivers"].append(drivers)
        b["halo_drivers"].append(halo)
        b["pending"].append(pending)
        b["matched"].append(merged.matched_by.astype(np.int32))
        b["border"].append(border)
        b["solve_ms"].append(solve + merged.border_cpu_ms)
        b["handoffs_in"].append(np.asarray(handoffs_in, np.int32))
        b["handoffs_out"].append(np.asarray(handoffs_out, np.int32))

    def late(self, outs: list[TickOutput]) -> None:
        """Outputs of inputs that were not waited for: their shard's row of their tick gets its numbers."""
        b = self._blocks
        for o in outs:
            i = self._at.get(o.tick)
            if i is None:
                continue  # a tick whose row was never added (it failed and was retried)
            s = o.shard
            b["drivers"][i][s], b["halo_drivers"][i][s], b["pending"][i][s] = o.drivers, o.halo_drivers, o.pending
            b["border"][i][s] = len(o.deferred_req)
            b["solve_ms"][i][s] += o.cpu_ms

    def __setstate__(self, d: dict[str, object]) -> None:
        d.setdefault("_at", {})  # checkpoints written before late outputs were counted
        self.__dict__.update(d)

    def __len__(self) -> int:
        return sum(len(x) for x in self._blocks["tick"])

    def take(self) -> dict[str, npt.NDArray[np.generic]]:
        """The rows so far (as `columns`), then forgets them, so that a long run holds (and a
        checkpoint pickles) only the rows since the last take.

        Call it only when every output is in (after ``Coordinator.finish``): a late output
        of a tick taken before is not counted."""
        cols = self.columns()
        self._blocks = {c: [] for c in COLUMNS}
        self._at = {}
        return cols

    def columns(self) -> dict[str, npt.NDArray[np.generic]]:
        """The rows so far, one array per column (COLUMNS order)."""
        empty = {"solve_ms": np.float64, "tick": np.int64}
        return {c: np.concatenate(v) if v else np.empty(0, empty.get(c, np.int32)) for c, v in self._blocks.items()}
