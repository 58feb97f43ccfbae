"""Tests for matcher.core.assignment: batch optimality (brute force), greedy, dense/sparse, components."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from matcher.core.assignment import (
    Edges,
    _compact,
    components,
    solve_batch,
    solve_greedy,
    total_cost,
    unmatched_penalty,
)

DENSE = 10**12  # dense_max_cells forcing linear_sum_assignment
SPARSE = 0  # ... forcing min_weight_full_bipartite_matching


@st.composite
def instances(draw, max_req: int, max_drv: int, min_req: int = 0, min_drv: int = 0, density=(0.1, 1.0)):
    """(n_req, edges, penalty): random edges with unique (request, column) pairs, columns arbitrary
    non-negative ids, in a random order. Drawn piece by piece, so a failure shrinks to fewer
    requests and drivers, fewer edges (``u`` shrinks to 0: no edge) and round costs."""
    n_req = draw(st.integers(min_req, max_req))
    n_drv = draw(st.integers(min_drv, max_drv))
    cols = np.array(draw(st.lists(st.integers(0, 10**6), min_size=n_drv, max_size=n_drv, unique=True)), np.int64)
    dens = draw(st.floats(*density))
    u = draw(hnp.arrays(np.float64, (n_req, n_drv), elements=st.floats(0.0, 1.0)))
    r, c = np.nonzero(u > 1.0 - dens)
    if draw(st.booleans()):  # integer costs: exact ties
        cost = draw(hnp.arrays(np.int64, len(r), elements=st.integers(0, 5))).astype(float) * 100
    else:
        cost = draw(hnp.arrays(np.float64, len(r), elements=st.floats(0.0, 1000.0)))
    perm = np.array(draw(st.permutations(range(len(r)))), np.int64)
    edges = Edges(r[perm].astype(np.int64), cols[c[perm]], cost[perm])
    wait = draw(hnp.arrays(np.float64, n_req, elements=st.floats(0.0, 400.0)))
    penalty = unmatched_penalty(wait, draw(st.floats(100.0, 900.0)), draw(st.floats(0.0, 2.0)))
    return n_req, edges, penalty


def orders(n: int):
    return st.permutations(range(n)).map(lambda p: np.array(p, np.int64))


def cost_matrix(n_req, edges):
    cols = np.unique(edges.col)
    C = np.full((n_req, len(cols)), np.inf)
    C[edges.req, np.searchsorted(cols, edges.col)] = edges.cost
    return C, cols


@cache
def _perms(m, k):
    return np.array(list(itertools.permutations(range(m), k)), dtype=np.int64).reshape(-1, k)


def brute_force_optimum(n_req, edges, penalty) -> float:
    """Minimum over every partial assignment (itertools), each request matched or not."""
    C, cols = cost_matrix(n_req, edges)
    m = len(cols)
    best = float(penalty.sum())  # nobody matched
    for k in range(1, min(n_req, m) + 1):
        perms = _perms(m, k)
        for reqs in itertools.combinations(range(n_req), k):
            reqs = np.array(reqs)
            # cost of giving reqs[i] column perms[p, i], for every k-permutation p at once
            s = C[reqs[None, :], perms].sum(axis=1)
            cand = s.min() + penalty.sum() - penalty[reqs].sum()
            best = min(best, float(cand))
    return best


def check_valid(n_req, edges, out, cost_out):
    """No column twice, only existing edges, reported costs are the edge costs."""
    assert out.shape == (n_req,) and cost_out.shape == (n_req,)
    used = out[out >= 0]
    assert len(np.unique(used)) == len(used), "a driver is used twice"
    lookup = {(int(r), int(c)): float(w) for r, c, w in zip(edges.req, edges.col, edges.cost)}
    for r in range(n_req):
        if out[r] >= 0:
            assert (r, int(out[r])) in lookup, "matched over a non-existent edge"
            assert cost_out[r] == lookup[(r, int(out[r]))]
        else:
            assert np.isnan(cost_out[r])


def objective(out, cost_out, penalty):
    return total_cost(cost_out, out, penalty)


# ---------------------------------------------------------------- batch


@settings(max_examples=120, deadline=None)
@given(instances(7, 7))
def test_batch_equals_brute_force(inst):
    n_req, edges, penalty = inst
    best = brute_force_optimum(n_req, edges, penalty)
    for cells, side in ((DENSE, "auto"), (SPARSE, "requests"), (SPARSE, "drivers")):
        out, cost_out = solve_batch(n_req, edges, penalty, dense_max_cells=cells, side=side)
        check_valid(n_req, edges, out, cost_out)
        assert objective(out, cost_out, penalty) == pytest.approx(best, rel=1e-9, abs=1e-9), (cells, side)
        # an optimum never takes an edge that costs more than waiting
        m = out >= 0
        assert (cost_out[m] <= penalty[m]).all()


@settings(max_examples=60, deadline=None)
@given(instances(30, 30), st.data())
def test_batch_not_worse_than_greedy_and_dense_equals_sparse(inst, data):
    n_req, edges, penalty = inst
    dense = solve_batch(n_req, edges, penalty, dense_max_cells=DENSE)
    sparse = solve_batch(n_req, edges, penalty, dense_max_cells=SPARSE)
    default = solve_batch(n_req, edges, penalty)
    for out, c in (dense, sparse, default):
        check_valid(n_req, edges, out, c)
    obj = objective(*dense, penalty)
    assert objective(*sparse, penalty) == pytest.approx(obj, rel=1e-9, abs=1e-9)
    assert objective(*default, penalty) == pytest.approx(obj, rel=1e-9, abs=1e-9)
    order = data.draw(orders(n_req))
    g_out, g_cost = solve_greedy(n_req, edges, order)
    check_valid(n_req, edges, g_out, g_cost)
    assert obj <= objective(g_out, g_cost, penalty) + 1e-9


def test_batch_edge_cases():
    pen = np.array([10.0, 10.0])
    e = Edges(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    out, c = solve_batch(2, e, pen)
    assert out.tolist() == [-1, -1] and np.isnan(c).all()
    out, c = solve_batch(0, e, np.empty(0))
    assert len(out) == 0
    # every edge costs at least the penalty: nobody is matched
    e = Edges(np.array([0, 1]), np.array([5, 6]), np.array([10.0, 11.0]))
    for cells in (DENSE, SPARSE):
        out, _ = solve_batch(2, e, pen, dense_max_cells=cells)
        assert out.tolist() == [-1, -1]
    # zero-cost edges are real edges in the sparse path too
    e = Edges(np.array([0, 1]), np.array([5, 6]), np.array([0.0, 0.0]))
    for cells in (DENSE, SPARSE):
        out, c = solve_batch(2, e, pen, dense_max_cells=cells)
        assert out.tolist() == [5, 6] and c.tolist() == [0.0, 0.0]


def test_batch_is_not_greedy():
    # r0 prefers d1 slightly, but r1 can only use d1: the optimum gives d1 to r1
    e = Edges(np.array([0, 0, 1]), np.array([1, 2, 1]), np.array([10.0, 12.0, 20.0]))
    pen = np.array([900.0, 900.0])
    for cells in (DENSE, SPARSE):
        out, c = solve_batch(2, e, pen, dense_max_cells=cells)
        assert out.tolist() == [2, 1] and objective(out, c, pen) == 32.0
    g, gc = solve_greedy(2, e)
    assert g.tolist() == [1, -1] and objective(g, gc, pen) == 910.0


def test_waiting_request_wins_contested_driver():
    """Two requests, one driver: the fresh request is closer, but the long-waiting one
    has the larger unmatched penalty, so the batch solve gives it the driver."""
    e = Edges(np.array([0, 1]), np.array([42, 42]), np.array([100.0, 200.0]))
    fresh = unmatched_penalty(np.array([0.0, 0.0]), 900.0, 1.0)
    out, _ = solve_batch(2, e, fresh)
    assert out.tolist() == [42, -1]  # equal waits: the cheaper pickup wins
    waited = unmatched_penalty(np.array([0.0, 300.0]), 900.0, 1.0)
    for cells in (DENSE, SPARSE):
        out, c = solve_batch(2, e, waited, dense_max_cells=cells)
        assert out.tolist() == [-1, 42]
        assert objective(out, c, waited) == 900.0 + 200.0
    # and with no per-wait growth it would not
    flat = unmatched_penalty(np.array([0.0, 300.0]), 900.0, 0.0)
    assert solve_batch(2, e, flat)[0].tolist() == [42, -1]


def test_unmatched_penalty():
    np.testing.assert_allclose(unmatched_penalty([0, 10, 100], 900.0, 1.5), [900.0, 915.0, 1050.0])


# ---------------------------------------------------------------- greedy


def reference_greedy(n_req, edges, order):
    taken, out = set(), np.full(n_req, -1, np.int64)
    for r in order:
        mine = sorted((float(c), int(col)) for rr, col, c in zip(edges.req, edges.col, edges.cost) if rr == r)
        for c, col in mine:
            if col not in taken:
                taken.add(col)
                out[r] = col
                break
    return out


@settings(max_examples=60, deadline=None)
@given(instances(20, 20, min_req=1, min_drv=1), st.data())
def test_greedy_respects_arrival_order(inst, data):
    n_req, edges, _ = inst
    order = data.draw(orders(n_req))
    out, cost_out = solve_greedy(n_req, edges, order)
    check_valid(n_req, edges, out, cost_out)
    # the first request in arrival order gets its cheapest driver (ties: lower column)
    first = order[0]
    mine = edges.req == first
    if mine.any():
        best = min(zip(edges.cost[mine].tolist(), edges.col[mine].tolist()))
        assert (cost_out[first], out[first]) == best
    else:
        assert out[first] == -1
    # and everyone gets the cheapest driver not taken by someone who came earlier
    assert out.tolist() == reference_greedy(n_req, edges, order).tolist()
    # default order is 0..n-1
    assert solve_greedy(n_req, edges)[0].tolist() == reference_greedy(n_req, edges, range(n_req)).tolist()


def test_greedy_order_matters():
    e = Edges(np.array([0, 1]), np.array([7, 7]), np.array([50.0, 10.0]))
    assert solve_greedy(2, e)[0].tolist() == [7, -1]
    assert solve_greedy(2, e, np.array([1, 0]))[0].tolist() == [-1, 7]


def test_greedy_ties_go_to_lower_column():
    e = Edges(np.array([0, 0, 0]), np.array([9, 3, 5]), np.array([5.0, 5.0, 5.0]))
    assert solve_greedy(1, e)[0].tolist() == [3]


# ---------------------------------------------------------------- components


def union_find_partition(n_req, edges):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in range(n_req):
        find(("r", r))
    for r, c in zip(edges.req.tolist(), edges.col.tolist()):
        parent[find(("r", r))] = find(("c", c))
    groups = {}
    for x in list(parent):
        groups.setdefault(find(x), set()).add(x)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=60, deadline=None)
@given(instances(25, 25, density=(0.0, 0.25)))
def test_components_partition(inst):
    n_req, edges, _ = inst
    comp_req, cols, comp_col = components(n_req, edges)
    assert comp_req.shape == (n_req,)
    assert cols.tolist() == sorted(set(edges.col.tolist()))
    assert comp_col.shape == cols.shape
    # edges never cross components
    ci = np.searchsorted(cols, edges.col)
    assert (comp_req[edges.req] == comp_col[ci]).all()
    # exactly the connected components (up to labels)
    got = {}
    for r in range(n_req):
        got.setdefault(int(comp_req[r]), set()).add(("r", r))
    for c, lab in zip(cols.tolist(), comp_col.tolist()):
        got.setdefault(int(lab), set()).add(("c", c))
    assert {frozenset(g) for g in got.values()} == union_find_partition(n_req, edges)


@settings(max_examples=30, deadline=None)
@given(instances(25, 25, min_req=1, min_drv=1, density=(0.02, 0.2)), st.data())
def test_solving_components_separately_is_optimal(inst, data):
    """What makes sharding exact: per-component solves add up to the global optimum,
    and greedy per component (same relative order) gives the same assignment."""
    n_req, edges, penalty = inst
    glob = solve_batch(n_req, edges, penalty)
    order = data.draw(orders(n_req))
    g_glob, _ = solve_greedy(n_req, edges, order)
    comp_req, cols, comp_col = components(n_req, edges)
    total, g_parts = 0.0, np.full(n_req, -1, np.int64)
    for lab in np.unique(comp_req):
        reqs = np.flatnonzero(comp_req == lab)
        local = np.full(n_req, -1, np.int64)
        local[reqs] = np.arange(len(reqs))
        sel = np.isin(edges.req, reqs)
        sub = Edges(local[edges.req[sel]], edges.col[sel], edges.cost[sel])
        out, c = solve_batch(len(reqs), sub, penalty[reqs])
        total += objective(out, c, penalty[reqs])
        sub_order = local[order[np.isin(order, reqs)]]
        g_out, _ = solve_greedy(len(reqs), sub, sub_order)
        g_parts[reqs] = g_out
    assert total == pytest.approx(objective(*glob, penalty), rel=1e-9, abs=1e-9)
    assert g_parts.tolist() == g_glob.tolist()


@given(st.lists(st.one_of(st.integers(0, 300), st.integers(0, 2**40)), max_size=60))
def test_compact_equals_unique(cols):
    """Both paths of the column compaction (lookup table, sort) give np.unique's answer."""
    col = np.asarray(cols, np.int64)
    got_cols, got_idx = _compact(Edges(np.zeros(len(col), np.int64), col, np.zeros(len(col))))
    want_cols, want_idx = np.unique(col, return_inverse=True)
    assert got_cols.tolist() == want_cols.tolist() and got_idx.tolist() == want_idx.tolist()


