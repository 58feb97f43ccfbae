"""Whole replays through ``matcher.sim.replay.run_replay``: the synthetic metro hour on
4 Ray shards (speed, tick p99, Little's law), batch vs greedy on the real NYC day,
and the peak memory of a 1M-request replay (in a child process)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from matcher.config import Policy

from .common import Context, failed, figure, metro_files, synth_files

REPO = Path(__file__).resolve().parent.parent
NYC_DAY = REPO / "data" / "nyc-uber-2014-04-04.parquet"


def _config(trace, out, *args: str, policy: Policy = Policy.BATCH, window: float | None = None):
    """RunConfig through the CLI's own path (matcher.cli.config_from_args), as `matcher replay` builds it."""
    from matcher.cli import build_parser, config_from_args

    a = build_parser().parse_args(["replay", str(trace), "--out", str(out), "--quiet", *args])
    return config_from_args(a, policy=policy, window=window)


def _replay(cfg) -> tuple[dict, float]:
    from matcher.sim.replay import run_replay

    t0 = time.perf_counter()
    summary = run_replay(cfg)
    return summary, time.perf_counter() - t0


# ---------------------------------------------------------------- Little's law


def littles_law(run_dir: Path, window_s: float) -> dict:
    """The matcher's queue seen two ways.

    L (measured): time-average number of pending (searching) requests, from
    OUT/ticks.parquet (pending at each tick; a skipped tick had none pending).
    lambda x W: arrival rate (requests / horizon) x mean time a request spends
    searching, from the event log (request or decline -> match, expire or cancel).
    Both use the same horizon, so the ratio is sum(pending) x window / sum(searching time).
    Sampling the queue at tick instants counts an interval that ends in a match at a
    tick about half a window more than its length (``corrected`` removes that).
    """
    import polars as pl

    from matcher.analysis import metrics

    ticks = pl.read_parquet(run_dir / "ticks.parquet")
    ev = metrics.ordered(metrics.read_events(run_dir)).filter(pl.col("request_id").is_not_null())
    ev = ev.filter(pl.col("kind").is_in(["request", "decline", "match", "expire", "cancel"]))
    ev = ev.sort(["request_id", "pos"])
    ts = ev["ts"].dt.epoch("ms").to_numpy() / 1000.0
    rid = ev["request_id"].to_numpy()
    kind = ev["kind"].to_numpy()
    searching = np.isin(kind, ["request", "decline"])  # state after the event
    same = np.r_[rid[1:] == rid[:-1], False]
    nxt = np.r_[ts[1:], ts[-1:]]
    dur = np.where(searching & same, nxt - ts, 0.0)
    total_search = float(dur.sum())
    n_req = int((kind == "request").sum())
    ends_in_match = int((searching & same & np.r_[kind[1:] == "match", False]).sum())
    t_first, t_last = float(ts.min()), float(ts.max())
    horizon = max(t_last - t_first, 1e-9)
    L = float(ticks["pending"].sum()) * window_s / horizon
    lam = n_req / horizon
    W = total_search / max(n_req, 1)
    ratio = L / (lam * W) if W > 0 else float("nan")
    corrected = (L - 0.5 * window_s * ends_in_match / horizon) / (lam * W) if W > 0 else float("nan")
    return {"L": L, "lambda": lam, "W": W, "ratio": ratio, "corrected": corrected, "horizon": horizon}


