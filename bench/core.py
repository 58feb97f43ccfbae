"""The matching core on one core: a metro tick (candidates + assignment), the dense
full-matrix baseline beside it, how tick time scales with the pending queue, and
columnar ping ingestion.
"""

from __future__ import annotations

import gc
import math
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from matcher.config import MatchConfig
from matcher.core import geo
from matcher.core.assignment import Edges, solve_batch, solve_greedy, unmatched_penalty
from matcher.core.candidates import RequestBatch, compat_matrix, find_candidates
from matcher.core.cost import StraightLineEta
from matcher.core.driver_table import DriverTable
from matcher.core.shard import greedy_order

from .common import (
    NOW,
    Context,
    driver_pings,
    driver_table,
    figure,
    load_pool,
    median,
    objective,
    one_core,
    pct,
    request_batch,
)

CFG = MatchConfig()
ETA = StraightLineEta(CFG.eta)


def _sizes(ctx: Context):
    """(drivers, pending requests, ticks) of the metro tick."""
    return (5_000, 50, 8) if ctx.quick else (50_000, 500, 40)


# ---------------------------------------------------------------- the three solvers


def ours(table: DriverTable, reqs: RequestBatch, cfg: MatchConfig = CFG):
    """find_candidates + solve_batch, as a shard does each tick. Returns (driver row per request, its cost, edges)."""
    cand = find_candidates(table, reqs, NOW, cfg, ETA)
    pen = unmatched_penalty(reqs.wait_s, cfg.unmatched_base_s, cfg.unmatched_per_wait)
    row, cost = solve_batch(len(reqs), Edges(cand.req, cand.row, cand.cost), pen, cfg.dense_max_cells)
    return row, cost, len(cand)


def greedy(table: DriverTable, reqs: RequestBatch, cfg: MatchConfig = CFG):
    """find_candidates + solve_greedy (first come, first served over the same candidates)."""
    cand = find_candidates(table, reqs, NOW, cfg, ETA)
    row, cost = solve_greedy(len(reqs), Edges(cand.req, cand.row, cand.cost), greedy_order(reqs))
    return row, cost, len(cand)


def dense(table: DriverTable, reqs: RequestBatch, cfg: MatchConfig = CFG):
    """The textbook baseline: the ETA of every (request, eligible driver) pair, vectorized,
    into one dense matrix with a stay-unmatched column per request, solved by
    ``scipy.optimize.linear_sum_assignment``. Pairs beyond the radius or of an
    incompatible vehicle are forbidden (inf), so its optimum is the exact optimum of
    the radius-restricted problem ours approximates with k candidates per request."""
    rows = np.flatnonzero(table.eligible(NOW, cfg.gps_timeout_s))
    n, m = len(reqs), len(rows)
    dlat, dlng = table.lat[rows][None, :], table.lng[rows][None, :]
    qlat, qlng = reqs.lat[:, None], reqs.lng[:, None]
    dist = geo.haversine_m(dlat, dlng, qlat, qlng)
    bearing = geo.bearing_deg(dlat, dlng, qlat, qlng)  # driver -> pickup
    cost = ETA.pickup_eta_s(dist, bearing, table.heading[rows][None, :], table.speed[rows][None, :])
    del bearing
    allowed = compat_matrix(cfg.compat)[reqs.ride_type][:, table.vehicle[rows]] & (dist <= cfg.radius_m)
    del dist
    mat = np.full((n, m + n), np.inf)
    np.copyto(mat[:, :m], cost, where=allowed)
    del cost, allowed
    mat[np.arange(n), m + np.arange(n)] = unmatched_penalty(reqs.wait_s, cfg.unmatched_base_s, cfg.unmatched_per_wait)
    r, c = linear_sum_assignment(mat)
    out_row = np.full(n, -1, np.int64)
    out_cost = np.full(n, np.nan)
    real = c < m
    out_row[r[real]] = rows[c[real]]
    out_cost[r[real]] = mat[r[real], c[real]]
    return out_row, out_cost, n * m


