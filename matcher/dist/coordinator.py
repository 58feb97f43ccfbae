"""The coordinator: routes one tick's pings and requests to the shards, gathers
their answers and solves what they deferred. Talks only to a ShardBackend.

It keeps the latest report of every driver (a columnar table, one row per
driver). That table is what makes regions movable and shards replaceable: when
a hot region is split or merged, or a shard comes back empty after a crash,
the affected drivers' latest reports are simply sent again.

Guarantees (with the shard's, see :mod:`matcher.core.shard`):
- every online driver lives on exactly one owning shard, plus read-only halo
  copies on the shards whose regions lie within the candidate radius of it; a
  driver that moves into another shard's region is handed off (dropped by the
  old shards, inserted by the new) in the same tick, never lost or duplicated;
- a driver is offered by exactly one shard per tick, and the merged result has
  the objective of one global solve;
- a shard is waited for only when its answer can hold a match (:mod:`matcher.dist.answer`);
  the others' inputs go without waiting (:mod:`matcher.dist.backend`), and the event log is
  the one of waiting for every shard;
- a shard lost for good (its restarts used up) has its regions moved to the living
  shards, which are rebuilt from the latest reports, and the tick is run again;
  ``lost`` (run.json ``lost_shards``) says when and why.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from matcher.config import MatchConfig, Policy, ShardConfig
from matcher.core.candidates import RequestBatch, compat_matrix
from matcher.core.driver_table import Pings
from matcher.core.states import DriverStatus
from matcher.core.shard import Matches, TickInput, TickOutput, solve_deferred
from matcher.dist.answer import doubtful_reports, needs_answer
from matcher.dist.backend import ShardBackend, ShardLostError
from matcher.dist.ring import popcount64
from matcher.errors import RunStopped

I32Array = npt.NDArray[np.int32]
U64Array = npt.NDArray[np.uint64]


class Router(Protocol):
    """Where drivers and requests go. ``version`` changes whenever any answer may change."""

    @property
    def version(self) -> int: ...

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        """(owner shard, membership mask) of drivers at (lat, lng)."""
        ...

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        """Shard of each request (the owner of its pickup point)."""
        ...

    def observe(self, lat: Any, lng: Any) -> None:
        """The pending pickups of a tick (the load that may move regions)."""
        ...

    def remove_shard(self, shard: int) -> None:
        """A shard is lost for good: its regions go to the living shards (RunStopped if none is left)."""
        ...


class SingleRouter:
    """Everything on shard 0 (one shard: no borders)."""

    version = 0

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        n = len(lat)
        return np.zeros(n, np.int32), np.ones(n, np.uint64)

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        return np.zeros(len(lat), np.int32)

    def observe(self, lat: Any, lng: Any) -> None:
        return None

    def remove_shard(self, shard: int) -> None:
        raise RunStopped(f"shard {shard}, the only one, is lost (its restarts are used up)")


class GeoRouter:
    """Geohash regions on a consistent-hash ring (:class:`matcher.dist.sharding.RegionMap`),
    with hot regions split when their smoothed load passes ``hot_split_load``."""

    def __init__(self, shard: ShardConfig, match: MatchConfig) -> None:
        from matcher.dist.sharding import RegionMap

        self.map = RegionMap.from_config(shard, radius_m=match.radius_m)
        self.split_at = float(shard.hot_split_load)
        self.load: dict[str, float] = {}

    @property
    def version(self) -> int:
        return self.map.version

    def memberships(self, lat: Any, lng: Any) -> tuple[I32Array, U64Array]:
        return self.map.memberships(lat, lng, tight=True)

    def route_requests(self, lat: Any, lng: Any) -> I32Array:
        return self.map.route_requests(lat, lng)

    def remove_shard(self, shard: int) -> None:
        """The ring moves only the lost shard's regions, to the living shards."""
        if len(self.map.shards) <= 1:
            raise RunStopped(f"shard {shard}, the last living one, is lost (its restarts are used up)")
        self.map.remove_shard(shard)

    def observe(self, lat: Any, lng: Any) -> None:
        """Pending requests of a tick: smoothed per-region load drives splits and merges."""
        if self.split_at <= 0:
            return
        now = self.map.load_by_region(lat, lng)
        for r in set(self.load) | set(now):
            self.load[r] = 0.9 * self.load.get(r, 0.0) + 0.1 * now.get(r, 0)
        self.map.rebalance(self.load, self.split_at, self.split_at / 4)


def make_router(shard: ShardConfig, match: MatchConfig) -> Router:
    return SingleRouter() if shard.shards == 1 else GeoRouter(shard, match)


