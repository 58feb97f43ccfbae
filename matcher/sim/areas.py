"""A trace of several independent areas, replayed one replay per area (issue #15).

One process cannot simulate a planet's day, but nothing connects two cities:
:func:`matcher.core.areas.detect` cuts the trace into areas that no trip, driver
or candidate edge crosses. :func:`split` does that for a loaded run; a trace
with one area (or ``--areas one``) goes on exactly as before, in one world.
Otherwise :func:`run_split` runs one complete replay (world, coordinator and
its shards, in process inside the area's process) per area:

* on Ray (``--backend ray``): one Ray task per area, asking for
  ``--area-cpus`` CPUs, the biggest areas first; Ray places them on whatever
  nodes have room, and the autoscaler adds nodes for pending tasks. The tasks
  write their area's files themselves, so on a multi-node cluster ``--out``
  must be a folder every node sees at the same path (NFS, EFS, ...);
* otherwise one area after another in this process.

Memory is bounded per area: an area's replay holds only its requests and
drivers (the driver process holds the trace's arrays once, to cut it).

An area is replayed exactly as its sub-trace alone would be (its own time
origin, request and driver numbering, seed): the inputs of area A are built
from the trace's arrays as loading a file with only A's requests and drivers
would build them, so A's events equal those of ``matcher replay`` on that
sub-trace (tested), except that ``seq`` starts at ``index(A) * 2**40`` so that
``seq`` stays unique in the whole log. Drivers that start far from every
request of the trace (an area of their own, without requests) could never be
offered a ride and never move; they join the nearest area with requests.

Known limit: the world keys its random draws by a request's and a driver's
position in its own arrays (``matcher.sim.rand``), which for an area are its
positions within the area, as in its sub-trace alone. So the i-th request (and
the k-th driver) of two areas draw the same numbers (accept, response time,
cancel, GPS dropouts): each area is a faithful replay, but areas are not
statistically independent of each other. Keying the draws by a hash of the ids
instead would fix it, and change every run's events.

Layout (docs/run-output.md): ``OUT/events/area=NAME/part-*.parquet`` (one hive
partition per area), ``OUT/ticks.parquet`` (and every other per-tick table an
area writes, such as ``shards.parquet``) merged with an ``area`` column,
``OUT/summary.json`` for the whole run with an ``areas`` table,
``OUT/areas/NAME/`` the area's own ``run.json``, ``summary.json`` and tables.
Checkpoints are per area (``OUT/areas/NAME/checkpoint.pkl``); the plan
(``OUT/areas/plan.pkl``) says a run is split, and ``--resume`` re-runs only
the areas that had not finished, each from its last checkpoint.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matcher.analysis import metrics
from matcher.config import Policy, RunConfig
from matcher.core import geo
from matcher.core.areas import Areas, detect
from matcher.errors import MatcherError
from matcher.io import trace
from matcher.io.atomic import atomic_path, move_dir
from matcher.sim import replay, scenario
from matcher.sim.world import Fleet, Requests

AREAS_DIR = "areas"
PLAN = "plan.pkl"
SEQ_STRIDE = 1 << 40  # seq of area i starts at i * SEQ_STRIDE (a trillion events per area)
# the per-area figures of summary.json's "areas" table (copied from each area's summary)
AREA_FIGURES = (
    "requests",
    "completed",
    "cancelled",
    "expired",
    "served_rate",
    "drivers",
    "utilization",
    "matches",
    "declines",
    "ticks",
    "sim_seconds",
    "wall_seconds",
    "speedup",
)


@dataclass(frozen=True)
class Split:
    """The areas of a run that replays them separately (only areas with requests)."""

    names: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    request_area: np.ndarray  # area index of each request
    driver_area: np.ndarray  # area index of each driver
    idle_drivers: np.ndarray  # per area: drivers that joined it from an area without requests
    t0_ms: np.ndarray  # per area: its first request time (its time origin), epoch ms

    def __len__(self) -> int:
        return len(self.names)


# ----------------------------------------------------------------------------- planning
def split(cfg: RunConfig, inputs: replay.Inputs) -> Split | None:
    """The areas of ``inputs``, or None when the run is one world (one area with requests, or ``--areas one``)."""
    acfg = getattr(cfg, "areas", None)
    if acfg is None or acfg.mode == "one":
        return None
    if acfg.mode != "auto":
        raise MatcherError(f"unknown --areas mode {acfg.mode!r} (auto or one)")
    r, f = inputs.reqs, inputs.fleet
    found = detect(r.plat, r.plng, r.dlat, r.dlng, f.lat, f.lng, cfg.match.radius_m + acfg.margin_m, acfg.precision)
    return _with_requests(found, r, f, inputs.t0_ms)


def _with_requests(found: Areas, r: Requests, f: Fleet, t0_ms: int) -> Split | None:
    n_req = np.bincount(found.request_area, minlength=len(found))
    busy = np.flatnonzero(n_req > 0)
    if len(busy) <= 1:
        return None
    new_index = np.full(len(found), -1, np.int64)
    new_index[busy] = np.arange(len(busy))
    request_area = new_index[found.request_area]
    driver_area = new_index[found.driver_area]
    idle = np.flatnonzero(driver_area < 0)
    idle_count = np.zeros(len(busy), np.int64)
    if len(idle):  # never offered a ride, never moving: they join the nearest area with requests
        xyz = geo.to_unit_xyz(r.plat, r.plng).reshape(-1, 3)
        center = np.zeros((len(busy), 3))
        np.add.at(center, request_area, xyz)
        center /= np.maximum(np.linalg.norm(center, axis=1), 1e-300)[:, None]
        dxyz = geo.to_unit_xyz(f.lat[idle], f.lng[idle]).reshape(-1, 3)
        driver_area[idle] = np.argmax(dxyz @ center.T, axis=1)
        idle_count = np.bincount(driver_area[idle], minlength=len(busy))
    first = np.full(len(busy), len(r.t), np.int64)
    np.minimum.at(first, request_area, np.arange(len(r.t)))  # requests are in time order
    return Split(
        names=tuple(found.names[i] for i in busy),
        cells=tuple(found.cells[i] for i in busy),
        request_area=request_area.astype(np.int32),
        driver_area=driver_area.astype(np.int32),
        idle_drivers=idle_count,
        t0_ms=t0_ms + np.round(r.t[first] * 1000.0).astype(np.int64),
    )


def area_inputs(inputs: replay.Inputs, sp: Split, a: int) -> replay.Inputs:
    """The inputs of area ``a``, exactly as loading a trace and driver file of only its rows would give them."""
    ri = np.flatnonzero(sp.request_area == a)  # ascending: the trace's (time, row) order is kept
    di = np.flatnonzero(sp.driver_area == a)
    r, f = inputs.reqs, inputs.fleet
    ms = inputs.t0_ms + np.round(r.t[ri] * 1000.0).astype(np.int64)  # exact: t = (ms - t0) / 1000
    t0 = int(ms[0])
    reqs = Requests(
        t=(ms - t0) / 1000.0,
        plat=r.plat[ri],
        plng=r.plng[ri],
        dlat=r.dlat[ri],
        dlng=r.dlng[ri],
        ride_type=r.ride_type[ri],
        trip_s=r.trip_s[ri],
    )

    def shift(s: np.ndarray) -> np.ndarray:  # seconds from the trace's origin to seconds from the area's
        fin = np.isfinite(s)
        out = s.copy()
        ms_s = inputs.t0_ms + np.round(s[fin] * 1000.0).astype(np.int64)
        out[fin] = (ms_s.astype(np.float64) - t0) / 1000.0
        return out

    fleet = Fleet(
        lat=f.lat[di],
        lng=f.lng[di],
        vehicle=f.vehicle[di],
        rating=f.rating[di],
        online_from=shift(f.online_from[di]),
        online_until=shift(f.online_until[di]),
    )
    take = pa.array(ri)
    return replay.Inputs(
        reqs=reqs,
        request_ids=inputs.request_ids.take(take),
        t0_ms=t0,
        fleet=fleet,
        driver_ids=inputs.driver_ids.take(pa.array(di)),
        quarantine=[],
        seq_base=a * SEQ_STRIDE,
    )


def _area_cfg(cfg: RunConfig, out: Path, name: str) -> RunConfig:
    """An area's replay: its own folder, shards in its own process, one world."""
    return replace(
        cfg,
        out=str(out / AREAS_DIR / name),
        shard=replace(cfg.shard, backend="inprocess", address=None),
        quiet=True,
        areas=replace(cfg.areas, mode="one"),
    )


