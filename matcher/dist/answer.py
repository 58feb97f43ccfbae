"""Which shards must answer a tick: the coordinator waits only for those.

A shard's answer holds something (a match, or a deferred edge) only if one of its
requests has a candidate: a driver the shard holds that is available, fresh, of a
compatible vehicle and within the radius. The coordinator knows the latest report of
every driver and which shards hold it, so it can rule out shards whose answer must be
empty; their inputs go without waiting (:mod:`matcher.dist.backend`).

Guarantee: ``needs_answer`` is conservative: a superset of the shards whose answer can
hold an edge. It leaves out the drivers a request barred by a decline (the shard never
offers them that request again: ``core.candidates``), uses a radius a little larger than
the shard's, checks vehicle types only on small ticks, and a driver whose report a shard may
have refused (``doubtful_reports``) counts as near every request from then on. So waiting
only for these shards gives the event log of waiting for all of them (golden tests).
The coordinator asks `needs_answer_routed`, the same answer for the tick's whole request
batch and the shard each request is routed to, in one pass instead of one per shard.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from matcher.config import VEHICLE_TYPES, MatchConfig
from matcher.core import geo
from matcher.core.candidates import RequestBatch
from matcher.core.driver_table import Pings
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


def _maybe_candidates(
    now: float, latest: Pings, known: BoolArray, doubtful: BoolArray, match: MatchConfig
) -> tuple[npt.NDArray[np.int64], BoolArray]:
    """The drivers that may be a candidate now (available and fresh, or doubtful: near every
    request), and the doubtful mask."""
    fresh = known & (latest.status == int(DriverStatus.AVAILABLE)) & (now - latest.ts <= match.gps_timeout_s)
    doubt: BoolArray = known & doubtful
    return np.flatnonzero(fresh | doubt), doubt


def needs_answer(
    requests: Sequence[RequestBatch],
    now: float,
    latest: Pings,
    known: BoolArray,
    doubtful: BoolArray,
    member: U64Array,
    compat: BoolArray,
    match: MatchConfig,
) -> list[bool]:
    """Shard s must answer iff one of its requests (``requests[s]``) may have a candidate among its drivers.

    The definition, one shard at a time; the coordinator asks `needs_answer_routed`, which is
    tested against it."""
    maybe, doubt = _maybe_candidates(now, latest, known, doubtful, match)
    answer = [False] * len(requests)
    if len(maybe) == 0:
        return answer
    bits, anywhere = member[maybe], doubt[maybe]
    chord = float(geo.chord_for_distance(match.radius_m)) * (1 + 1e-6)
    xyz: F64Array | None = None
    for s, reqs in enumerate(requests):
        if len(reqs) == 0:
            continue
        held = (bits & (np.uint64(1) << np.uint64(s))) != 0
        if not held.any():
            continue
        if (anywhere & held).any():
            answer[s] = True
            continue
        if xyz is None:
            xyz = geo.to_unit_xyz(latest.lat[maybe], latest.lng[maybe])
        answer[s] = _any_candidate(reqs, xyz[held], maybe[held], latest, compat, chord)
    return answer


def needs_answer_routed(
    reqs: RequestBatch,
    req_shard: npt.NDArray[np.int32],
    k: int,
    now: float,
    latest: Pings,
    known: BoolArray,
    doubtful: BoolArray,
    member: U64Array,
    compat: BoolArray,
    match: MatchConfig,
) -> list[bool]:
    """`needs_answer` of the batches ``reqs`` split by ``req_shard`` (the shard each request is
    routed to; -1: none), without splitting it: one pass over all requests and drivers when
    they are few (a request and a driver pair up only if the driver is held by the request's
    shard), the per-shard pass otherwise. Same answer as `needs_answer` (tested against it)."""
    answer = np.zeros(k, bool)
    routed = (req_shard >= 0) & (req_shard < k)
    has = np.zeros(k, bool)
    has[req_shard[routed]] = True
    maybe, doubt = _maybe_candidates(now, latest, known, doubtful, match)
    if len(maybe) == 0 or not has.any():
        return [False] * k
    bits = member[maybe]
    anywhere = doubt[maybe]
    if anywhere.any():  # a doubtful driver a shard holds: that shard answers (as `needs_answer`)
        lanes = np.bitwise_or.reduce(bits[anywhere])
        answer |= has & (((lanes >> np.arange(k, dtype=np.uint64)) & np.uint64(1)) != 0)
    rows = np.flatnonzero(routed)
    rows = rows[~answer[req_shard[rows]]]
    if len(rows) == 0:
        return list(answer.tolist())
    chord = float(geo.chord_for_distance(match.radius_m)) * (1 + 1e-6)
    xyz = geo.to_unit_xyz(latest.lat[maybe], latest.lng[maybe])
    if len(rows) * len(maybe) <= BRUTE_FORCE_PAIRS:
        shard = req_shard[rows].astype(np.uint64)
        near = compat[reqs.ride_type[rows]][:, latest.vehicle[maybe]]
        near &= ((bits[None, :] >> shard[:, None]) & np.uint64(1)) != 0
        r = geo.to_unit_xyz(reqs.lat[rows], reqs.lng[rows])
        near &= ((r[:, None, :] - xyz[None, :, :]) ** 2).sum(axis=2) <= chord * chord
        if len(reqs.barred_req) and near.any():
            pos = _positions(reqs.idx[rows], reqs.barred_req)
            col = _positions(maybe, reqs.barred_key)
            hit = (pos >= 0) & (col >= 0)
            near[pos[hit], col[hit]] = False
        answer[req_shard[rows][near.any(axis=1)]] = True
        return list(answer.tolist())
    for s in np.unique(req_shard[rows]):
        held = (bits & (np.uint64(1) << np.uint64(s))) != 0
        if held.any():
            mine = reqs.take(rows[req_shard[rows] == s])
            answer[s] = _any_candidate(mine, xyz[held], maybe[held], latest, compat, chord)
    return list(answer.tolist())


def _any_candidate(
    reqs: RequestBatch, d: F64Array, keys: npt.NDArray[np.int64], latest: Pings, compat: BoolArray, chord: float
) -> bool:
    """Whether a request of ``reqs`` has a driver of ``keys`` (unit vectors ``d``) within ``chord``
    that its declines do not bar (``RequestBatch.barred_*``: a driver that declined a request is
    never offered it again, so on a tick where the only drivers near the pending requests are
    ones that declined them, the shard's answer is empty and nobody waits for it)."""
    r = geo.to_unit_xyz(reqs.lat, reqs.lng)
    n_barred = len(reqs.barred_req)
    if len(d) * len(r) <= BRUTE_FORCE_PAIRS:
        near = compat[reqs.ride_type][:, latest.vehicle[keys]]
        near &= ((r[:, None, :] - d[None, :, :]) ** 2).sum(axis=2) <= chord * chord
        if n_barred and near.any():
            pos = _positions(reqs.idx, reqs.barred_req)
            col = _positions(keys, reqs.barred_key)
            hit = (pos >= 0) & (col >= 0)
            near[pos[hit], col[hit]] = False
        return bool(near.any())
    # many pairs: the B + 1 nearest drivers of each request (B: the most drivers any request
    # barred) hold an unbarred one whenever one is within reach
    per_req = np.bincount(_positions(reqs.idx, reqs.barred_req) + 1, minlength=1)[1:] if n_barred else np.zeros(0)
    k = 1 + int(per_req.max(initial=0))
    k = min(k, len(d))
    dist, which = cKDTree(d).query(r, k=k, distance_upper_bound=chord)
    dist, which = dist.reshape(len(r), k), which.reshape(len(r), k)
    ok = np.isfinite(dist)
    if n_barred and ok.any():
        pair = reqs.idx[:, None] * _BIG + keys[np.minimum(which, len(keys) - 1)]
        ok &= ~np.isin(pair, reqs.barred_req * _BIG + reqs.barred_key)
    return bool(ok.any())


_BIG = np.int64(1) << 40  # packs (request idx, driver key) into one int64, as core.candidates does


def _positions(where: npt.NDArray[np.int64], what: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The position of each value of ``what`` in ``where`` (values unique), -1 where it is absent."""
    if len(where) == 0:
        return np.full(len(what), -1, np.int64)
    order = np.argsort(where, kind="stable")
    at = np.minimum(np.searchsorted(where[order], what), len(where) - 1)
    out: npt.NDArray[np.int64] = np.where(where[order][at] == what, order[at], -1).astype(np.int64)
    return out
