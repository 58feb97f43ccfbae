"""Tests for matcher.core.assignment: batch optimality (brute force), greedy, dense/sparse, components."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def random_instance(rng, n_req, n_drv, density=None, integer_costs=None):
    """Random edges with unique (request, column) pairs; columns are arbitrary non-negative ids."""
    cols = np.sort(rng.choice(10**6, n_drv, replace=False)).astype(np.int64) if n_drv else np.empty(0, np.int64)
    rng.shuffle(cols)
    density = rng.uniform(0.1, 1.0) if density is None else density
    mask = rng.random((n_req, n_drv)) < density
    r, c = np.nonzero(mask)
    integer_costs = rng.random() < 0.3 if integer_costs is None else integer_costs
    cost = rng.integers(0, 6, len(r)).astype(float) * 100 if integer_costs else rng.uniform(0, 1000, len(r))
    perm = rng.permutation(len(r))
    edges = Edges(r[perm].astype(np.int64), cols[c[perm]], cost[perm])
    wait = rng.uniform(0, 400, n_req)
    penalty = unmatched_penalty(wait, float(rng.uniform(100, 900)), float(rng.uniform(0, 2)))
    return edges, penalty


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
@given(st.integers(0, 2**32 - 1), st.integers(0, 7), st.integers(0, 7))
def test_batch_equals_brute_force(seed, n_req, n_drv):
    rng = np.random.default_rng(seed)
    edges, penalty = random_instance(rng, n_req, n_drv)
    best = brute_force_optimum(n_req, edges, penalty)
    for cells, side in ((DENSE, "auto"), (SPARSE, "requests"), (SPARSE, "drivers")):
        out, cost_out = solve_batch(n_req, edges, penalty, dense_max_cells=cells, side=side)
        check_valid(n_req, edges, out, cost_out)
        assert objective(out, cost_out, penalty) == pytest.approx(best, rel=1e-9, abs=1e-9), (cells, side)
        # an optimum never takes an edge that costs more than waiting
        m = out >= 0
        assert (cost_out[m] <= penalty[m]).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 30), st.integers(0, 30))
def test_batch_not_worse_than_greedy_and_dense_equals_sparse(seed, n_req, n_drv):
    rng = np.random.default_rng(seed)
    edges, penalty = random_instance(rng, n_req, n_drv)
    dense = solve_batch(n_req, edges, penalty, dense_max_cells=DENSE)
    sparse = solve_batch(n_req, edges, penalty, dense_max_cells=SPARSE)
    default = solve_batch(n_req, edges, penalty)
    for out, c in (dense, sparse, default):
        check_valid(n_req, edges, out, c)
    obj = objective(*dense, penalty)
    assert objective(*sparse, penalty) == pytest.approx(obj, rel=1e-9, abs=1e-9)
    assert objective(*default, penalty) == pytest.approx(obj, rel=1e-9, abs=1e-9)
    order = rng.permutation(n_req)
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
@given(st.integers(0, 2**32 - 1), st.integers(1, 20), st.integers(1, 20))
def test_greedy_respects_arrival_order(seed, n_req, n_drv):
    rng = np.random.default_rng(seed)
    edges, penalty = random_instance(rng, n_req, n_drv)
    order = rng.permutation(n_req)
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
@given(st.integers(0, 2**32 - 1), st.integers(0, 25), st.integers(0, 25))
def test_components_partition(seed, n_req, n_drv):
    rng = np.random.default_rng(seed)
    edges, _ = random_instance(rng, n_req, n_drv, density=rng.uniform(0.0, 0.25))
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
@given(st.integers(0, 2**32 - 1), st.integers(1, 25), st.integers(1, 25))
def test_solving_components_separately_is_optimal(seed, n_req, n_drv):
    """What makes sharding exact: per-component solves add up to the global optimum,
    and greedy per component (same relative order) gives the same assignment."""
    rng = np.random.default_rng(seed)
    edges, penalty = random_instance(rng, n_req, n_drv, density=rng.uniform(0.02, 0.2))
    glob = solve_batch(n_req, edges, penalty)
    order = rng.permutation(n_req)
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