@dataclass
class Merged:
    """The shards' outputs of one tick merged into one answer."""

    matches: Matches
    shard_of: I32Array  # the shard that made each match
    deferred: int  # border requests (solved together, not on their shard)


def merge_outputs(
    outs: list[TickOutput], reqs: RequestBatch, owner: I32Array, policy: Policy, match: MatchConfig
) -> Merged:
    """THE merge step of shard outputs (coordinator, tests and bench all use it).

    The shards' local matches are kept as they are; the border components they
    deferred are solved together (:func:`matcher.core.shard.solve_deferred`) and
    offered through the driver's owning shard (`owner`, by driver key).
    """
    local = Matches.concat([o.matches for o in outs])
    local_shard = np.concatenate([np.full(len(o.matches), o.shard, np.int32) for o in outs] or [np.empty(0, np.int32)])
    dreq = np.concatenate([o.deferred_req for o in outs] or [np.empty(0, np.int64)])
    if len(dreq):
        srt = np.argsort(reqs.idx)
        wait = reqs.wait_s[srt[np.searchsorted(reqs.idx, dreq, sorter=srt)]]
        dm = solve_deferred(Matches.concat([o.deferred for o in outs]), dreq, wait, policy, match)
    else:
        dm = Matches.empty()
    shard_of = np.concatenate([local_shard, owner[dm.key]]).astype(np.int32)
    return Merged(Matches.concat([local, dm]), shard_of, len(dreq))


@dataclass
class TickStats:
    pending: int
    matched: int
    deferred: int
    fallbacks: int
    solve_ms_max: float
    refused_pings: int


