"""Independent areas replayed in parallel (issue #15): a synthetic multi-city day through
``matcher.sim.replay.run_replay``, once with its areas one after another in this process
and once as 2 area tasks on an embedded Ray (side by side, same trace, same seed); the
per-area throughput of the in-process run; one metro-sized area alone; and a projection,
from those measured figures, of the nodes that replay 100 cities x 50,000 drivers."""

from __future__ import annotations

import json
import math
import os
import time

from .common import Context, figure, synth_files_multi
from .replay import _config

# The projection's fleet (issue #15) and node type (cluster.yaml's workers).
PROJ_CITIES = 100
PROJ_DRIVERS = 50_000
NODE_CPUS = 8  # c5.2xlarge


def _run(ctx: Context, trace, drivers, out, *args: str) -> tuple[dict, float, float]:
    """(summary, wall s around run_replay, this process's CPU s) of one replay through the CLI's config."""
    from matcher.sim.replay import run_replay

    cfg = _config(trace, out, "--drivers", str(drivers), *args)
    c0, t0 = time.process_time(), time.perf_counter()
    summary = run_replay(cfg)
    return summary, time.perf_counter() - t0, time.process_time() - c0


def _lpt(walls: list[float], workers: int) -> float:
    """Makespan of the areas' walls on ``workers`` slots, biggest first (how the tasks are submitted)."""
    slots = [0.0] * workers
    for w in sorted(walls, reverse=True):
        i = slots.index(min(slots))
        slots[i] += w
    return max(slots)


def area_speedup_2_tasks(ctx: Context) -> dict:
    cities, drivers, rate, hours = (4, 400, 1.0, 0.1) if ctx.quick else (16, 4_000, 3.0, 1.0)
    trace, drv = synth_files_multi(ctx, cities=cities, drivers=drivers, requests_per_s=rate, hours=hours)
    load0 = os.getloadavg()[0]
    ctx.log(f"  {cities} cities, areas one after another in process ({trace.name})")
    seq, wall_seq, cpu_seq = _run(ctx, trace, drv, ctx.path("runs", "areas-inprocess"))
    ctx.log("  the same areas as 2 Ray tasks (embedded Ray, 1 CPU each)")
    par, wall_par, _ = _run(
        ctx, trace, drv, ctx.path("runs", "areas-ray"), "--backend", "ray", "--area-cpus", "1", "--checkpoint-every", "0"
    )
    load1 = os.getloadavg()[0]
    rows = seq["areas"]
    walls = [float(r["wall_seconds"]) for r in rows]
    ideal = sum(walls) / _lpt(walls, 2)
    same = seq["requests"] == par["requests"] and seq["completed"] == par["completed"]
    speed = wall_seq / wall_par
    note = (
        f"{seq['requests']:,} requests, {seq['drivers']:,} drivers, {len(rows)} areas ({cities} synthetic cities, "
        f"{hours:g} h from 06:00 UTC); wall around run_replay (load, split, areas, merge, summary): "
        f"{wall_seq:.1f} s in process vs {wall_par:.1f} s as 2 Ray tasks (Ray start included); the areas' own "
        f"walls in process sum to {sum(walls):.1f} s, and their best 2-slot schedule (biggest first) bounds the "
        f"speedup at {ideal:.2f}x; same outcome in both runs: {same}; load average {load0:.1f} -> {load1:.1f} on "
        f"{os.cpu_count()} cores (other work on this machine slows both runs)"
    )
    events = sorted(float(r["events_per_s"]) for r in rows if r.get("events_per_s"))
    med = events[len(events) // 2] if events else None
    per_area = ", ".join(f"{r['area']} {r['requests']:,} req {r['events_per_s']:,.0f} ev/s" for r in rows[:6])
    out = {
        "area_speedup_2_tasks": figure(speed, "x", 1.7, "higher", note),
        "area_events_per_s": figure(
            med,
            "events/s",
            None,
            None,
            f"median over the {len(rows)} areas of the in-process run of events written per wall second of the "
            f"area's replay (min {events[0]:,.0f}, max {events[-1]:,.0f}); {per_area}, ...; whole run "
            f"{seq['sim_seconds'] / wall_seq:.0f}x real time, CPU {cpu_seq:.1f} s",
            ok=True,
        ),
    }
    ctx.cache.joinpath("areas-last.json").write_text(json.dumps({"speedup": speed, "ideal": ideal}))
    return out


def area_projection(ctx: Context) -> dict:
    """One metro-sized area alone, in one process; the nodes for 100 such cities, projected from it."""
    from .common import synth_files

    # a quarter hour of the synthetic metro: 50,000 drivers, 55 requests/s (a small city with --quick)
    size = (2_000, 2.0, 0.1) if ctx.quick else (PROJ_DRIVERS, 55.0, 0.25)
    trace, drv = synth_files(ctx, drivers=size[0], requests_per_s=size[1], hours=size[2])
    summary, wall, cpu = _run(ctx, trace, drv, ctx.path("runs", "areas-metro"), "--checkpoint-every", "0")
    sim_s = float(summary["sim_seconds"])
    speed = sim_s / wall  # simulated seconds per wall second, one area in one process
    try:
        par = json.loads(ctx.cache.joinpath("areas-last.json").read_text())
        eff = min(1.0, float(par["speedup"]) / 2.0)
    except (OSError, ValueError, KeyError):
        eff = 1.0
    scale = PROJ_DRIVERS / max(int(summary["drivers"]), 1)  # --quick: a small city scaled up (rougher)
    per_city_cpus = scale / speed  # CPUs one 50,000-driver city needs to keep up with real time
    rows = {}
    for label, factor in (("realtime", 1.0), ("10x", 10.0)):
        cpus = PROJ_CITIES * per_city_cpus * factor / max(eff, 1e-9)
        need_single = per_city_cpus * factor  # one area is one process: it cannot use more than one CPU
        nodes = max(1, math.ceil(cpus / NODE_CPUS))
        feasible = need_single <= 1.0
        rows[label] = (cpus, nodes, feasible, need_single)
    basis = (
        f"PROJECTION from figures measured in this run: one {summary['drivers']:,}-driver area "
        f"({summary['requests']:,} requests) replays {sim_s:.0f} simulated s in {wall:.1f} s wall = {speed:.1f}x real "
        f"time in one process (CPU {cpu:.1f} s); 2-task parallel efficiency {eff:.2f} (area_speedup_2_tasks / 2); "
        f"cost taken as linear in drivers ({scale:.1f}x this area's fleet per city); {NODE_CPUS}-CPU nodes "
        f"(c5.2xlarge), one area per CPU"
    )
    out = {}
    for label, (cpus, nodes, feasible, single) in rows.items():
        what = "in real time" if label == "realtime" else "at 10x real time"
        out[f"area_nodes_{label}_100x50k"] = figure(
            nodes,
            "nodes",
            None,
            None,
            f"{PROJ_CITIES} cities x {PROJ_DRIVERS:,} drivers {what}: {cpus:.1f} CPUs -> {nodes} nodes; one city "
            f"needs {single:.2f} CPU{'' if feasible else ' (more than one process can give: split the city)'}. "
            + basis,
            ok=feasible,
        )
    out["area_metro_speed"] = figure(
        speed,
        "x",
        None,
        None,
        f"one metro area alone in one process: {sim_s:.0f} simulated s in {wall:.1f} s wall",
        ok=True,
    )
    return out
