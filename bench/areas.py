"""Independent areas replayed in parallel (issue #15): a synthetic multi-city day through
``matcher.sim.replay.run_replay``, with its areas one after another in one process, as 2
area tasks on a running one-node cluster, and as 2 area tasks on an embedded Ray (side by
side, same trace, same seed, each in a fresh interpreter); the per-area throughput of the
in-process run; one metro-sized area alone; and a projection, from those measured figures,
of the nodes that replay 100 cities x 50,000 drivers."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

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
    summary = run_replay(cfg, overwrite=True)  # the bench's own run folder, replaced on every run
    return summary, time.perf_counter() - t0, time.process_time() - c0


def _lpt(walls: list[float], workers: int) -> float:
    """Makespan of the areas' walls on ``workers`` slots, biggest first (how the tasks are submitted)."""
    slots = [0.0] * workers
    for w in sorted(walls, reverse=True):
        i = slots.index(min(slots))
        slots[i] += w
    return max(slots)


def _run_child(ctx: Context, trace, drivers, out, *args: str, env=None) -> tuple[dict, float, float]:
    """(summary, wall s, CPU s) of one replay in a fresh interpreter (``bench._area_child``), both
    taken around run_replay in that process; ``env``: its environment (default: this one's)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "bench._area_child", str(trace), str(drivers), str(out), *args]
    here = Path(__file__).resolve().parents[1]
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=here, check=False)
    if got.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} exited with {got.returncode}: {got.stderr[-3000:]}")
    res = json.loads(got.stdout.strip().splitlines()[-1])
    return res["summary"], float(res["wall_s"]), float(res["cpu_s"])


def area_speedup_2_tasks(ctx: Context) -> dict:
    """The areas one after another in one process, then as 2 Ray tasks on a running one-node
    cluster (a ``ray start --head`` of its own at 127.0.0.2, as a user runs a cluster replay:
    the figure), then as 2 tasks on an embedded Ray that the run starts and stops (Ray's
    start-up included: the second figure). Each run in a fresh interpreter, same trace, seed
    and options."""
    from matcher.dist.headprocess import HeadProcess

    cities, drivers, rate, hours = (4, 400, 1.0, 0.1) if ctx.quick else (16, 4_000, 3.0, 1.0)
    trace, drv = synth_files_multi(ctx, cities=cities, drivers=drivers, requests_per_s=rate, hours=hours)
    load0 = os.getloadavg()[0]
    opts = ("--checkpoint-every", "0")  # the same options for every run
    tasks = ("--backend", "ray", "--area-cpus", "1", *opts)
    ctx.log(f"  {cities} cities, areas one after another in process ({trace.name})")
    seq, wall_seq, cpu_seq = _run_child(ctx, trace, drv, ctx.path("runs", "areas-inprocess"), *opts)
    ctx.log("  the same areas as 2 Ray tasks on a running head (ray start --head at 127.0.0.2, 2 CPUs)")
    with HeadProcess(node_ip="127.0.0.2", num_cpus=2) as head:
        par, wall_par, cpu_par = _run_child(
            ctx, trace, drv, ctx.path("runs", "areas-ray"), *tasks, "--address", head.address, env=head.client_env()
        )
    ctx.log("  the same areas as 2 Ray tasks on an embedded Ray (started and stopped by the run)")
    with tempfile.TemporaryDirectory(prefix="mra-", dir="/tmp") as tmp:  # short: Ray's socket paths
        emb, wall_emb, cpu_emb = _run_child(
            ctx, trace, drv, ctx.path("runs", "areas-embedded"), *tasks, env={**os.environ, "RAY_TMPDIR": tmp}
        )
    load1 = os.getloadavg()[0]
    rows = seq["areas"]
    walls = [float(r["wall_seconds"]) for r in rows]
    ideal = sum(walls) / _lpt(walls, 2)
    cpus = [float(r["cpu_seconds"] or 0.0) for r in rows]
    cpu_ideal = sum(cpus) / _lpt(cpus, 2)
    task_cpu = sum(float(r["cpu_seconds"] or 0.0) for r in par["areas"])
    share_seq = cpu_seq / wall_seq  # cores this run got (this machine is shared)
    share_par = (cpu_par + task_cpu) / wall_par  # the driver and its 2 area tasks
    head_cpu = max(cpu_seq - sum(cpus), 0.0)  # load, cut, merge, whole-run summary: serial, on the driver
    same = all(s["requests"] == seq["requests"] and s["completed"] == seq["completed"] for s in (par, emb))
    speed, speed_emb = wall_seq / wall_par, wall_seq / wall_emb
    note = (
        f"{seq['requests']:,} requests, {seq['drivers']:,} drivers, {len(rows)} areas ({cities} synthetic cities, "
        f"{hours:g} h from 06:00 UTC); wall around run_replay (load, split, areas, merge, summary), each run in a "
        f"fresh interpreter: {wall_seq:.1f} s in process vs {wall_par:.1f} s as 2 Ray tasks on a running "
        f"one-node cluster (`ray start --head` at 127.0.0.2; connecting included, the cluster's start not); the "
        f"areas' own walls in process sum to {sum(walls):.1f} s, and their best 2-slot schedule (biggest first) "
        f"bounds the speedup at {ideal:.2f}x ({cpu_ideal:.2f}x from their CPU times); CPU used: {cpu_seq:.1f} s in "
        f"process, {cpu_par:.1f} s driver + {task_cpu:.1f} s in the 2 tasks; cores obtained {share_seq:.2f} in "
        f"process vs {share_par:.2f} with 2 tasks (of {os.cpu_count()}; load average {load0:.1f} -> {load1:.1f}: "
        f"other work on this machine takes the rest); same outcome in every run: {same}"
    )
    note_emb = (
        f"the same day as 2 Ray tasks on an embedded Ray that the run starts and stops (`--backend ray` with no "
        f"--address): {wall_emb:.1f} s against {wall_seq:.1f} s in process, Ray's own start and stop "
        f"included (area_speedup_2_tasks, on a running head: {wall_par:.1f} s)"
    )
    events = sorted(float(r["events_per_s"]) for r in rows if r.get("events_per_s"))
    med = events[len(events) // 2] if events else None
    per_area = ", ".join(f"{r['area']} {r['requests']:,} req {r['events_per_s']:,.0f} ev/s" for r in rows[:6])
    out = {
        "area_speedup_2_tasks": figure(speed, "x", 1.7, "higher", note),
        "area_speedup_2_tasks_embedded": figure(speed_emb, "x", None, None, note_emb, ok=True),
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
    ctx.cache.joinpath("areas-last.json").write_text(
        json.dumps({"speedup": speed, "ideal": ideal, "head_cpu_s_per_request": head_cpu / max(seq["requests"], 1)})
    )
    return out


def area_projection(ctx: Context) -> dict:
    """One metro-sized area alone, in one process; the nodes for 100 such cities, projected from it.

    The projection counts CPU time, not wall time: CPU seconds are what a dedicated node
    supplies, while this machine's wall times are inflated by the other work on it."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .common import synth_files

    # a quarter hour of the synthetic metro: 50,000 drivers, 55 requests/s (a small city with --quick)
    size = (2_000, 2.0, 0.1) if ctx.quick else (PROJ_DRIVERS, 55.0, 0.25)
    trace, drv = synth_files(ctx, drivers=size[0], requests_per_s=size[1], hours=size[2])
    summary, wall, cpu = _run(ctx, trace, drv, ctx.path("runs", "areas-metro"), "--checkpoint-every", "0")
    t = pq.read_table(trace, columns=["request_time"]).column("request_time").cast("int64")
    window_s = (pc.max(t).as_py() - pc.min(t).as_py()) / 1000.0  # the demand window, drain not counted
    rate = summary["requests"] / window_s
    try:
        last = json.loads(ctx.cache.joinpath("areas-last.json").read_text())
        head_per_req = float(last["head_cpu_s_per_request"])
    except (OSError, ValueError, KeyError):
        head_per_req = float("nan")
    scale = PROJ_DRIVERS / max(int(summary["drivers"]), 1)  # 1 in full mode; --quick scales a small city up
    per_city = cpu * scale / window_s  # CPUs one such city needs to keep up with real time
    day_requests = PROJ_CITIES * rate * scale * 86_400
    basis = (
        f"PROJECTION from figures measured in this run: one {summary['drivers']:,}-driver area, "
        f"{summary['requests']:,} requests in {window_s:.0f} s ({rate:.1f}/s), replays in {cpu:.1f} CPU s "
        f"({wall:.1f} s wall on this loaded machine; load, replay with its drain, summary) = {per_city:.4f} CPU "
        f"per city in real time; every city at that rate all day ({day_requests / 1e6:,.0f} M requests); "
        f"{NODE_CPUS}-CPU nodes (c5.2xlarge), one area task per CPU"
        + ("" if scale == 1 else f"; --quick: a small city scaled {scale:.0f}x (rough)")
    )
    out = {}
    for label, factor in (("realtime", 1.0), ("10x", 10.0)):
        cpus = PROJ_CITIES * per_city * factor
        nodes = max(1, math.ceil(cpus / NODE_CPUS))
        day_wall = 86_400 / factor
        head = head_per_req * day_requests
        what = "in real time" if label == "realtime" else "at 10x real time"
        out[f"area_nodes_{label}_100x50k"] = figure(
            nodes,
            "nodes",
            None,
            None,
            f"{PROJ_CITIES} cities x {PROJ_DRIVERS:,} drivers {what} (a day in {day_wall / 3600:.1f} h): "
            f"{cpus:.1f} CPUs of area tasks -> {nodes} worker node(s); one city needs {per_city * factor:.3f} CPU "
            f"(an area is one process: at most 1). The driver's serial part (load, cut, merge, whole-run summary; "
            f"{head_per_req * 1e3:.3f} CPU ms per request in area_speedup_2_tasks) would take {head / 3600:.1f} h "
            f"for that day{' and is the limit' if head > day_wall else ''}. " + basis,
            ok=per_city * factor <= 1.0,
        )
    out["area_metro_speed"] = figure(
        window_s / wall,
        "x",
        None,
        None,
        f"one metro area alone in one process: {window_s:.0f} s of demand (plus its drain) in {wall:.1f} s wall, "
        f"{cpu:.1f} CPU s; {summary['requests']:,} requests, {summary['drivers']:,} drivers",
        ok=True,
    )
    return out
