"""What Ray costs a whole replay: 4 Ray shards against 1 in-process shard, side by side.

``ray_overhead_small_city``: a `matcher synth` day of a small city (500 drivers, about
17,000 requests over 24 h). ``ray_overhead_metro``: the synthetic metro hour (50,000
drivers, 55 requests/s). Each is the wall time around ``run_replay`` (trace load, Ray
start-up, replay, summary) of the 4-shard Ray run divided by that of the 1-shard
in-process run, the runs interleaved in one bench run (in process, Ray, in process for
the small city; the in-process time is the mean of its runs). The two runs' counts are
compared and their largest relative difference is in the note: the per-tick objective of 4
shards equals 1 shard's (``cost_ratio_sharded_vs_global``), but which of several equal-cost
matchings they pick need not be the same, and the runs may then diverge a little (the metro
hour: 0.02% of its completed rides, 0.7% of its cancellations; the small-city day: none).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .common import Context, failed, figure, metro_files, synth_files

TARGET = 1.5


def _replay(trace: Path, drivers: Path, out: Path, *args: str) -> tuple[dict, float, dict]:
    import json

    from matcher.cli import build_parser, config_from_args
    from matcher.sim.replay import run_replay

    a = build_parser().parse_args(
        ["replay", str(trace), "--out", str(out), "--drivers", str(drivers), "--quiet", *args]
    )
    cfg = config_from_args(a)
    t0 = time.perf_counter()
    summary = run_replay(cfg, overwrite=True)  # the bench's own run folder, replaced on every run
    wall = time.perf_counter() - t0
    return summary, wall, json.loads((out / "run.json").read_text())


def _ratio(ctx: Context, name: str, trace: Path, drivers: Path, rounds_inprocess: int) -> dict:
    load0 = os.getloadavg()[0]
    walls_in: list[float] = []
    ray_wall, ray_meta, ray_sum, in_sum = None, None, None, None
    for i in range(rounds_inprocess + 1):
        if i == 1:
            ctx.log(f"  {name}: 4 Ray shards ({trace.name})")
            ray_sum, ray_wall, ray_meta = _replay(
                trace, drivers, ctx.path("runs", f"{name}-ray4"), "--shards", "4", "--backend", "ray"
            )
            ctx.log(f"    {ray_wall:.1f} s")
        if i < rounds_inprocess:
            ctx.log(f"  {name}: 1 in-process shard, round {i + 1} ({trace.name})")
            in_sum, wall, _ = _replay(trace, drivers, ctx.path("runs", f"{name}-inproc1"), "--shards", "1")
            walls_in.append(wall)
            ctx.log(f"    {wall:.1f} s")
    assert ray_sum is not None and in_sum is not None and ray_meta is not None and ray_wall is not None
    base = sum(walls_in) / len(walls_in)
    ratio = ray_wall / base
    keys = ("requests", "completed", "expired", "cancelled", "matches")
    diff = max(abs(ray_sum[k] - in_sum[k]) / max(in_sum[k], 1) for k in keys)
    counts = "same counts" if diff == 0 else f"counts differ by at most {diff:.3%} ({_counts(in_sum, ray_sum, keys)})"
    tick_ray = (ray_sum.get("tick_ms") or {}).get("p50", float("nan"))
    tick_in = (in_sum.get("tick_ms") or {}).get("p50", float("nan"))
    note = (
        f"{in_sum['requests']:,} requests, {in_sum['drivers']:,} drivers, {in_sum['sim_seconds'] / 3600:.1f} sim h: "
        f"4 Ray shards {ray_wall:.1f} s wall against 1 in-process shard "
        f"{' / '.join(f'{w:.1f}' for w in walls_in)} s (mean {base:.1f} s), interleaved in this run, wall around "
        f"run_replay (load, Ray start, replay, summary); tick p50 {tick_ray:.2f} ms on Ray vs {tick_in:.2f} ms in "
        f"process; {ray_sum['ticks']:,} ticks; served {ray_sum['served_rate']:.1%} on Ray, "
        f"{in_sum['served_rate']:.1%} in process ({counts}); "
        f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f} (2 cores)"
    )
    return figure(ratio, "ratio", TARGET, "lower", note)


def _counts(a: dict, b: dict, keys: tuple[str, ...]) -> str:
    """The counts that differ, as ``name in-process/Ray``."""
    return ", ".join(f"{k} {a[k]:,}/{b[k]:,}" for k in keys if a[k] != b[k])


def ray_overhead_small_city(ctx: Context) -> dict:
    if ctx.quick:
        return {"ray_overhead_small_city": failed("ratio", TARGET, "lower", "skipped with --quick (starts Ray)")}
    trace, drivers = synth_files(ctx, drivers=500, requests_per_s=0.197, hours=24.0, seed=1)
    return {"ray_overhead_small_city": _ratio(ctx, "small-city", trace, drivers, rounds_inprocess=2)}


def ray_overhead_metro(ctx: Context) -> dict:
    if ctx.quick:
        return {"ray_overhead_metro": failed("ratio", None, None, "skipped with --quick (starts Ray)")}
    trace, drivers = metro_files(ctx)
    f = _ratio(ctx, "metro", trace, drivers, rounds_inprocess=1)
    f["target"], f["better"], f["ok"] = None, None, True  # reported, no target (issue 12)
    return {"ray_overhead_metro": f}
