"""Which shards must answer a tick: the coordinator waits only for those.

A shard's answer holds something (a match, or a deferred edge) only if one of its
requests has a candidate: a driver the shard holds that is available, fresh, of a
compatible vehicle and within the radius. The coordinator knows the latest report of
every driver and which shards hold it, so it can rule out shards whose answer must be
empty; their inputs go without waiting (:mod:`matcher.dist.backend`).

Guarantee: ``needs_answer`` is conservative: a superset of the shards whose answer can
hold an edge. It never filters by declines, uses a radius a little larger than the
shard's, checks vehicle types only on small ticks, and a driver whose report a shard may
have refused (``doubtful_reports``) counts as near every request from then on. So waiting
only for these shards gives the event log of waiting for all of them (golden tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from matcher.config import VEHICLE_TYPES, MatchConfig
from matcher.core import geo
from matcher.core.driver_table import Pings
from matcher.core.shard import TickInput
from matcher.core.states import DriverStatus

BoolArray = npt.NDArray[np.bool_]
U64Array = npt.NDArray[np.uint64]
F64Array = npt.NDArray[np.float64]

BRUTE_FORCE_PAIRS = 65_536  # request x driver pairs checked directly (vehicle types included); a KD-tree above


def doubtful_reports(p: Pings, latest_ts: F64Array) -> BoolArray:
    """Reports a shard may refuse (the rules of ``DriverTable.apply_pings``): after one, the
    coordinator's latest report of that driver may differ from the shard's view of it."""
    odd = ~(np.isfinite(p.lat) & np.isfinite(p.lng) & (np.abs(p.lat) <= 90) & (np.abs(p.lng) <= 180))
    odd |= ~np.isfinite(p.ts) | (p.ts < latest_ts[p.key])
    odd |= (p.status < 0) | (p.status >= len(DriverStatus)) | (p.vehicle < 0) | (p.vehicle >= len(VEHICLE_TYPES))
    if len(p.key):
        odd |= np.bincount(p.key)[p.key] > 1  # a key twice in one batch
    out: BoolArray = odd
    return out


def needs_answer(
    inputs: Sequence[TickInput],
    now: float,
    latest: Pings,
    known: BoolArray,
    doubtful: BoolArray,
    member: U64Array,
    compat: BoolArray,
    match: MatchConfig,
) -> list[bool]:
    """Shard s must answer iff one of its requests may have a candidate among its drivers."""
    fresh = known & (latest.status == int(DriverStatus.AVAILABLE)) & (now - latest.ts <= match.gps_timeout_s)
    doubt = known & doubtful
    maybe = np.flatnonzero(fresh | doubt)
    answer = [False] * len(inputs)
    if len(maybe) == 0:
        return answer
    bits, anywhere = member[maybe], doubt[maybe]
    chord = float(geo.chord_for_distance(match.radius_m)) * (1 + 1e-6)
    xyz: F64Array | None = None
    for s, inp in enumerate(inputs):
        if len(inp.requests) == 0:
            continue
        held = (bits & (np.uint64(1) << np.uint64(s))) != 0
        if not held.any():
            continue
        if (anywhere & held).any():
            answer[s] = True
            continue
        if xyz is None:
            xyz = geo.to_unit_xyz(latest.lat[maybe], latest.lng[maybe])
        d, r = xyz[held], geo.to_unit_xyz(inp.requests.lat, inp.requests.lng)
        if len(d) * len(r) <= BRUTE_FORCE_PAIRS:
            ok = compat[inp.requests.ride_type][:, latest.vehicle[maybe[held]]]
            near = ok & (((r[:, None, :] - d[None, :, :]) ** 2).sum(axis=2) <= chord * chord)
            answer[s] = bool(near.any())
        else:
            dist, _ = cKDTree(d).query(r, k=1, distance_upper_bound=chord)
            answer[s] = bool(np.isfinite(dist).any())
    return answer