def _obj(row, cost, reqs):
    return objective(cost, row >= 0, reqs.wait_s, CFG)


def _timed(fn, *a):
    """(result, wall seconds); the thread's CPU seconds go to _timed.cpu (wall is what we report,
    CPU time shows how much of it other work on the machine took)."""
    c0 = time.thread_time()
    t0 = time.perf_counter()
    out = fn(*a)
    wall = time.perf_counter() - t0
    _timed.cpu = time.thread_time() - c0
    return out, wall


_timed.cpu = 0.0


# ---------------------------------------------------------------- figures


def tick_solve_ms_p50(ctx: Context) -> dict:
    n_drv, n_req, ticks = _sizes(ctx)
    pool = load_pool(ctx)
    rng = np.random.default_rng(1)
    pings = driver_pings(pool, n_drv, rng)
    table = driver_table(pings)
    cand_ms, solve_ms, total_ms, cpu_ms, edges = [], [], [], [], []
    with one_core():
        for k in range(ticks + 3):
            reqs = request_batch(pool, n_req, rng)
            gc.collect()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            cand = find_candidates(table, reqs, NOW, CFG, ETA)
            t1 = time.perf_counter()
            pen = unmatched_penalty(reqs.wait_s, CFG.unmatched_base_s, CFG.unmatched_per_wait)
            solve_batch(n_req, Edges(cand.req, cand.row, cand.cost), pen, CFG.dense_max_cells)
            t2 = time.perf_counter()
            c2 = time.thread_time()
            if k >= 3:  # warm-up ticks dropped
                cand_ms.append((t1 - t0) * 1e3)
                solve_ms.append((t2 - t1) * 1e3)
                total_ms.append((t2 - t0) * 1e3)
                cpu_ms.append((c2 - c0) * 1e3)
                edges.append(len(cand))
    avail = int(table.eligible(NOW, CFG.gps_timeout_s).sum())
    note = (
        f"{n_req} pending x {n_drv:,} drivers ({avail:,} available) of the synthetic NYC metro, one core, "
        f"median of {ticks} ticks with fresh request batches: candidates {median(cand_ms):.1f} ms + "
        f"solve {median(solve_ms):.1f} ms; p90 {pct(total_ms, 90):.1f} ms; CPU time median {median(cpu_ms):.1f} ms; "
        f"{median(edges) / n_req:.1f} edges/request"
    )
    return {"tick_solve_ms_p50": figure(median(total_ms), "ms", 20, "lower", note)}


def tick_dense_vs_sparse(ctx: Context) -> dict:
    n_drv, n_req, _ = _sizes(ctx)
    repeats = 3 if ctx.quick else 7
    pool = load_pool(ctx)
    rng = np.random.default_rng(2)
    table = driver_table(driver_pings(pool, n_drv, rng))
    t_ours, t_dense, o_ours, o_dense, m_ours, m_dense, c_ours, c_dense = [], [], [], [], [], [], [], []
    with one_core():
        for k in range(repeats + 1):
            reqs = request_batch(pool, n_req, rng)
            gc.collect()
            (row, cost, _), a = _timed(ours, table, reqs)
            ca = _timed.cpu
            gc.collect()
            (drow, dcost, cells), b = _timed(dense, table, reqs)
            cb = _timed.cpu
            if k == 0:
                continue  # warm-up
            t_ours.append(a)
            t_dense.append(b)
            c_ours.append(ca)
            c_dense.append(cb)
            o_ours.append(_obj(row, cost, reqs))
            o_dense.append(_obj(drow, dcost, reqs))
            m_ours.append(int((row >= 0).sum()))
            m_dense.append(int((drow >= 0).sum()))
    ratio = median(t_dense) / median(t_ours)
    gap = (sum(o_ours) / sum(o_dense) - 1) * 100
    note = (
        f"dense linear_sum_assignment on {n_req} x {cells // n_req:,} eligible drivers (+{n_req} stay-unmatched columns, "
        f"ETA of every pair vectorized, radius/compat as inf): median {median(t_dense) * 1e3:.0f} ms vs ours "
        f"{median(t_ours) * 1e3:.1f} ms over {repeats} batches (CPU-time ratio {median(c_dense) / median(c_ours):.0f}x); objective (ETA + unmatched penalty) ours "
        f"{np.mean(o_ours):.0f} s vs dense optimum {np.mean(o_dense):.0f} s ({gap:+.4f}%; ours keeps k={CFG.k} "
        f"cheapest of the {CFG.k_search} nearest per request); matched {np.mean(m_ours):.1f} vs {np.mean(m_dense):.1f} per tick"
    )
    return {"tick_dense_vs_sparse": figure(ratio, "x", 10, "higher", note)}


