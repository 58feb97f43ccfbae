"""One shard's matcher: driver state plus the per-tick solve. Pure Python/numpy.

Each tick a shard applies its ping batch, finds candidates for the requests
routed to it and splits the candidate graph into connected components:

- a component whose drivers all live only on this shard is solved here and
  committed (the drivers become ``OFFERED`` in this table);
- a component that touches a *shared* driver (a halo copy, or an owned driver
  another shard can also see) is returned as *deferred* edges, together with
  the shard's own exact solve of them (*tentative*, nothing committed); the
  coordinator joins all shards' deferred edges into whole components, takes the
  tentative solve of every component only this shard's requests reach
  (uncontested: it is the whole component), and sends each other component
  whole to one shard (round 2, `solve_border`; see :mod:`matcher.dist.merge`).

Guarantees:
- a driver is offered by exactly one shard per tick: a shard commits only
  drivers that no other shard can see, and every edge of a shared driver is
  deferred by every shard that sees it;
- the union of the local solves and the round-2 solves of whole border
  components has the same objective as one global solve (components are
  independent), so sharding costs no match quality.
- ticks are idempotent by tick id: a retried tick returns the stored result
  without applying anything twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from matcher.config import MatchConfig, Policy
from matcher.core.arrays import F64Array, I64Array
from matcher.core.assignment import Edges, components, solve_batch, solve_greedy, unmatched_penalty
from matcher.core.candidates import RequestBatch, find_candidates
from matcher.core.cost import make_eta
from matcher.core.driver_table import DriverTable, Pings
from matcher.core.states import DriverStatus


@dataclass
class TickInput:
    tick: int
    now: float
    pings: Pings
    drop_keys: I64Array  # drivers that left this shard (handoff out / halo exit)
    requests: RequestBatch
    policy: Policy = Policy.BATCH
    budget_ms: float = float("inf")  # predicted solve time past this: the shard uses greedy this tick
    reset: bool = False  # the pings are the shard's whole state: start from an empty table
    expect_state: bool = False  # the shard should already hold drivers (else it lost them: restarted)
    # False: the coordinator knows this tick's answer is empty (no request has a candidate:
    # matcher.dist.answer), so the shard applies the pings and skips the solve
    solve: bool = True


@dataclass
class Matches:
    """Columnar matches: request idx, driver key, pickup ETA, distance, driver position."""

    req: I64Array
    key: I64Array
    eta: F64Array
    dist: F64Array
    lat: F64Array
    lng: F64Array

    def __len__(self) -> int:
        return len(self.req)

    @staticmethod
    def empty() -> Matches:
        i, f = np.empty(0, np.int64), np.empty(0)
        return Matches(i, i, f, f, f, f)

    @staticmethod
    def concat(parts: list[Matches]) -> Matches:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Matches.empty()
        return Matches(
            *(np.concatenate([getattr(p, n) for p in parts]) for n in ("req", "key", "eta", "dist", "lat", "lng"))
        )


@dataclass
class TickOutput:
    tick: int
    shard: int
    matches: Matches
    deferred: Matches  # candidate edges of border components (unsolved)
    deferred_req: I64Array  # request idx of the deferred requests
    pending: int
    ping_refusals: dict[str, int] = field(default_factory=dict)
    solve_ms: float = 0.0
    fallback: bool = False
    drivers: int = 0
    restarted: bool = False  # the shard came back empty; nothing was solved
    cpu_ms: float = 0.0  # CPU time of this tick on the shard's thread (pings, candidates, local solve)
    halo_drivers: int = 0  # read-only copies held after the tick
    # the shard's exact solve of its deferred edges (batch: optimal, greedy: in greedy order), not
    # committed; None: not solved (every border component goes to round 2)
    tentative: Matches | None = None


class ShardState:
    """Driver state and matcher of one shard (the pure core a Ray actor wraps)."""

    def __init__(self, shard: int, cfg: MatchConfig) -> None:
        self.shard = shard
        self.cfg = cfg
        self.eta = make_eta(cfg.eta)
        self.table = DriverTable()
        self._last: TickOutput | None = None  # result of the latest tick, for idempotent retries
        self._fresh = True  # no tick applied since construction
        self._ms_per_edge = 0.0  # learned batch solve speed, for the time budget
        self._learned_big = False
        self._last_border: BorderResult | None = None

    def tick(self, inp: TickInput) -> TickOutput:
        if self._last is not None and self._last.tick == inp.tick and not inp.reset:
            return self._last
        if inp.expect_state and self._fresh and not inp.reset:
            # constructed again (a crash and a restart): say so, change nothing
            return TickOutput(
                inp.tick,
                self.shard,
                Matches.empty(),
                Matches.empty(),
                np.empty(0, np.int64),
                len(inp.requests),
                restarted=True,
            )
        t0, c0 = time.perf_counter(), time.thread_time()
        if inp.reset:
            self.table = DriverTable()
        self._fresh = False
        self.table.remove(inp.drop_keys)
        refusals = self.table.apply_pings(inp.pings)
        if inp.solve:
            out = self._solve(inp)
        else:  # what _solve gives when no request has a candidate
            n = len(inp.requests)
            out = TickOutput(inp.tick, self.shard, Matches.empty(), Matches.empty(), np.empty(0, np.int64), n)
        out.ping_refusals = refusals
        out.solve_ms = (time.perf_counter() - t0) * 1e3
        out.drivers = int(self.table.col("owned").sum())
        out.halo_drivers = self.table.n - out.drivers
        out.cpu_ms = (time.thread_time() - c0) * 1e3
        self._last = out
        return out

    def _solve(self, inp: TickInput) -> TickOutput:
        reqs, t = inp.requests, self.table
        n = len(reqs)
        cand = find_candidates(t, reqs, inp.now, self.cfg, self.eta)
        local_req = np.ones(n, bool)
        if len(cand) and t.shared[cand.row].any():
            comp_req, rows, comp_row = components(n, Edges(cand.req, cand.row, cand.cost))
            border = np.unique(comp_row[t.shared[rows]])
            local_req = ~np.isin(comp_req, border)
        loc = local_req[cand.req]
        # columns are driver keys, not table rows: exact cost ties then resolve the same way
        # here, in a rebuilt table and in the coordinator's solve
        e = Edges(cand.req[loc], t.key[cand.row[loc]], cand.cost[loc])
        fallback = False
        if inp.policy == Policy.GREEDY:
            dkey, _ = solve_greedy(n, e, greedy_order(reqs))
        elif self._ms_per_edge * len(e) > inp.budget_ms:
            # the optimal solve would blow the tick budget: keep the tick alive with greedy
            dkey, _ = solve_greedy(n, e, greedy_order(reqs))
            fallback = True
        else:
            t0 = time.perf_counter()
            pen = unmatched_penalty(reqs.wait_s, self.cfg.unmatched_base_s, self.cfg.unmatched_per_wait)
            dkey, _ = solve_batch(n, e, pen, self.cfg.dense_max_cells)
            # learn the solver's speed per edge from big ticks (small ones are mostly fixed costs and
            # would overestimate it); until a big tick is seen, small ones give a first, cautious guess
            big = len(e) >= 2000
            if big or (len(e) >= 100 and not self._learned_big):
                per = (time.perf_counter() - t0) * 1e3 / len(e)
                if big and not self._learned_big:
                    self._ms_per_edge, self._learned_big = per, True
                else:
                    self._ms_per_edge = per if self._ms_per_edge == 0 else 0.8 * self._ms_per_edge + 0.2 * per
        ri = np.flatnonzero(dkey >= 0)
        rows = t.rows_of(dkey[ri])
        t.set_status(rows, DriverStatus.OFFERED)
        # eta/dist of each chosen edge
        pos = edge_positions(cand.req, cand.row, ri, rows)
        matches = Matches(reqs.idx[ri], t.key[rows], cand.cost[pos], cand.dist[pos], t.lat[rows], t.lng[rows])
        d = ~loc
        deferred = Matches(
            reqs.idx[cand.req[d]],
            t.key[cand.row[d]],
            cand.cost[d],
            cand.dist[d],
            t.lat[cand.row[d]],
            t.lng[cand.row[d]],
        )
        border_req = ~local_req
        tentative = None
        if len(deferred):
            # exact whatever the budget: a component the coordinator settles with it must be solved optimally
            tentative = solve_deferred(deferred, reqs.idx[border_req], reqs.wait_s[border_req], inp.policy, self.cfg)
        return TickOutput(
            inp.tick, self.shard, matches, deferred, reqs.idx[border_req], n, fallback=fallback, tentative=tentative
        )

    def solve_border(self, task: BorderTask) -> BorderResult:
        """Solve border components the coordinator sent here (round 2 of a tick), exactly.

        A pure function of the task (the edges carry their costs; no table is
        read or written: the world's next pings carry the offered drivers'
        new status), idempotent by tick like `tick`.
        """
        if self._last_border is not None and self._last_border.tick == task.tick:
            return self._last_border
        c0 = time.thread_time()
        m = solve_deferred(task.edges, task.req_idx, task.wait_s, task.policy, self.cfg)
        res = BorderResult(task.tick, self.shard, m, (time.thread_time() - c0) * 1e3)
        self._last_border = res
        return res


@dataclass
class BorderTask:
    """Border components of one tick sent to one shard: their candidate edges and requests."""

    tick: int
    edges: Matches  # candidate edges (request idx, driver key, eta, ...) of whole components
    req_idx: I64Array  # the components' requests
    wait_s: F64Array  # their waits
    policy: Policy = Policy.BATCH


@dataclass
class BorderResult:
    tick: int
    shard: int
    matches: Matches
    cpu_ms: float  # CPU time of the solve on the shard's thread


def edge_positions(edge_req: I64Array, edge_col: I64Array, req: I64Array, col: I64Array) -> I64Array:
    """Index in the edge arrays of each chosen (request, column) pair; every pair must be an edge."""
    big = np.int64(1) << 40  # requests and columns (rows or driver keys) stay far below 2**40
    pair = edge_req * big + edge_col
    srt = np.argsort(pair)
    return srt[np.searchsorted(pair, req * big + col, sorter=srt)]


def greedy_order(reqs: RequestBatch) -> I64Array:
    """First come, first served: longest wait first, then request index."""
    return np.lexsort((reqs.idx, -reqs.wait_s))


def solve_deferred(deferred: Matches, req_idx: I64Array, wait_s: F64Array, policy: Policy, cfg: MatchConfig) -> Matches:
    """One solve of border components (whole ones: round 2 on a shard), as one problem.

    ``req_idx``/``wait_s`` describe the deferred requests; edges refer to them by idx
    and to drivers by key, so a driver seen by several shards is one column.
    """
    n = len(req_idx)
    if n == 0 or len(deferred) == 0:
        return Matches.empty()
    srt = np.argsort(req_idx)
    pos = srt[np.searchsorted(req_idx, deferred.req, sorter=srt)]
    e = Edges(pos, deferred.key, deferred.eta)
    if policy == Policy.GREEDY:
        rb_order = np.lexsort((req_idx, -wait_s))
        dkey, _ = solve_greedy(n, e, rb_order)
    else:
        pen = unmatched_penalty(wait_s, cfg.unmatched_base_s, cfg.unmatched_per_wait)
        dkey, _ = solve_batch(n, e, pen, cfg.dense_max_cells)
    ri = np.flatnonzero(dkey >= 0)
    # pick the edge rows (request pos, key) chosen
    epos = edge_positions(e.req, e.col, ri, dkey[ri])
    return Matches(
        req_idx[ri], dkey[ri], deferred.eta[epos], deferred.dist[epos], deferred.lat[epos], deferred.lng[epos]
    )
