"""One tick's assignment over a candidate graph: batch (min-cost) and greedy.

Inputs are edges (request index, driver column, cost) plus, per request, the
cost of staying unmatched this tick. Outputs give each request a driver column
or -1. Guarantees for both policies: no driver column is used twice, a request
only gets a driver it has an edge to.

Batch solves min sum(cost of matched) + sum(penalty of unmatched) exactly: each
request has its own "stay unmatched" column, so the problem is always feasible
and no request is forced onto a driver that costs more than waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from matcher.core.arrays import ArrayLike, F64Array, I64Array


@dataclass
class Edges:
    req: I64Array  # request index 0..n_req-1
    col: I64Array  # driver column (any non-negative ids)
    cost: F64Array  # seconds

    def __len__(self) -> int:
        return len(self.req)

    def take(self, idx: Any) -> Edges:
        return Edges(self.req[idx], self.col[idx], self.cost[idx])


def unmatched_penalty(wait_s: ArrayLike, base_s: float, per_wait: float) -> F64Array:
    """Cost of leaving a request unmatched this tick; grows with how long it has waited."""
    return base_s + per_wait * np.asarray(wait_s, np.float64)


def total_cost(assigned_cost: F64Array, matched: I64Array, penalty: F64Array) -> float:
    """The objective: cost of each match plus the penalty of each unmatched request."""
    return float(np.where(matched >= 0, assigned_cost, penalty).sum())


def _compact(edges: Edges) -> tuple[I64Array, I64Array]:
    """(sorted distinct columns, each edge's index into them), as ``np.unique(return_inverse=True)``."""
    col = edges.col
    if len(col) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    top = int(col.max())
    if top > 8 * len(col) + 65_536:  # sparse ids: a lookup table would cost more than the sort
        cols, col_idx = np.unique(col, return_inverse=True)
        return cols, col_idx.astype(np.int64)
    # driver keys are dense small integers: a lookup table avoids unique's argsort (hot per tick)
    seen = np.zeros(top + 1, bool)
    seen[col] = True
    cols = np.flatnonzero(seen)
    lut = np.cumsum(seen, dtype=np.int64) - 1
    return cols.astype(np.int64), lut[col]


def solve_batch(
    n_req: int, edges: Edges, penalty: ArrayLike, dense_max_cells: int = 40_000, side: str = "auto"
) -> tuple[I64Array, F64Array]:
    """Min-cost assignment. Returns (driver column per request or -1, its edge cost or nan).

    Uses dense ``linear_sum_assignment`` on the compact matrix when it has at
    most ``dense_max_cells`` cells (faster for small ticks, measured), else the
    sparse ``min_weight_full_bipartite_matching`` (LAPJVsp) with the smaller side
    as rows (``side="auto"``; "requests" or "drivers" force one, same optimum).
    """
    out = np.full(n_req, -1, np.int64)
    cost_out = np.full(n_req, np.nan)
    if n_req == 0 or len(edges) == 0:
        return out, cost_out
    penalty = np.asarray(penalty, np.float64)
    # Edges that cost more than staying unmatched can never be in an optimum.
    useful = edges.cost < penalty[edges.req]
    edges = edges.take(useful)
    if len(edges) == 0:
        return out, cost_out
    cols, ci = _compact(edges)
    m = len(cols)
    if n_req * (m + n_req) <= dense_max_cells:
        mat = np.full((n_req, m + n_req), np.inf)
        mat[edges.req, ci] = edges.cost
        mat[np.arange(n_req), m + np.arange(n_req)] = penalty
        rows, cidx = linear_sum_assignment(mat)
    elif side == "drivers" or (side == "auto" and m < n_req):
        # Fewer drivers than requests (a queue builds up): solve from the drivers' side,
        # which LAPJVsp does many times faster (one augmentation per row). The same
        # objective: sum(penalty) + sum over matches of (cost - penalty), where each driver
        # row takes one request or its own idle column (0). A constant shift per row keeps
        # weights >= 1 (scipy drops zeros) and cannot move the optimum (one column per row).
        w = edges.cost - penalty[edges.req]  # < 0 for every useful edge
        shift = 1.0 - float(w.min())
        r = np.concatenate([ci, np.arange(m)])
        c = np.concatenate([edges.req, n_req + np.arange(m)])
        g = csr_matrix((np.concatenate([w + shift, np.full(m, shift)]), (r, c)), shape=(m, n_req + m))
        drow, dcol = min_weight_full_bipartite_matching(g)
        took = dcol < n_req
        rows, cidx = dcol[took], drow[took]
    else:
        # +1 keeps every weight strictly positive: scipy treats stored zeros as edges,
        # but a constant per row cannot change the optimum anyway (one column per row).
        r = np.concatenate([edges.req, np.arange(n_req)])
        c = np.concatenate([ci, m + np.arange(n_req)])
        w = np.concatenate([edges.cost, penalty]) + 1.0
        g = csr_matrix((w, (r, c)), shape=(n_req, m + n_req))
        rows, cidx = min_weight_full_bipartite_matching(g)
    real = cidx < m
    out[rows[real]] = cols[cidx[real]]
    # cost of the chosen edge
    sel_r, sel_c = rows[real], cidx[real]
    if len(sel_r):
        key = edges.req * (m + 1) + ci
        order = np.argsort(key)
        want = sel_r * (m + 1) + sel_c
        pos = order[np.searchsorted(key, want, sorter=order)]
        cost_out[sel_r] = edges.cost[pos]
    return out, cost_out


def solve_greedy(n_req: int, edges: Edges, order: I64Array | None = None) -> tuple[I64Array, F64Array]:
    """First come, first served: in ``order`` (default 0..n-1), each request takes its
    cheapest driver not yet taken. Ties go to the lower column id (deterministic)."""
    out = np.full(n_req, -1, np.int64)
    cost_out = np.full(n_req, np.nan)
    if n_req == 0 or len(edges) == 0:
        return out, cost_out
    if order is None:
        order = np.arange(n_req)
    rank = np.empty(n_req, np.int64)
    rank[order] = np.arange(n_req)
    srt = np.lexsort((edges.col, edges.cost, rank[edges.req]))
    req, col, cost = edges.req[srt], edges.col[srt], edges.cost[srt]
    taken: set[int] = set()
    done = np.zeros(n_req, bool)
    for i in range(len(req)):  # edges in (arrival, cost) order: a short loop per tick
        r = req[i]
        if done[r]:
            continue
        c = int(col[i])
        if c in taken:
            continue
        taken.add(c)
        done[r] = True
        out[r] = c
        cost_out[r] = cost[i]
    return out, cost_out


def components(n_req: int, edges: Edges) -> tuple[I64Array, I64Array, I64Array]:
    """Connected components of the request/driver candidate graph.

    Returns (component of each request, the driver columns, component of each
    of those columns). Independent components can be solved separately with
    the same optimum, which is what makes sharded matching exact.
    """
    cols, ci = _compact(edges)
    lab = connected_labels(n_req + len(cols), edges.req, n_req + ci)
    return lab[:n_req], cols, lab[n_req:]


SMALL_GRAPH_EDGES = 50_000  # up to this many edges, numpy's label propagation; scipy's above


def connected_labels(n: int, a: ArrayLike, b: ArrayLike) -> I64Array:
    """Component labels of the undirected graph on nodes ``0..n-1`` with edges ``(a[i], b[i])``,
    numbered as scipy's ``connected_components`` numbers them: by the smallest node of each
    component, in increasing order (tested against it).

    A tick's candidate graph is small (tens to thousands of edges), and building a scipy sparse
    matrix for it costs more than the search: on a shard, ``csr_matrix`` was two thirds of
    ``components``. So small graphs are labelled in numpy: every edge pulls the larger of its two
    labels down to the smaller, then labels jump to their label's label until nothing moves; the
    smallest node of a component keeps its own label throughout, so that is where all end.
    """
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if len(a) > SMALL_GRAPH_EDGES:
        g = csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
        _, big = connected_components(g, directed=False)
        out: I64Array = big.astype(np.int64)
        return out
    lab = np.arange(n, dtype=np.int64)
    while len(a):
        la, lb = lab[a], lab[b]
        lo, hi = np.minimum(la, lb), np.maximum(la, lb)
        moved = lo != hi
        if not moved.any():
            break
        np.minimum.at(lab, hi[moved], lo[moved])
        while True:
            jumped = lab[lab]
            if np.array_equal(jumped, lab):
                break
            lab = jumped
    _, dense = np.unique(lab, return_inverse=True)  # roots are each component's smallest node
    res: I64Array = dense.astype(np.int64)
    return res