@st.composite
def graphs(draw):
    n = draw(st.integers(0, 40))
    if n == 0:
        return 0, np.empty(0, np.int64), np.empty(0, np.int64)
    shape = draw(st.sampled_from(["random", "path", "star"]))
    if shape == "path":  # the longest chain of label pulls
        order = np.array(draw(st.permutations(range(n))), np.int64)
        a, b = order[:-1], order[1:]
    elif shape == "star":
        a = np.full(n - 1, draw(st.integers(0, n - 1)), np.int64)
        b = np.array([i for i in range(n) if i != a[0]], np.int64) if n > 1 else np.empty(0, np.int64)
    else:
        m = draw(st.integers(0, 60))
        a = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), np.int64)
        b = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), np.int64)
    return n, a, b


@settings(max_examples=300, deadline=None)
@given(g=graphs())
def test_connected_labels_number_components_as_scipy_does(g):
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    from matcher.core import assignment

    n, a, b = g
    want = connected_components(csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)[1]
    assert assignment.connected_labels(n, a, b).tolist() == want.tolist()
    with pytest.MonkeyPatch.context() as mp:  # the scipy path for large graphs gives the same labels
        mp.setattr(assignment, "SMALL_GRAPH_EDGES", -1)
        assert assignment.connected_labels(n, a, b).tolist() == want.tolist()