# ----------------------------------------------------------------------------- running
def is_split_run(out: Path) -> bool:
    return (Path(out) / AREAS_DIR / PLAN).exists()


def run_split(cfg: RunConfig, inputs: replay.Inputs, sp: Split, progress=None) -> dict:
    """Replay every area of ``sp`` (module docstring) and write the run folder; returns the summary."""
    out = Path(cfg.out).resolve()
    plan = {"cfg": cfg, "names": sp.names, "wall_before": 0.0, "done": []}
    _write_plan(out, plan)
    return _execute(out, plan, inputs, sp, resumed=False, progress=progress)


def resume_split(out_dir, progress=None, quiet: bool | None = None) -> dict:
    """Continue a killed split run: finished areas are kept, the others resume from their checkpoints."""
    out = Path(out_dir).resolve()
    try:
        with open(out / AREAS_DIR / PLAN, "rb") as f:
            plan = pickle.load(f)
    except Exception as e:
        raise MatcherError(f"{out / AREAS_DIR / PLAN}: unreadable plan ({type(e).__name__})") from e
    cfg: RunConfig = plan["cfg"]
    if quiet is not None:
        plan["cfg"] = cfg = replace(cfg, quiet=quiet)
    inputs = replay._load_inputs(cfg)
    sp = split(cfg, inputs)
    if sp is None or sp.names != tuple(plan["names"]):
        raise MatcherError(f"{out}: the trace or the options no longer give the areas of the run that is resumed")
    return _execute(out, plan, inputs, sp, resumed=True, progress=progress)


