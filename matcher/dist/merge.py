"""THE merge step of a tick's shard outputs (the coordinator, the tests and the
bench all use it): border components are solved on the shards, not centrally.

Round 1 (every tick): each shard solves and commits the components of its
candidate graph that no other shard can see, and returns the others (border
components, touching a driver more than one shard sees) as edges, with its own
exact solve of them (``TickOutput.tentative``, nothing committed).

Settling (every tick with border work): the coordinator joins the shards' border
edges into connected components (requests by index, drivers by key: a driver two
shards see is one node). A component whose edges all come from one shard (no
other shard's request reaches its drivers: *uncontested*) is that shard's own
border component, whole, so the shard's tentative solve of it is exact: its
matches are taken from there, with no round trip. Most border components are
uncontested: every driver near a region's edge is shared, but riders on both
sides rarely reach the same drivers in the same tick.

Round 2 (only on ticks with contested components, so a tick without them costs
no extra round trip): the coordinator sends each contested component whole to
one shard, which solves it exactly (`ShardState.solve_border`). Assignment is
longest-processing-time first:
components from the largest down, each to the shard with the least work this
tick so far. Work is counted in deterministic units, never in measured time,
so that a run is the same on every backend and machine (the golden identity of
in-process and Ray runs): a shard's round 1 is its table rows (owned and halo
drivers, as the coordinator routed them) plus ``REQUEST_UNITS`` per pending
request, counted from the coordinator's state so that it does not depend on
which shards were waited for (a shard not waited for has no border work and
no output yet; a lost shard has infinite load and is never chosen), a component is
``EDGE_UNITS`` per candidate edge. Any shard may take any component (the edges
carry their costs, no driver state is read), so the choice is made for
balance, not for locality.

Exactness: components are independent problems, so solving each one whole,
anywhere, gives the objective of one global solve (batch), and the same
matches as one global pass for greedy (requests are taken in the same order
within a component). A shard's tentative solve covers all its border
components at once; restricted to one of them it is an optimal solve of that
component (batch: else the joint solve could be improved; greedy: the other
components' drivers are never its candidates). A component is never cut: a
dense downtown that makes one giant component is solved by one shard
(`BorderPlan.largest` reports its size so that this stays visible).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from matcher.config import Policy
from matcher.core.assignment import Edges, components
from matcher.core.candidates import RequestBatch
from matcher.core.shard import BorderResult, BorderTask, Matches, TickOutput

__all__ = ["BorderPlan", "Merged", "merge_step", "plan_border"]

I32Array = npt.NDArray[np.int32]
I64Array = npt.NDArray[np.int64]
F64Array = npt.NDArray[np.float64]
SolveBorder = Callable[[dict[int, BorderTask]], dict[int, BorderResult]]

#: work units of a pending request in round 1 (it is compared with about k_search drivers)
REQUEST_UNITS = 40.0
#: work units of one border edge in round 2
EDGE_UNITS = 2.0


@dataclass
class BorderPlan:
    """Round 2 of one tick: what each shard solves."""

    tasks: dict[int, BorderTask]
    requests: int  # border requests (all shards)
    edges: int
    components: int
    largest: int  # edges of the largest component
    settled: dict[int, Matches] = field(default_factory=dict)  # per shard: its tentative matches taken (uncontested)
    contested: int = 0  # border requests in contested components (sent to round 2)


@dataclass
class Merged:
    """The shards' outputs of one tick merged into one answer."""

    matches: Matches
    shard_of: I32Array  # the shard that made each match
    deferred: int  # border requests (solved in round 2)
    matched_by: I64Array  # matches made by each shard (both rounds)
    border_cpu_ms: F64Array  # round-2 CPU of each shard
    plan: BorderPlan


def _take(m: Matches, sel: npt.NDArray[np.bool_]) -> Matches:
    return Matches(m.req[sel], m.key[sel], m.eta[sel], m.dist[sel], m.lat[sel], m.lng[sel])


def round1_units(outs: list[TickOutput], k: int) -> F64Array:
    """Round-1 work of each of the `k` shards from their outputs, indexed by shard id (see the module);
    a shard without an output this tick counts 0."""
    units = np.zeros(k, dtype=np.float64)
    for o in outs:
        units[o.shard] = o.drivers + o.halo_drivers + REQUEST_UNITS * o.pending
    return units