class Coordinator:
    def __init__(
        self, backend: ShardBackend, router: Router, n_drivers: int, match: MatchConfig, shard: ShardConfig
    ) -> None:
        self.backend, self.router = backend, router
        self.k = backend.n_shards
        self.match, self.shard_cfg = match, shard
        self.member = np.zeros(n_drivers, np.uint64)  # bit s: shard s holds the driver
        self.owner = np.full(n_drivers, -1, np.int32)
        self.latest = _empty_reports(n_drivers)  # the latest report of every driver
        self.known = np.zeros(n_drivers, bool)
        self._version = router.version
        self.started = [False] * self.k
        self.handoffs = 0
        self.restarts = 0
        self.failures: list[tuple[int, str]] = []
        self.refusals: dict[str, int] = {}
        self.compat = compat_matrix(match.compat)  # [ride type, vehicle]: may serve
        self.doubtful = np.zeros(n_drivers, bool)  # a report of it may have been refused by a shard
        self.lost: list[dict[str, Any]] = []  # shards lost for good: {"shard", "tick", "reason"}
        self.answered = 0  # shard answers waited for
        self.unanswered = 0  # shard inputs sent without waiting

    def attach(self, backend: ShardBackend) -> None:
        """Drive a new set of (empty) shards, e.g. after a resume: the next tick rebuilds them."""
        self.backend = backend
        self.started = [False] * self.k
        self._version = -1  # forces a full re-send with reset

    def failed(self, tick: int, error: Exception) -> None:
        """A tick raised: shards may hold half-applied state, so rebuild them all next tick."""
        self.failures.append((tick, f"{type(error).__name__}: {error}"))
        self._version = -1

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["backend"] = None  # shards are rebuilt, never pickled
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        # checkpoints written before these fields existed: every driver is doubtful (answer always)
        d.setdefault("compat", compat_matrix(d["match"].compat))
        d.setdefault("doubtful", np.ones(len(d["known"]), bool))
        d.setdefault("lost", [])
        d.setdefault("answered", 0)
        d.setdefault("unanswered", 0)
        self.__dict__.update(d)

    def _count(self, outs: list[TickOutput]) -> None:
        for o in outs:
            for r, c in o.ping_refusals.items():
                self.refusals[r] = self.refusals.get(r, 0) + c

    def finish(self) -> None:
        """Wait for the inputs sent without waiting (end of run, checkpoint): their refusals count."""
        if self.backend is not None:
            self._count(self.backend.drain())

    def _rebuild_input(self, s: int, inp: TickInput) -> TickInput:
        bit = np.uint64(1) << np.uint64(s)
        sel = np.flatnonzero(self.known & ((self.member & bit) != 0))
        p = self.latest.take(sel)
        p.owned = self.owner[sel] == s
        p.shared = popcount64(self.member[sel]) > 1
        return TickInput(
            inp.tick, inp.now, p, np.empty(0, np.int64), inp.requests, inp.policy, inp.budget_ms, reset=True
        )

    def _remember(self, p: Pings) -> None:
        self.doubtful[p.key[doubtful_reports(p, self.latest.ts)]] = True
        for f in fields(Pings):
            getattr(self.latest, f.name)[p.key] = getattr(p, f.name)
        self.known[p.key] = True

    def tick(
        self, tick: int, now: float, pings: Pings, reqs: RequestBatch, policy: Policy
    ) -> tuple[Matches, I32Array, TickStats]:
        """One tick on all shards. Returns (matches, offering shard per match, stats)."""
        self._remember(pings)
        force = self.router.version != self._version
        if force:
            # regions moved: re-send every known driver so each shard holds exactly its own
            self._version = self.router.version
            pings = self.latest.take(np.flatnonzero(self.known))
        keys = pings.key
        owner, mask = self.router.memberships(pings.lat, pings.lng)
        old = self.member[keys]
        moved = (self.owner[keys] >= 0) & (self.owner[keys] != owner)
        self.handoffs += int(moved.sum())
        self.member[keys] = mask
        self.owner[keys] = owner
        shared = popcount64(mask) > 1
        req_shard = self.router.route_requests(reqs.lat, reqs.lng)
        inputs = []
        for s in range(self.k):
            bit = np.uint64(1) << np.uint64(s)
            sel = np.flatnonzero(mask & bit)
            p = pings.take(sel)
            p.owned = owner[sel] == s
            p.shared = shared[sel]
            gone = keys[((old & bit) != 0) & ((mask & bit) == 0)]
            inputs.append(
                TickInput(
                    tick,
                    now,
                    p,
                    gone,
                    reqs.take(np.flatnonzero(req_shard == s)),
                    policy,
                    self.shard_cfg.solve_budget_ms,
                    reset=force,
                    expect_state=self.started[s],
                )
            )
        answer = needs_answer(
            inputs, now, self.latest, self.known, self.doubtful, self.member, self.compat, self.match
        )
        for inp, want in zip(inputs, answer, strict=True):
            inp.solve = want  # an answer known to be empty needs no solve either
        try:
            outs = [o for o in self.backend.tick(inputs, answer) if o is not None]
            lost = [o.shard for o in outs if o.restarted]
            while lost:
                # a shard came back empty after a crash: rebuild it from the latest reports and
                # run the same tick again (the others answer from their stored result); again if
                # another shard died meanwhile (a rebuilt shard never answers `restarted`, so this
                # loops only on real process deaths, which Ray bounds with max_restarts)
                self.restarts += len(lost)
                for s in lost:
                    inputs[s] = self._rebuild_input(s, inputs[s])
                again = [inputs[s] if answer[s] else None for s in range(self.k)]
                outs = [o for o in self.backend.tick(again, answer) if o is not None]
                lost = [o.shard for o in outs if o.restarted]
        except ShardLostError as e:
            # its regions move to the living shards; a new region version re-sends every
            # report with reset, so the living shards are rebuilt, and the tick runs again
            self.router.remove_shard(e.shard)  # RunStopped if it was the last one
            self.lost.append({"shard": e.shard, "tick": tick, "reason": e.detail})
            return self.tick(tick, now, pings, reqs, policy)
        self.answered += len(outs)
        self.unanswered += self.k - sum(answer)
        for s in range(self.k):
            self.started[s] = True
        self._count(outs)
        self._count(self.backend.late())
        merged = merge_outputs(outs, reqs, self.owner, policy, self.match)
        if len(reqs):
            self.router.observe(reqs.lat, reqs.lng)
        stats = TickStats(
            pending=len(reqs),
            matched=len(merged.matches),
            deferred=merged.deferred,
            fallbacks=sum(o.fallback for o in outs),
            solve_ms_max=max((o.solve_ms for o in outs), default=0.0),
            refused_pings=sum(sum(o.ping_refusals.values()) for o in outs),
        )
        return merged.matches, merged.shard_of, stats


def _empty_reports(n: int) -> Pings:
    return Pings(
        key=np.arange(n, dtype=np.int64),
        lat=np.zeros(n),
        lng=np.zeros(n),
        heading=np.zeros(n, np.float32),
        speed=np.zeros(n, np.float32),
        status=np.full(n, DriverStatus.AVAILABLE, np.int8),
        vehicle=np.zeros(n, np.int8),
        rating=np.zeros(n, np.float32),
        ts=np.full(n, -np.inf),
        owned=np.ones(n, bool),
        shared=np.zeros(n, bool),
    )