def matching_seconds(trace: Path, run_dir: Path) -> float:
    """Simulated seconds the matcher was at work: first request of the trace to the last tick.

    Measured here rather than taken from summary.json, whose ``sim_seconds`` may also
    count the trips still driving after the last tick (cheap to simulate: no ticks)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    first = pc.min(pq.read_table(trace, columns=["request_time"]).column("request_time")).cast("int64").as_py()
    ts = pq.read_table(run_dir / "ticks.parquet", columns=["ts"]).column("ts")
    if len(ts) == 0:
        return 0.0
    return (pc.max(ts).cast("int64").as_py() - first) / 1000.0


@contextlib.contextmanager
def _private_ray(needed: bool) -> Iterator[None]:
    """A private local Ray (2 CPUs, 127.0.0.1) for a Ray replay: run_replay's backend then uses it
    instead of joining whatever Ray another process runs on this machine; shut down after."""
    if not needed:
        yield
        return
    from matcher.dist.backend import keep_embedded_ray_on_loopback

    keep_embedded_ray_on_loopback()  # before ray is imported
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- figures


def replay_speedup_metro(ctx: Context) -> dict:
    """The synthetic metro hour on 4 shards on the Ray backend (in process with --quick, and said so).

    No fallback: if the Ray replay fails, its three figures fail with the reason."""
    trace, drivers = metro_files(ctx)
    out = ctx.path("runs", "metro")
    backend, shards = ("inprocess", 4) if ctx.quick else ("ray", 4)
    cfg = _config(trace, out, "--drivers", str(drivers), "--shards", str(shards), "--backend", backend)
    ctx.log(f"  metro replay: {shards} shards, {backend} backend ({trace.name})")
    try:
        with _private_ray(backend == "ray"):
            summary, wall = _replay(cfg)
    except Exception as e:  # noqa: BLE001 - the figures say why they are missing
        why = f"{backend} backend, {shards} shards: {type(e).__name__}: {e}"[:400]
        return {
            "replay_speedup_metro": failed("x", 30, "higher", why),
            "metro_tick_ms_p99": failed("ms", 100, "lower", why),
            "littles_law_ratio": failed("ratio", None, None, why),
        }
    mode = " (--quick: a small synthetic city, inprocess backend)" if ctx.quick else ""
    tick = summary.get("tick_ms") or {}
    desc = (
        f"{summary['requests']:,} requests, {summary['drivers']:,} drivers, {shards} shards on the {backend} "
        f"backend{mode}"
    )
    sim_s = matching_seconds(trace, out)
    speed = sim_s / wall
    own = summary["sim_seconds"] / summary["wall_seconds"] if summary.get("wall_seconds") else float("nan")
    note = (
        f"{desc}: {sim_s:.0f} simulated s (first request to last tick: the hour plus the queue's drain) in "
        f"{wall:.1f} s wall around run_replay (load, Ray start, replay, summary); the run's own summary says "
        f"{summary['sim_seconds']:.0f} sim s / {summary['wall_seconds']:.1f} wall s = {own:.1f}x; "
        f"{summary['ticks']} ticks, tick p50 {tick.get('p50', float('nan')):.1f} ms; served "
        f"{summary['served_rate']:.1%}, mean wait {(summary.get('wait_s') or {}).get('mean') or float('nan'):.0f} s, "
        f"border share {summary.get('border_share') or 0:.1%}, fallback ticks {summary.get('fallback_ticks')}"
    )
    figs = {"replay_speedup_metro": figure(speed, "x", 30, "higher", note)}
    figs["metro_tick_ms_p99"] = figure(
        tick.get("p99"),
        "ms",
        100,
        "lower",
        f"p99 of the per-tick wall time (pings, routing, shard fan-out and gather, deferred solve, offers) of the same "
        f"run; max {tick.get('max', float('nan')):.0f} ms; {desc}",
    )
    try:
        ll = littles_law(out, float(cfg.sim.window_s))
        ok = abs(ll["corrected"] - 1.0) <= 0.1
        figs["littles_law_ratio"] = figure(
            ll["corrected"],
            "ratio",
            None,
            None,
            f"target 1 +- 0.1 (no hard target). Matcher queue of the same run: L = {ll['L']:.1f} pending on average "
            f"(ticks.parquet) vs lambda x W = {ll['lambda']:.2f} req/s x {ll['W']:.2f} s searching = "
            f"{ll['lambda'] * ll['W']:.1f} (event log); raw ratio {ll['ratio']:.4f}, value corrected for sampling at "
            f"tick instants (half a {cfg.sim.window_s:g} s window per search ended by a match)",
            ok=ok,
        )
    except Exception as e:  # noqa: BLE001
        figs["littles_law_ratio"] = failed("ratio", None, None, f"{type(e).__name__}: {e}")
    return figs


def _nyc_trace(ctx: Context) -> Path:
    if not ctx.quick:
        return NYC_DAY
    import pyarrow.parquet as pq

    p = ctx.path("inputs", "nyc-uber-2014-04-04-first600.parquet")
    if not p.exists():
        pq.write_table(pq.read_table(NYC_DAY).slice(0, 600), p)
    return p


def wait_ratio_batch_vs_greedy(ctx: Context) -> dict:
    trace = _nyc_trace(ctx)
    res = {}
    for policy, window in ((Policy.BATCH, 2.0), (Policy.GREEDY, None)):
        out = ctx.path("runs", f"nyc-{policy}")
        cfg = _config(trace, out, "--drivers", "150", "--seed", "0", policy=policy, window=window)
        ctx.log(f"  NYC day replay: {policy}")
        res[policy], _ = _replay(cfg)
    b, g = res[Policy.BATCH], res[Policy.GREEDY]
    ratio = b["wait_s"]["mean"] / g["wait_s"]["mean"]

    def desc(s):
        return (
            f"served {s['served_rate']:.1%}, mean wait {s['wait_s']['mean']:.0f} s (p90 {s['wait_s']['p90']:.0f}), "
            f"mean pickup ETA {s['pickup_eta_s']['mean']:.0f} s, expired {s['expired']}, cancelled {s['cancelled']}"
        )

    note = f"{trace.name} ({b['requests']:,} requests), --drivers 150, seed 0: batch:2 {desc(b)}; greedy {desc(g)}"
    return {"wait_ratio_batch_vs_greedy": figure(ratio, "ratio", 0.8, "lower", note)}


def peak_rss_mb_replay_1m(ctx: Context) -> dict:
    unit, target = "MB", 2048
    if ctx.quick:
        return {"peak_rss_mb_replay_1m": failed(unit, target, "lower", "skipped with --quick (a 1M-request replay)")}
    import psutil

    hours = 5.1  # 55 req/s x 5.1 h ~ 1.01 M requests
    trace, drivers = synth_files(ctx, drivers=50_000, requests_per_s=55.0, hours=hours)
    out = ctx.path("runs", "replay-1m")
    cmd = [sys.executable, "-m", "bench._rss_child", str(trace), str(drivers), str(out)]
    ctx.log(f"  1M replay in a child process: {' '.join(cmd[1:])}")
    env = dict(os.environ)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    ps = psutil.Process(proc.pid)
    sampled, last = 0, 0.0
    while proc.poll() is None:
        try:
            sampled = max(sampled, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            ctx.log(
                f"  1M replay running {last - t0:5.0f} s, RSS now {ps.memory_info().rss / 2**20:.0f} MB, "
                f"peak sampled {sampled / 2**20:.0f} MB"
            )
        time.sleep(0.5)
    stdout, _ = proc.communicate()
    if proc.returncode:
        return {"peak_rss_mb_replay_1m": failed(unit, target, "lower", f"child exited {proc.returncode}")}
    res = json.loads(stdout.strip().splitlines()[-1])
    s = res["summary"]
    sim_s = matching_seconds(trace, out)
    note = (
        f"peak RSS (VmHWM) of a child process replaying {s['requests']:,} synthetic requests (55 req/s x {hours} h) with "
        f"{s['drivers']:,} drivers, inprocess, 1 shard, batch:2: {res['wall_s']:.0f} s wall for "
        f"{sim_s:.0f} simulated s of matching (speedup {sim_s / res['wall_s']:.1f}x), served "
        f"{s['served_rate']:.1%}; psutil-sampled peak {sampled / 2**20:.0f} MB"
    )
    return {"peak_rss_mb_replay_1m": figure(res["maxrss_mb"], unit, target, "lower", note)}
