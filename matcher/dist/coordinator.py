"""The coordinator: routes one tick's pings and requests to the shards, gathers
their answers and merges them (border components solved on the shards, see
:mod:`matcher.dist.merge`). Talks only to a ShardBackend and a Router.

It keeps the latest report of every driver (a columnar table, one row per
driver). That table is what makes regions movable and shards replaceable: when
regions move (a rebalance), only the drivers whose owner or halo changed are
sent again; when a shard comes back empty after a crash, or a tick failed, the
affected shards are rebuilt from the latest reports.

Guarantees (with the shard's, see :mod:`matcher.core.shard`):
- every online driver is routed to exactly one owning shard, plus read-only halo
  copies on the shards whose regions lie within the candidate radius of it; a
  driver that moves into another shard's region is handed off (dropped by the
  old shards, inserted by the new), never lost or duplicated. A shard's table
  follows the routing whenever it is sent an input (below), so the shards a tick
  is sent to never own one driver twice;
- a driver is offered by exactly one shard per tick, and the merged result has
  the objective of one global solve;
- a tick with no border work makes no second round trip; round 2 never goes to a
  lost shard;
- a shard is sent anything only on a tick its answer can hold a match
  (:mod:`matcher.dist.answer`). What it has not been sent is held here, as the latest
  report of every driver and two bit masks (``sent``: the shards that hold the driver;
  ``unsent``: the shards whose copy is older than the latest report), and goes with its
  next answered tick: the drivers that left it, and the latest report of each driver it
  holds whose copy is behind. A shard table is a function of the latest report of each
  driver it holds (``DriverTable.apply_pings``: every column is overwritten by an accepted
  report, the solve's ``OFFERED`` mark lasts until the driver's next report), so it then
  equals the table that every tick's input would have built, and the event log is the one
  of sending every shard every tick (golden tests). That holds while no report can be
  refused; from the first report a shard may refuse (``doubtful_reports``), every shard
  gets every tick's reports as they came (``per_tick``), so that it refuses and counts
  exactly what it would have;
- a shard lost for good (its restarts used up) has its regions moved to the living
  shards, which are rebuilt from the latest reports, and the tick is run again;
  ``lost`` (run.json ``lost_shards``) says when and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from matcher.config import MatchConfig, Policy, ShardConfig
from matcher.core.candidates import RequestBatch, compat_matrix
from matcher.core.driver_table import PING_REASONS, Pings
from matcher.core.shard import Matches, TickInput, TickOutput
from matcher.core.states import DriverStatus
from matcher.dist.answer import doubtful_reports, needs_answer_routed
from matcher.dist.backend import Idle, ShardBackend, ShardLostError
from matcher.dist.memo import RouteMemo
from matcher.dist.merge import REQUEST_UNITS, merge_step
from matcher.dist.ring import popcount64
from matcher.dist.routers import GeoRouter, Router, SingleRouter, make_router
from matcher.dist.shardstats import ShardStats

__all__ = ["Coordinator", "GeoRouter", "Router", "SingleRouter", "TickStats", "make_router"]

I32Array = npt.NDArray[np.int32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]


@dataclass
class TickStats:
    pending: int
    matched: int
    deferred: int  # border requests (their components touch a shared driver)
    fallbacks: int
    solve_ms_max: float
    refused_pings: int
    coordinator_ms: float = 0.0  # CPU of the coordinator's merge step (border components, assignment, merge)
    critical_ms: float = 0.0  # slowest shard's round 1 + coordinator + slowest shard's round 2 (CPU)
    shard_cpu_ms: float = 0.0  # all shards' CPU, both rounds
    round2: int = 0  # border requests of contested components, solved in round 2 (the others settled in round 1)


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
        self.refusals: dict[str, int] = dict.fromkeys(PING_REASONS, 0)  # every reason, counted or not
        self.stats = ShardStats(self.k)
        self._reset_all = False
        self.compat = compat_matrix(match.compat)  # [ride type, vehicle]: may serve
        self.doubtful = np.zeros(n_drivers, bool)  # a report of it may have been refused by a shard
        self.lost: list[dict[str, Any]] = []  # shards lost for good: {"shard", "tick", "reason"}
        self.answered = 0  # shard answers waited for
        self.unanswered = 0  # shard-ticks not waited for (nothing sent, or sent without waiting)
        self.sent = np.zeros(n_drivers, np.uint64)  # bit s: shard s holds the driver (as far as it was sent)
        self.unsent = np.zeros(n_drivers, np.uint64)  # bit s: shard s has not had the driver's latest report
        self._reset_next = [False] * self.k  # the shard's next input starts it from an empty table
        self.per_tick = False  # every shard gets every tick's input (from the first doubtful report on)
        self._drivers_memo = RouteMemo((np.int32, np.uint64))  # (owner, member mask) by driver key
        self._requests_memo = RouteMemo((np.int32,))  # shard by request index

    def attach(self, backend: ShardBackend) -> None:
        """Drive a new set of (empty) shards, e.g. after a resume: the next tick rebuilds them."""
        self.backend = backend
        self.started = [False] * self.k
        self._reset_all = True  # the next tick re-sends every known driver with reset

    def failed(self, tick: int, error: Exception) -> None:
        """A tick raised: shards may hold half-applied state, so rebuild them all next tick."""
        self.failures.append((tick, f"{type(error).__name__}: {error}"))
        self._reset_all = True

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["backend"] = None  # shards are rebuilt, never pickled
        d.pop("idle", None)  # the caller's, set again after a resume
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        # checkpoints written before these fields existed: every driver is doubtful (answer always)
        d.setdefault("compat", compat_matrix(d["match"].compat))
        d.setdefault("doubtful", np.ones(len(d["known"]), bool))
        d.setdefault("lost", [])
        d.setdefault("answered", 0)
        d.setdefault("unanswered", 0)
        # ... and before per-shard figures and the incremental re-send
        d.setdefault("stats", ShardStats(d["k"]))
        d.setdefault("_reset_all", False)
        # ... and before the routing memos
        d.setdefault("_drivers_memo", RouteMemo((np.int32, np.uint64)))
        d.setdefault("_requests_memo", RouteMemo((np.int32,)))
        # ... and before inputs were held for the next answered tick: every tick's input, as then
        d.setdefault("sent", d["member"].copy())
        d.setdefault("unsent", np.zeros(len(d["member"]), np.uint64))
        d.setdefault("_reset_next", [False] * d["k"])
        d.setdefault("per_tick", True)
        self.__dict__.update(d)

    def _count(self, outs: list[TickOutput]) -> None:
        for o in outs:
            for r, c in o.ping_refusals.items():
                self.refusals[r] = self.refusals.get(r, 0) + c

    def finish(self) -> None:
        """Wait for the inputs sent without waiting (end of run, checkpoint): their refusals count."""
        if self.backend is not None:
            done = self.backend.drain()
            self._count(done)
            self.stats.late(done)

    def _rebuild_input(self, s: int, inp: TickInput) -> TickInput:
        bit = np.uint64(1) << np.uint64(s)
        p = self._latest_for(s, np.flatnonzero(self.known & ((self.member & bit) != 0)))
        return TickInput(
            inp.tick, inp.now, p, np.empty(0, np.int64), inp.requests, inp.policy, inp.budget_ms, reset=True
        )

    def _latest_for(self, s: int, keys: I64Array) -> Pings:
        """The latest reports of drivers ``keys`` as shard s receives them (its owned and shared flags now)."""
        p = self.latest.take(keys)
        p.owned = self.owner[keys] == s
        p.shared = popcount64(self.member[keys]) > 1
        return p

    def _remember(self, p: Pings, odd: npt.NDArray[np.bool_]) -> None:
        """The latest report of every driver; ``odd``: the reports a shard may refuse (``doubtful_reports``)."""
        self.doubtful[p.key[odd]] = True
        for f in fields(Pings):
            getattr(self.latest, f.name)[p.key] = getattr(p, f.name)
        self.known[p.key] = True

    def _online_positions(self) -> tuple[F64Array, F64Array]:
        on = self.known & (self.latest.status != DriverStatus.OFFLINE)
        return self.latest.lat[on], self.latest.lng[on]

    def route_requests(self, lat: Any, lng: Any, idx: Any = None) -> I32Array:
        """The shard each pickup is routed to now (labels the `request` and `expire` events).

        ``idx``: the requests' indices; their answers are then remembered (`RouteMemo`), so
        the tick that routes the same requests next finds them (the same answer while the
        router's version stays)."""
        if idx is None:
            return self.router.route_requests(lat, lng)
        (routed,) = self._remembered(
            self._requests_memo,
            np.asarray(idx, np.int64),
            np.asarray(lat, np.float64),
            np.asarray(lng, np.float64),
            self._route_requests,
        )
        return routed.astype(np.int32, copy=False)

    def _route_requests(self, lat: F64Array, lng: F64Array) -> tuple[I32Array]:
        return (self.router.route_requests(lat, lng),)

    def _memberships(self, keys: I64Array, lat: F64Array, lng: F64Array) -> tuple[I32Array, U64Array]:
        """The router's (owner, member mask) of drivers, computed only for those that moved
        (or after the router changed): `RouteMemo`. A router that keeps its answers per cell
        (``per_cell``) is asked directly: a memo per driver would cost more than it saves."""
        if self.router.per_cell:
            return self.router.memberships(lat, lng)
        own, mask = self._remembered(self._drivers_memo, keys, lat, lng, self.router.memberships)
        return own, mask  # type: ignore[return-value]  # the memo's dtypes are (int32, uint64)

    def _remembered(
        self, memo: RouteMemo, ids: I64Array, lat: F64Array, lng: F64Array, compute: Any
    ) -> tuple[npt.NDArray[np.generic], ...]:
        """``compute(lat, lng)``, through ``memo`` (`RouteMemo`) when there are several shards;
        with one, the router's answer is a constant, cheaper than any memo."""
        if self.k == 1:
            return tuple(compute(lat, lng))
        return memo.get(ids, lat, lng, self.router.version, compute)

    def _to_send(self, pings: Pings) -> tuple[Pings, bool]:
        """The reports to route this tick, and whether the shards start from empty tables.

        Normally this tick's pings. After a failure or a resume: every known
        driver, with reset. After the regions moved: this tick's pings plus
        every known driver whose owner or halo changed (no reset: a rebalance
        moves about 1/N of the load, so it re-sends about that share).
        """
        if self._reset_all:
            self._reset_all = False
            self._version = self.router.version
            return self.latest.take(np.flatnonzero(self.known)), True
        if self.router.version == self._version:
            return pings, False
        self._version = self.router.version
        allk = np.flatnonzero(self.known)
        own, mask = self._memberships(allk, self.latest.lat[allk], self.latest.lng[allk])
        changed = allk[(own != self.owner[allk]) | (mask != self.member[allk])]
        return self.latest.take(np.union1d(changed, pings.key)), False

    def tick(
        self, tick: int, now: float, pings: Pings, reqs: RequestBatch, policy: Policy
    ) -> tuple[Matches, I32Array, TickStats]:
        """One tick on all shards. Returns (matches, the shard that made each, stats)."""
        odd = doubtful_reports(pings, self.latest.ts)
        if not self.per_tick and (self.doubtful.any() or odd.any()):
            # a shard may refuse a report from now on: send it each one as it came, once every
            # shard has what it was not sent (before these reports replace the latest ones)
            self._flush(tick, now)
            self.per_tick = True
        self._remember(pings, odd)
        self.router.observe(reqs.lat, reqs.lng, self._online_positions)
        pings, force = self._to_send(pings)
        keys = pings.key
        owner, mask = self._memberships(keys, pings.lat, pings.lng)
        prev = self.owner[keys]
        moved = (prev >= 0) & (owner >= 0) & (prev != owner)  # owner -1: a report no shard takes
        self.handoffs += int(moved.sum())
        handoffs_out = np.bincount(prev[moved], minlength=self.k)[: self.k]
        handoffs_in = np.bincount(owner[moved], minlength=self.k)[: self.k]
        self.member[keys] = mask
        self.owner[keys] = owner
        self.unsent[keys] |= mask
        if force:
            self._reset_next = [True] * self.k
        req_shard = self.route_requests(reqs.lat, reqs.lng, reqs.idx)
        pending = np.bincount(req_shard[req_shard >= 0], minlength=self.k)[: self.k].astype(np.int64)
        answer = needs_answer_routed(
            reqs, req_shard, self.k, now, self.latest, self.known, self.doubtful, self.member, self.compat, self.match
        )
        raw = (pings, owner, mask) if self.per_tick else None
        # only the shards sent an input get their requests split out of the tick's batch
        inputs: list[TickInput | None] = [
            self._input(s, tick, now, reqs.take(np.flatnonzero(req_shard == s)), policy, raw)
            if self.per_tick or answer[s]
            else None
            for s in range(self.k)
        ]
        for inp, want in zip(inputs, answer, strict=True):
            if inp is not None:
                inp.solve = want  # an answer known to be empty needs no solve either
        try:
            outs = [o for o in self.backend.tick(inputs, answer, self.idle) if o is not None]
            lost = [o.shard for o in outs if o.restarted]
            while lost:
                # a shard came back empty after a crash: rebuild it from the latest reports and
                # run the same tick again (the others answer from their stored result); again if
                # another shard died meanwhile (a rebuilt shard never answers `restarted`, so this
                # loops only on real process deaths, which Ray bounds with max_restarts)
                self.restarts += len(lost)
                for s in lost:
                    inputs[s] = self._rebuild_input(s, inputs[s])  # type: ignore[arg-type]  # answered: sent
                again = [inputs[s] if answer[s] else None for s in range(self.k)]
                outs = [o for o in self.backend.tick(again, answer, self.idle) if o is not None]
                lost = [o.shard for o in outs if o.restarted]
        except ShardLostError as e:
            self._lose(tick, e)
            return self.tick(tick, now, pings, reqs, policy)
        self.answered += len(outs)
        self.unanswered += self.k - sum(answer)
        self._count(outs)
        late = self.backend.late()
        self._count(late)
        c0 = time.thread_time()
        self._inline_border_ms = 0.0
        try:
            merged = merge_step(
                tick, outs, reqs, policy, self._solve_border, self.k, lambda: self._round1_units(pending)
            )
        except ShardLostError as e:  # lost in round 2: same as in round 1
            self._lose(tick, e)
            return self.tick(tick, now, pings, reqs, policy)
        coord_ms = (time.thread_time() - c0) * 1e3 - self._inline_border_ms
        r1 = np.array([o.cpu_ms for o in outs])
        r2 = merged.border_cpu_ms
        self.stats.add(tick, outs, merged, handoffs_in, handoffs_out, lambda: self._state_rows(pending))
        self.stats.late(late)  # after add: an in-process late output can be of this very tick
        stats = TickStats(
            pending=len(reqs),
            matched=len(merged.matches),
            deferred=merged.deferred,
            fallbacks=sum(o.fallback for o in outs),
            solve_ms_max=max((o.solve_ms for o in outs), default=0.0),
            refused_pings=sum(sum(o.ping_refusals.values()) for o in outs),
            coordinator_ms=max(coord_ms, 0.0),
            critical_ms=float(r1.max(initial=0.0) + max(coord_ms, 0.0) + r2.max(initial=0.0)),
            shard_cpu_ms=float(r1.sum() + r2.sum()),
            round2=merged.plan.contested,
        )
        return merged.matches, merged.shard_of, stats

    def sync(self, tick: int, now: float) -> None:
        """Send every shard what it was not sent and wait for all of them: the shards then hold
        the coordinator's view of every driver (after tick ``tick``, at time ``now``). Nothing is
        solved. The ingest benchmark calls it after every tick, so that every report reaches a shard."""
        outs = [o for o in self._flush(tick, now, wait=True) if o is not None]
        self._count(outs)
        self.answered += len(outs)

    def _flush(self, tick: int, now: float, wait: bool = False) -> list[TickOutput | None]:
        """Send every shard what it was not sent (before the switch to ``per_tick``: without waiting).

        The flush has a tick id of its own, ``-1 - tick`` (never a tick's), so that the tick's
        own input after it is not taken for a retry of it (ticks are idempotent by id)."""
        flush = [self._input(s, -1 - tick, now, RequestBatch.empty(), Policy.BATCH, None) for s in range(self.k)]
        for inp in flush:
            inp.solve = False
        return self.backend.tick(flush, [wait] * self.k)

    def _input(
        self,
        s: int,
        tick: int,
        now: float,
        requests: RequestBatch,
        policy: Policy,
        raw: tuple[Pings, I32Array, U64Array] | None,
    ) -> TickInput:
        """Shard s's input this tick: what it has not been sent (module docstring), then marked sent.

        ``raw`` (``per_tick``): this tick's reports (with their owners and member masks) go
        as they came, duplicates and all; the held ones are then only those of other drivers.
        The drivers that left the shard are dropped first; none after a reset (an empty table).
        """
        bit = np.uint64(1) << np.uint64(s)
        reset = self._reset_next[s]
        parts = []
        behind = ((self.unsent & bit) != 0) & ((self.member & bit) != 0)
        if raw is not None:
            pings, owner, mask = raw
            sel = np.flatnonzero(mask & bit)
            p = pings.take(sel)
            p.owned = owner[sel] == s
            p.shared = popcount64(mask[sel]) > 1
            parts.append(p)
            behind[pings.key] = False
        held = np.flatnonzero(behind)
        if held.size or not parts:
            parts.append(self._latest_for(s, held))
        gone = np.empty(0, np.int64) if reset else np.flatnonzero((self.sent & bit) & ~(self.member & bit))
        self.sent = (self.sent & ~bit) | (self.member & bit)
        self.unsent &= ~bit
        self._reset_next[s] = False
        expect = self.started[s]
        self.started[s] = True
        return TickInput(
            tick,
            now,
            parts[0] if len(parts) == 1 else Pings.concat(parts),
            gone.astype(np.int64),
            requests,
            policy,
            self.shard_cfg.solve_budget_ms,
            reset=reset,
            expect_state=expect,
        )

    def _lose(self, tick: int, e: ShardLostError) -> None:
        """A shard lost for good: its regions move to the living shards, which are rebuilt with reset
        (they may have applied this tick already, and a tick id alone would replay the stored answer)."""
        self.router.remove_shard(e.shard)  # RunStopped if it was the last one
        self.lost.append({"shard": e.shard, "tick": tick, "reason": e.detail})
        self._reset_all = True

    def _dead(self) -> set[int]:
        return {int(x["shard"]) for x in self.lost}

    def _state_rows(self, pending: I64Array) -> tuple[I64Array, I64Array, I64Array]:
        """(owned, halo, pending) of every shard from the coordinator's own state (after routing;
        ``pending``: the requests routed to each shard this tick).

        What the per-shard figures and the round-2 balance use for a shard that was
        not waited for (or is lost): the same numbers on every backend.
        """
        on = self.known & (self.owner >= 0)
        own = np.bincount(self.owner[on], minlength=self.k)[: self.k].astype(np.int64)
        held = bit_counts(self.member[on], self.k)
        return own, np.maximum(held - own, 0), pending

    def _round1_units(self, pending: I64Array) -> F64Array:
        """Each shard's round-1 work this tick in deterministic units, from coordinator state
        (so it is the same whichever shards were waited for); lost shards are never chosen."""
        own, halo, _ = self._state_rows(pending)
        units = own + halo + REQUEST_UNITS * pending
        units = units.astype(np.float64)
        for s in self._dead():
            units[s] = np.inf
        return units

    def _solve_border(self, tasks: dict[int, Any]) -> dict[int, Any]:
        """Round 2 through the backend; an in-process backend runs it on this thread, so its CPU is set apart."""
        c0 = time.thread_time()
        out = self.backend.solve_border(tasks, self.idle)
        self._inline_border_ms = (time.thread_time() - c0) * 1e3
        return out

    _inline_border_ms = 0.0
    idle: Idle | None = None  # the caller's other work, run while the backend waits (never pickled)


_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.int64)


def bit_counts(mask: Any, k: int) -> I64Array:
    """For each bit s < k: how many of the uint64 ``mask`` values have it set (a histogram per byte lane)."""
    lanes = np.ascontiguousarray(mask, dtype="<u8").view(np.uint8).reshape(-1, 8)
    out = np.concatenate(
        [np.bincount(lanes[:, b], minlength=256) @ _BYTE_BITS for b in range((k + 7) // 8)] or [np.empty(0, np.int64)]
    )
    res: I64Array = out[:k].astype(np.int64)
    return res


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
