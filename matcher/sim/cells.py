"""The replay's surge figures: every tick, the same pure surge step as the live service
(:mod:`matcher.core.surge`) on the tick's pending requests and available drivers, written
to OUT/cells.parquet (docs/run-output.md). Lives in the loop state, so a checkpoint
carries the smoothed state and a resumed run continues it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from matcher.config import SurgeConfig
from matcher.core import surge
from matcher.core.states import DriverStatus
from matcher.io.eventlog import CellLog
from matcher.sim.world import position_on


class ReplayCells:
    def __init__(self, out, t0_ms: int, cfg: SurgeConfig | None = None):
        self.cfg = cfg or SurgeConfig()
        self.t0_ms = t0_ms
        self.log = CellLog(out, first_part=0)
        self.state = surge.SurgeState.empty()
        self.last_t = -np.inf

    def snapshot(self, world, k: int, t: float, pending_idx: np.ndarray) -> Callable[[], None]:
        """One tick's cells. Demand: the requests pending at this tick; supply: the drivers
        available at it. Copies what it reads of the world now; the returned job does the rest
        (the cells, the surge step, the row) and reads nothing that changes after this call.
        Jobs must run in order (:class:`matcher.sim.deferred.Deferred`)."""
        rlat, rlng = world.r.plat[pending_idx], world.r.plng[pending_idx]  # copies
        seg = world.segments(np.flatnonzero(world.status == int(DriverStatus.AVAILABLE)))
        return lambda: self._step(k, t, rlat, rlng, seg)

    def _step(self, k: int, t: float, rlat, rlng, seg) -> None:
        lat, lng, _, _ = position_on(seg, t)
        rc = surge.cells_of(rlat, rlng, self.cfg)
        dc = surge.cells_of(lat, lng, self.cfg)
        dt = t - self.last_t if np.isfinite(self.last_t) else np.inf
        self.last_t = t
        self.state, cells = surge.step(self.state, rc, dc, float(dt), self.cfg)
        self.log.add(k, self.t0_ms + round(t * 1000.0), cells, self.cfg.precision)

    def flush(self) -> None:
        self.log.flush()

    def resumed(self) -> None:
        self.log.drop_after_checkpoint()

    def finish(self) -> None:
        self.log.finish()
