"""Shards that share the work (issue 14), measured through the real replay and the real Coordinator:

- ``shard_balance_4`` / ``shard_balance_8``, ``coordinator_solve_share`` and ``modeled_speedup_8``:
  the synthetic metro (its first ``METRO_MINUTES`` minutes, all 50,000 drivers) replayed with 4 and 8
  in-process shards; the figures are the run's own summary.json keys, computed from OUT/shards.parquet
  and OUT/ticks.parquet (CPU times on each shard's thread, so other work on the machine inflates
  neither them nor their ratios much). ``modeled_speedup_8`` is MODELLED: per tick, all solve CPU over
  the critical path (slowest shard's round 1 + coordinator + slowest shard's round 2), median over ticks;
  it is what one core per shard would give, not a wall time.
- ``wall_2_shards_vs_1``: measured wall time of the same metro slice on 2 Ray shards against 1 Ray
  shard on this 2-core machine (wall: inflated by whatever else runs here; the load average is recorded).
- ``nyc_day_sharded_vs_1``: the real NYC day (data/) replayed with 1, 4 and 8 shards; the value is the
  largest relative difference in mean pickup ETA or served share (target <= 1%).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .common import Context, failed, figure, metro_files

REPO = Path(__file__).resolve().parent.parent
NYC_DAY = REPO / "data" / "nyc-uber-2014-04-04.parquet"
METRO_MINUTES = 10
WALL_MINUTES = 3


def _slice(ctx: Context, minutes: float) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    trace, drivers = metro_files(ctx)
    out = ctx.path("inputs", f"{trace.stem}-first{minutes:g}min.parquet")
    if not out.exists():
        t = pq.read_table(trace)
        ms = t.column("request_time").cast(pa.int64())
        pq.write_table(t.filter(pc.less(ms, pc.min(ms).as_py() + int(minutes * 60_000))), out)
    return out, drivers


def _replay(trace: Path, drivers, out: Path, **shard) -> tuple[dict, float]:
    from dataclasses import replace

    from matcher.config import RunConfig, ShardConfig
    from matcher.sim.replay import run_replay

    cfg = RunConfig(
        trace=str(trace),
        out=str(out),
        drivers=drivers if isinstance(drivers, int) or drivers is None else str(drivers),
        quiet=True,
        checkpoint_every_s=0,
        shard=replace(ShardConfig(), **shard),
    )
    t0 = time.perf_counter()
    s = run_replay(cfg, overwrite=True)  # the bench's own run folder, replaced on every run
    return s, time.perf_counter() - t0


def _round2_share(out: Path) -> float:
    """Requests of contested border components (round 2) over all pending requests, from ticks.parquet."""
    import polars as pl

    t = pl.read_parquet(out / "ticks.parquet", columns=["pending", "round2"])
    total = int(t["pending"].sum())
    return int(t["round2"].sum()) / total if total else 0.0


def _shard_note(s: dict, out: Path) -> str:
    import polars as pl

    sh = pl.read_parquet(out / "shards.parquet")
    per = sh.group_by("shard").agg(
        pl.col("solve_ms").sum(), pl.col("pending").sum(), pl.col("drivers").mean(), pl.col("border").sum()
    )
    per = per.sort("shard")
    return (
        f"{s['requests']:,} requests, {s['drivers']:,} drivers, {s['ticks']} ticks; border share "
        f"{s['border_share'] or 0:.1%} (solved in round 2: {_round2_share(out):.1%}); per-shard solve CPU s {[round(x / 1e3, 1) for x in per['solve_ms']]}, "
        f"pending {per['pending'].to_list()}, mean owned drivers {[round(x) for x in per['drivers']]}; "
        f"served {s['served_rate']:.1%}, mean pickup ETA {(s['pickup_eta_s'] or {}).get('mean') or float('nan'):.1f} s"
    )


def shard_balance(ctx: Context) -> dict:
    minutes = 2 if ctx.quick else METRO_MINUTES
    trace, drivers = _slice(ctx, minutes)
    runs = {}
    for k in (4, 8):
        out = ctx.path("runs", f"metro-shards-{k}")
        ctx.log(f"  metro {minutes} min, {k} in-process shards")
        runs[k] = (*_replay(trace, drivers, out, shards=k, backend="inprocess"), out)
    what = "a small synthetic city (--quick)" if ctx.quick else f"the synthetic metro, first {minutes} min"
    figs = {}
    for k in (4, 8):
        s, wall, out = runs[k]
        figs[f"shard_balance_{k}"] = figure(
            s["shard_balance"],
            "ratio",
            1.3,
            "lower",
            f"max/mean of per-shard solve CPU over the run (summary.json shard_balance), {k} shards, {what}: "
            f"{_shard_note(s, out)}; replay wall {wall:.0f} s",
        )
    s8, _, out8 = runs[8]
    s4 = runs[4][0]
    figs["coordinator_solve_share"] = figure(
        s8["coordinator_solve_share"],
        "share",
        0.10,
        "lower",
        f"coordinator CPU (joining border components, assigning them, merging) over all solve CPU, 8 shards, "
        f"{what} (4 shards: {s4['coordinator_solve_share']:.4f})",
    )
    figs["modeled_speedup_8"] = figure(
        s8["modeled_speedup"],
        "x",
        5.0,
        "higher",
        f"MODELLED from CPU times measured in one run (not a wall time): per tick, all solve CPU over the critical "
        f"path (slowest shard's round 1 + coordinator + slowest shard's round 2), median over ticks, 8 shards, {what} "
        f"(4 shards: {s4['modeled_speedup']:.2f}x)",
    )
    return figs


def wall_2_shards_vs_1(ctx: Context) -> dict:
    unit, target = "x", 1.0
    if ctx.quick:
        return {"wall_2_shards_vs_1": failed(unit, target, "higher", "skipped with --quick (needs Ray)")}
    trace, drivers = _slice(ctx, WALL_MINUTES)
    walls, load = {}, {}
    for k in (1, 2):
        out = ctx.path("runs", f"metro-wall-{k}")
        ctx.log(f"  metro {WALL_MINUTES} min, {k} Ray shard(s)")
        load[k] = os.getloadavg()[0]
        s, walls[k] = _replay(trace, drivers, out, shards=k, backend="ray", num_cpus=0.5)
    ratio = walls[1] / walls[2]
    return {
        "wall_2_shards_vs_1": figure(
            ratio,
            unit,
            target,
            "higher",
            f"measured wall: 1 Ray shard {walls[1]:.1f} s / 2 Ray shards {walls[2]:.1f} s on the synthetic metro's "
            f"first {WALL_MINUTES} min ({s['requests']:,} requests, 50,000 drivers), Ray start included, on this "
            f"2-core machine shared with other work (load average {load[1]:.1f} and {load[2]:.1f} at the starts)",
        )
    }


def _nyc_trace(ctx: Context) -> Path:
    if not ctx.quick:
        return NYC_DAY
    import pyarrow.parquet as pq

    p = ctx.path("inputs", "nyc-uber-2014-04-04-first150.parquet")
    if not p.exists():
        pq.write_table(pq.read_table(NYC_DAY).slice(0, 150), p)
    return p


def nyc_day_sharded_vs_1(ctx: Context) -> dict:
    trace = _nyc_trace(ctx)
    res = {}
    ks = (1, 4) if ctx.quick else (1, 4, 8)  # --quick: the first 150 requests, 1 and 4 shards
    for k in ks:
        ctx.log(f"  NYC day, {k} shard(s)")
        res[k], _ = _replay(trace, 150, ctx.path("runs", f"nyc-shards-{k}"), shards=k, backend="inprocess")
    base = res[1]
    worst, parts = 0.0, []
    for k in ks[1:]:
        s = res[k]
        d_eta = abs(s["pickup_eta_s"]["mean"] / base["pickup_eta_s"]["mean"] - 1)
        d_srv = abs(s["served_rate"] / base["served_rate"] - 1)
        worst = max(worst, d_eta, d_srv)
        parts.append(
            f"{k} shards: ETA {s['pickup_eta_s']['mean']:.2f} s, served {s['served_rate']:.4f}, border share "
            f"{s['border_share']:.1%}, shard_balance {s['shard_balance']:.2f}"
        )
    note = (
        f"{trace.name} ({base['requests']:,} requests), --drivers 150, seed 0, in-process: 1 shard ETA "
        f"{base['pickup_eta_s']['mean']:.2f} s, served {base['served_rate']:.4f}; " + "; ".join(parts)
    )
    return {"nyc_day_sharded_vs_1": figure(worst, "rel. diff", 0.01, "lower", note)}