def plan_border(
    tick: int,
    outs: list[TickOutput],
    reqs: RequestBatch,
    policy: Policy,
    load: F64Array | Callable[[], F64Array],
) -> BorderPlan:
    """Join the shards' border edges into components, settle the uncontested ones from their
    shard's tentative solve and give each other one to the least loaded shard (see the module).

    `load`: each shard's work so far this tick, in units (`round1_units`), or a function giving
    it (called only when some component is contested).
    """
    dreq = np.concatenate([o.deferred_req for o in outs] or [np.empty(0, np.int64)]).astype(np.int64)
    if dreq.size == 0:
        return BorderPlan({}, 0, 0, 0, 0)
    edges = Matches.concat([o.deferred for o in outs])
    # the shard each edge came from, and whether that shard solved its border edges in round 1
    src = np.concatenate([np.full(len(o.deferred), o.shard, np.int64) for o in outs])
    solved = np.concatenate([np.full(len(o.deferred), o.tentative is not None) for o in outs])
    srt = np.argsort(reqs.idx)
    wait = reqs.wait_s[srt[np.searchsorted(reqs.idx, dreq, sorter=srt)]]
    dsrt = np.argsort(dreq)
    pos = dsrt[np.searchsorted(dreq, edges.req, sorter=dsrt)]  # each edge's request, as a position in dreq
    comp_req, _, _ = components(dreq.size, Edges(pos, edges.key, edges.eta))
    edge_comp = comp_req[pos]
    n_comp = int(comp_req.max()) + 1
    size = np.bincount(edge_comp, minlength=n_comp)
    # uncontested: every edge from one shard, which solved them (a request's edges all come from its
    # shard). All sources of a component are equal iff size * sum(src^2) == sum(src)^2 (exact: small ints)
    s1 = np.bincount(edge_comp, weights=src, minlength=n_comp)
    s2 = np.bincount(edge_comp, weights=src * src, minlength=n_comp)
    unsolved = np.bincount(edge_comp, weights=~solved, minlength=n_comp)
    uncontested = (size > 0) & (size * s2 == s1 * s1) & (unsolved == 0)
    settled = {}
    done = np.zeros(int(dreq.max()) + 1, bool)  # by request idx: in an uncontested component
    done[dreq[uncontested[comp_req]]] = True
    for o in outs:
        if o.tentative is not None and len(o.tentative):
            sel = done[o.tentative.req]  # a shard's tentative matches are of its deferred requests
            if sel.any():
                settled[o.shard] = _take(o.tentative, sel)
    open_comp = np.flatnonzero(~uncontested)
    tasks = {}
    if open_comp.size:
        units = np.asarray(load() if callable(load) else load, dtype=np.float64).copy()
        shard_of_comp = np.full(n_comp, -1, np.int64)
        for c in open_comp[np.argsort(-size[open_comp], kind="stable")].tolist():  # longest processing time first
            s = int(np.argmin(units))
            shard_of_comp[c] = s
            units[s] += EDGE_UNITS * float(size[c])
        edge_shard = shard_of_comp[edge_comp]
        req_shard = shard_of_comp[comp_req]
        for s in np.unique(req_shard[req_shard >= 0]).tolist():
            r = req_shard == s
            tasks[s] = BorderTask(tick, _take(edges, edge_shard == s), dreq[r], wait[r], policy)
    contested = int((~uncontested[comp_req]).sum())
    return BorderPlan(tasks, int(dreq.size), len(edges), n_comp, int(size.max()), settled, contested)


def merge_step(
    tick: int,
    outs: list[TickOutput],
    reqs: RequestBatch,
    policy: Policy,
    solve: SolveBorder,
    k: int,
    load: Callable[[], F64Array] | None = None,
) -> Merged:
    """Settling, round 2 (if any contested border component) and the merge: local matches, settled
    border matches and round-2 matches, each with the shard that made it.

    `outs`: the outputs of the shards waited for (any subset of the `k` shards, by shard id).
    `load`: each shard's round-1 work in units, asked for only on ticks with contested components
    (default: `round1_units` of `outs`). None contested: `solve` is not called (no round trip).
    """
    plan = plan_border(tick, outs, reqs, policy, load if load is not None else lambda: round1_units(outs, k))
    results = solve(plan.tasks) if plan.tasks else {}
    parts = [o.matches for o in outs] + [plan.settled[s] for s in sorted(plan.settled)]
    parts += [results[s].matches for s in sorted(results)]
    shards = [o.shard for o in outs] + sorted(plan.settled) + sorted(results)
    shard_of = np.concatenate(
        [np.full(len(m), s, np.int32) for m, s in zip(parts, shards)] or [np.empty(0, np.int32)]
    ).astype(np.int32)
    matched_by = np.bincount(shard_of, minlength=k).astype(np.int64)
    border_cpu = np.zeros(k)
    for s, res in results.items():
        border_cpu[s] = res.cpu_ms
    return Merged(Matches.concat(parts), shard_of, plan.requests, matched_by, border_cpu, plan)