def _write_plan(out: Path, plan: dict) -> None:
    with atomic_path(out / AREAS_DIR / PLAN) as tmp, open(tmp, "wb") as f:
        pickle.dump(plan, f, protocol=pickle.HIGHEST_PROTOCOL)


def run_area(cfg: RunConfig, inputs: replay.Inputs, progress=None) -> dict:
    """Replay one area into ``cfg.out`` and return its summary: from its checkpoint if it has
    one, from scratch otherwise, or nothing to do if it finished. Safe to run again after a
    crash at any point (a Ray task whose worker died is retried through this)."""
    out = Path(cfg.out)
    cpu0 = time.process_time()
    if (out / "summary.json").exists():
        (out / replay.CHECKPOINT).unlink(missing_ok=True)
        return _read_json(out)
    ck_path = out / replay.CHECKPOINT
    if ck_path.exists():
        ck = replay.read_checkpoint(ck_path)
        replay.discard_after_checkpoint(out, ck)
        summary = replay._run(ck["cfg"], inputs, resume=ck, progress=progress, backend_factory=replay.make_backend)
    else:
        if out.exists():
            shutil.rmtree(out)  # an area that died before its first checkpoint starts again
        out.mkdir(parents=True)
        summary = replay._run(cfg, inputs, resume=None, progress=progress, backend_factory=replay.make_backend)
    return {**summary, "cpu_seconds": time.process_time() - cpu0}  # this session's CPU time of the area


def _read_json(out: Path) -> dict:
    with open(out / "summary.json") as f:
        return json.load(f)