def queued_solve_speedup(ctx: Context) -> dict:
    """A tick of a saturated metro: many more pending requests than available drivers.
    The same edges solved with request rows and with driver rows (what ``side="auto"``
    picks here); both optima are checked equal."""
    n_drv, n_req, reps = (5_000, 240, 3) if ctx.quick else (50_000, 2_400, 7)
    pool = load_pool(ctx)
    rng = np.random.default_rng(4)
    table = driver_table(driver_pings(pool, n_drv, rng, available=0.01))
    t_req, t_drv, cols = [], [], []
    with one_core():
        for k in range(reps + 1):
            reqs = request_batch(pool, n_req, rng)
            reqs.wait_s = rng.uniform(0.0, 300.0, n_req)  # a queue: some have waited minutes
            cand = find_candidates(table, reqs, NOW, CFG, ETA)
            e = Edges(cand.req, cand.row, cand.cost)
            pen = unmatched_penalty(reqs.wait_s, CFG.unmatched_base_s, CFG.unmatched_per_wait)
            gc.collect()
            (a_row, a_cost), a = _timed(solve_batch, n_req, e, pen, CFG.dense_max_cells, "requests")
            gc.collect()
            (b_row, b_cost), b = _timed(solve_batch, n_req, e, pen, CFG.dense_max_cells, "drivers")
            oa, ob = _obj(a_row, a_cost, reqs), _obj(b_row, b_cost, reqs)
            if abs(oa - ob) > 1e-6 * max(1.0, abs(oa)):
                raise AssertionError(f"driver rows objective {ob} != request rows {oa}")
            if k:
                t_req.append(a)
                t_drv.append(b)
                cols.append(len(np.unique(cand.row)))
    avail = int(table.eligible(NOW, CFG.gps_timeout_s).sum())
    ratio = median(t_req) / median(t_drv)
    note = (
        f"{n_req:,} pending requests (waited 0-300 s) x {n_drv:,} drivers, {avail:,} available "
        f"({median(cols):.0f} reachable by some request), one core, median of {reps} ticks: sparse solve with "
        f"request rows {median(t_req) * 1e3:.1f} ms vs driver rows {median(t_drv) * 1e3:.1f} ms, same objective"
    )
    return {"queued_solve_speedup": figure(ratio, "x", 1.0, "higher", note)}