def _execute(out: Path, plan: dict, inputs: replay.Inputs, sp: Split, resumed: bool, progress=None) -> dict:
    """Run the unfinished areas (biggest first), then merge. ``progress`` (in process only) gets
    every area's ticks, like run_replay's; by default each area shows its own bar."""
    cfg: RunConfig = plan["cfg"]
    session0, wall_before = time.perf_counter(), float(plan["wall_before"])
    n_quarantined = sum(q.num_rows for q in inputs.quarantine)
    todo = [a for a in range(len(sp)) if sp.names[a] not in set(plan["done"])]
    work = np.bincount(sp.request_area, minlength=len(sp)) + np.bincount(sp.driver_area, minlength=len(sp))
    todo.sort(key=lambda a: (-int(work[a]), a))  # biggest first: the last ones to start are short
    bar = None if cfg.quiet else _AreaBar(len(sp), len(sp) - len(todo))

    cpu = plan.setdefault("cpu", {})

    def finished(a: int, summary: dict) -> None:
        cpu[sp.names[a]] = summary.get("cpu_seconds")
        _collect(out, sp.names[a])
        plan["done"] = sorted({*plan["done"], sp.names[a]})
        plan["wall_before"] = wall_before + time.perf_counter() - session0
        _write_plan(out, plan)
        if bar is not None:
            bar.step(sp.names[a])

    if cfg.shard.backend == "ray" and todo:
        import os

        from matcher.dist.backend import keep_embedded_ray_on_loopback
        from matcher.dist.runmode import resolve_target

        target = resolve_target(cfg.shard.address, os.environ)
        if target.loopback:
            keep_embedded_ray_on_loopback()  # before ray is imported
        from matcher.dist.ray_backend import run_tasks

        jobs: list[tuple[Any, ...]] = [(_area_cfg(cfg, out, sp.names[a]), area_inputs(inputs, sp, a)) for a in todo]
        del inputs  # the areas' inputs are all the tasks need
        labels = [f"area {sp.names[a]}" for a in todo]
        for j, result in run_tasks(run_area, jobs, labels, cfg.areas.num_cpus, target):
            jobs[j] = ()  # free the area's inputs on this side
            if not (out / AREAS_DIR / sp.names[todo[j]] / "summary.json").exists():
                raise MatcherError(
                    f"area {sp.names[todo[j]]} finished on another node, but its files are not in {out}: on a "
                    "cluster, --out must be a folder every node sees at the same path (shared storage)"
                )
            finished(todo[j], result)
    else:
        for a in todo:
            ain = area_inputs(inputs, sp, a)
            bar_a = progress if progress is not None or cfg.quiet else replay._Bar(len(ain.reqs), sp.names[a])
            result = run_area(_area_cfg(cfg, out, sp.names[a]), ain, progress=bar_a)
            del ain
            finished(a, result)
    if bar is not None:
        bar.close()
    return _finish(out, plan, sp, resumed, n_quarantined, lambda: wall_before + time.perf_counter() - session0)


class _AreaBar:
    def __init__(self, total: int, done: int):
        from tqdm import tqdm

        self.t = tqdm(total=total, initial=done, desc="areas", unit="area", leave=False)

    def step(self, name: str) -> None:
        self.t.set_postfix_str(name)
        self.t.update(1)

    def close(self) -> None:
        self.t.close()


# ----------------------------------------------------------------------------- merging
def _collect(out: Path, name: str) -> None:
    """Move a finished area's logs into the run's partitioned datasets (idempotent)."""
    aout = out / AREAS_DIR / name
    for folder in ("events", "locations"):
        src, dst = aout / folder, out / folder / f"area={name}"
        if src.exists():
            if dst.exists():
                shutil.rmtree(dst)  # a collect that died half-way never happens (rename), but be safe
            dst.parent.mkdir(parents=True, exist_ok=True)
            move_dir(src, dst)


def _merge_tables(out: Path, names: tuple[str, ...]) -> list[str]:
    """Every per-area Parquet table (ticks.parquet, ...) merged into OUT/ with an ``area`` column."""
    files = sorted({p.name for n in names for p in (out / AREAS_DIR / n).glob("*.parquet")})
    for fname in files:
        parts = []
        for n in names:
            path = out / AREAS_DIR / n / fname
            if path.exists():
                t = pq.read_table(path)
                parts.append(t.append_column("area", pa.array([n] * t.num_rows, pa.string())))
        table = pa.concat_tables(parts, promote_options="default")
        trace.write_table(table, out / fname)
    return files


def _count_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet")) if folder.exists() else 0


def _finish(out: Path, plan: dict, sp: Split, resumed: bool, n_quarantined: int, wall) -> dict:
    """Merge the areas' tables, write run.json and summary.json (whole run + ``areas`` table)."""
    cfg: RunConfig = plan["cfg"]
    _merge_tables(out, sp.names)
    metas = [metrics.read_meta(out / AREAS_DIR / n) for n in sp.names]
    sums = [_read_json(out / AREAS_DIR / n) for n in sp.names]
    refused: dict[str, int] = {}
    for m in metas:
        for k, v in (m.get("refused_pings") or {}).items():
            refused[k] = refused.get(k, 0) + int(v)
    rows = []
    for a, (name, s) in enumerate(zip(sp.names, sums)):
        events = _count_rows(out / "events" / f"area={name}")
        row: dict[str, Any] = {"area": name, "cells": list(sp.cells[a])}
        row.update({k: s.get(k) for k in AREA_FIGURES})
        row["wait_s_mean"] = (s.get("wait_s") or {}).get("mean")
        row["wait_s_p90"] = (s.get("wait_s") or {}).get("p90")
        row["tick_ms_p99"] = (s.get("tick_ms") or {}).get("p99")
        row["idle_drivers"] = int(sp.idle_drivers[a])
        row["cpu_seconds"] = (plan.get("cpu") or {}).get(name)  # the area's CPU time (its last session)
        row["events"] = events
        w = s.get("wall_seconds")
        row["events_per_s"] = events / w if w else None
        rows.append(row)
    wall_areas = sum(float(s.get("wall_seconds") or 0.0) for s in sums)
    meta = {
        "policy": Policy(cfg.sim.policy).value,
        "window_s": cfg.sim.window_s if cfg.sim.policy == Policy.BATCH else None,
        "shards": cfg.shard.shards,
        "backend": cfg.shard.backend,
        "seed": cfg.sim.seed,
        "drivers": int(sum(int(m.get("drivers", 0)) for m in metas)),
        "quarantined": int(n_quarantined),
        "label": cfg.label,
        # from the first request of the trace to the end of the last area to end
        "sim_seconds": max(
            (int(sp.t0_ms[a]) - int(sp.t0_ms.min())) / 1000.0 + float(m.get("sim_seconds") or 0.0)
            for a, m in enumerate(metas)
        ),
        "wall_seconds": wall(),
        "areas": len(sp),
        "area_backend": "ray" if cfg.shard.backend == "ray" else "inprocess",
        "area_wall_seconds_sum": wall_areas,
        "handoffs": int(sum(int(m.get("handoffs", 0)) for m in metas)),
        "shard_restarts": int(sum(int(m.get("shard_restarts", 0)) for m in metas)),
        "refused_pings": refused,
        "resumed": resumed or any(bool(m.get("resumed")) for m in metas),
        "failed_ticks": int(sum(int(m.get("failed_ticks", 0)) for m in metas)),
        "trace": str(cfg.trace),
        "config": replay._jsonable(asdict(cfg)),
        **replay._jsonable(scenario.describe(cfg)),  # world, settings (non-default) and the whole scenario
    }
    metrics.write_json_atomic(out / "run.json", meta)
    summary = metrics.summarize(out, meta)
    summary["wall_seconds"] = meta["wall_seconds"] = wall()  # the summary's own time included
    summary["speedup"] = summary["sim_seconds"] / summary["wall_seconds"] if summary["wall_seconds"] else None
    summary["areas"] = rows
    summary["area_wall_seconds_sum"] = wall_areas
    summary["area_parallelism"] = wall_areas / summary["wall_seconds"] if summary["wall_seconds"] else None
    metrics.write_json_atomic(out / "run.json", meta)
    metrics.write_json_atomic(out / "summary.json", summary)
    (out / AREAS_DIR / PLAN).unlink(missing_ok=True)
    return metrics.clean_json(summary)