def scaling_exponent(ctx: Context) -> dict:
    """Tick time vs pending requests at constant density: drivers = 100 x pending and the
    city's km offsets scaled by sqrt(pending / 500), so 500 pending is the metro itself."""
    if ctx.quick:
        sizes, dense_max, per_req, reps = [25, 50, 100], 50, 20, 3
    else:
        sizes, dense_max, per_req, reps = [100, 200, 500, 1000, 2000, 5000], 1000, 100, 9
    pool = load_pool(ctx)
    rng = np.random.default_rng(3)
    res: dict[str, dict[int, float]] = {"ours": {}, "greedy": {}, "dense": {}}
    cpu: dict[int, float] = {}  # ours, CPU time
    with one_core():
        for n in sizes:
            scale = math.sqrt(n / 500.0)
            table = driver_table(driver_pings(pool, per_req * n, rng, scale=scale))
            r = max(3, reps if n <= 1000 else reps // 2)
            t = {"ours": [], "greedy": [], "dense": []}
            c = []
            for k in range(r + 1):
                reqs = request_batch(pool, n, rng, scale=scale)
                runs = [("ours", ours), ("greedy", greedy)]
                if n <= dense_max and k < 3:  # dense is seconds per tick: 2 timed batches
                    runs.append(("dense", dense))
                for name, fn in runs:
                    gc.collect()
                    _, s = _timed(fn, table, reqs)
                    if k:
                        t[name].append(s)
                        if name == "ours":
                            c.append(_timed.cpu)
            cpu[n] = median(c) * 1e3
            for name, xs in t.items():
                if xs:
                    res[name][n] = median(xs) * 1e3
            ctx.log(f"  scaling n={n}: " + ", ".join(f"{k} {v[n]:.1f} ms" for k, v in res.items() if n in v))
            del table
    slope = {}
    for name, d in res.items():
        if len(d) >= 2:
            x = np.log(list(d.keys()))
            y = np.log(list(d.values()))
            slope[name] = float(np.polyfit(x, y, 1)[0])
    cpu_slope = float(np.polyfit(np.log(list(cpu)), np.log(list(cpu.values())), 1)[0])
    png = _plot(ctx, res, slope)
    pts = "; ".join(f"{n}: {res['ours'][n]:.1f} ms" for n in sizes)
    note = (
        f"log-log slope of ours (find_candidates + solve_batch) over {sizes[0]}..{sizes[-1]} pending, "
        f"{per_req} drivers/request (60% available), constant density, one core: {pts}. "
        f"Slope of ours in CPU time {cpu_slope:.2f}. Slopes: greedy {slope.get('greedy', float('nan')):.2f}, dense scipy {slope.get('dense', float('nan')):.2f} "
        f"(<= {dense_max} pending). Plot: {png}"
    )
    return {"scaling_exponent": figure(slope["ours"], "slope", 1.3, "lower", note)}


def _plot(ctx: Context, res, slope) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    style = {
        "ours": ("o-", "ours: candidates + solve_batch"),
        "greedy": ("s--", "greedy: candidates + solve_greedy"),
        "dense": ("^:", "dense scipy linear_sum_assignment"),
    }
    for name, d in res.items():
        if d:
            mark, label = style[name]
            ax.plot(
                list(d.keys()), list(d.values()), mark, label=f"{label} (slope {slope.get(name, float('nan')):.2f})"
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pending requests per tick (drivers = 100 x pending, constant density)")
    ax.set_ylabel("tick time, ms (one core)")
    ax.axhline(20, color="grey", lw=0.8, ls="--")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Tick time vs pending requests")
    fig.tight_layout()
    ctx.results.mkdir(parents=True, exist_ok=True)
    out = ctx.results / "tick_scaling.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)


def ingest_pings_per_s(ctx: Context) -> dict:
    n, batches = (5_000, 10) if ctx.quick else (50_000, 40)
    pool = load_pool(ctx)
    rng = np.random.default_rng(4)
    first = driver_pings(pool, n, rng, now=0.0)
    table = driver_table(first)
    prepared = []
    for b in range(batches + 3):  # every driver reports once per batch, in a shuffled order
        p = driver_pings(pool, n, rng, now=4.0 * (b + 1))
        p.key = rng.permutation(n).astype(np.int64)
        prepared.append(p)
    dt = []
    with one_core():
        for b, p in enumerate(prepared):
            t0 = time.perf_counter()
            refused = table.apply_pings(p)
            s = time.perf_counter() - t0
            assert sum(refused.values()) == 0 and table.n == n
            if b >= 3:
                dt.append(s)
    rate = n / median(dt)
    note = (
        f"DriverTable.apply_pings, batches of {n:,} updates to a {n:,}-driver table, one core, median of {batches}: "
        f"{median(dt) * 1e3:.2f} ms per batch (p90 {pct(dt, 90) * 1e3:.2f} ms)"
    )
    return {"ingest_pings_per_s": figure(rate, "pings/s", 1_000_000, "higher", note)}
