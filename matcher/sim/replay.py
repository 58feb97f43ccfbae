"""The replay loop: one code path for local runs, Ray runs and the Ray job.

Each tick (every ``--window`` seconds for batch, every second for greedy):
the world advances to the tick time in event order, the drivers that have
something to report send their pings, the pending requests go to the shards
through the coordinator, and the offers come back to the world. Ticks with
nothing pending are skipped. The run drains: it goes on past the last request
until every request has ended.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from matcher.analysis import metrics
from matcher.config import RIDE_TYPES, Policy, RunConfig
from matcher.core.candidates import RequestBatch
from matcher.core.states import DriverStatus
from matcher.dist.backend import BackendFactory, make_backend
from matcher.dist.coordinator import Coordinator, make_router
from matcher.errors import MatcherError, RunStopped
from matcher.io import fingerprint, runfolder, trace
from matcher.io.atomic import atomic_path, remove_leftovers
from matcher.io.eventlog import EventLog, LocationLog, StagedTable
from matcher.io.schemas import SHARDS
from matcher.sim import fleet as fleet_mod
from matcher.sim import interrupt, scenario
from matcher.sim.cells import ReplayCells
from matcher.sim.deferred import Deferred
from matcher.sim.world import Fleet, Requests, World

_log = logging.getLogger("matcher")

TICKS_SCHEMA = pa.schema(
    [
        ("tick", pa.int64()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("wall_ms", pa.float64()),
        ("pending", pa.int32()),
        ("matched", pa.int32()),
        ("deferred", pa.int32()),
        ("fallbacks", pa.int32()),
        ("solve_ms", pa.float64()),
        ("coordinator_ms", pa.float64()),
        ("critical_ms", pa.float64()),
        ("shard_cpu_ms", pa.float64()),
        ("round2", pa.int32()),
    ]
)


def _requests(table: pa.Table) -> tuple[Requests, pa.Array, int]:
    ms = table.column("request_time").cast(pa.int64()).to_numpy()
    t0 = int(ms[0])

    def f(col):
        return table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)

    rt = pa.compute.index_in(table.column("ride_type"), pa.array(RIDE_TYPES)).to_numpy(zero_copy_only=False)
    reqs = Requests(
        t=(ms - t0) / 1000.0,
        plat=f("pickup_lat"),
        plng=f("pickup_lng"),
        dlat=np.nan_to_num(f("dropoff_lat"), nan=np.nan),
        dlng=f("dropoff_lng"),
        ride_type=np.asarray(rt, np.int8),
        trip_s=f("trip_duration_s"),
    )
    return reqs, table.column("request_id").combine_chunks(), t0


CHECKPOINT = "checkpoint.pkl"


@dataclass
class LoopState:
    """Everything the loop carries from tick to tick besides the world and the coordinator."""

    k: int = -1
    last_rec: float = -np.inf
    last_sent: np.ndarray | None = None
    ticks: dict = field(default_factory=lambda: {name: [] for name in TICKS_SCHEMA.names})
    wall_before: float = 0.0  # wall seconds of the sessions before a resume
    failed_ticks: int = 0
    next_checkpoint: float = 0.0
    cells: ReplayCells | None = None  # OUT/cells.parquet (surge per cell and tick)
    deferred: Deferred | None = None  # jobs of past ticks (the cells), run while shards solve; not pickled
    # OUT/ticks.parquet and OUT/shards.parquet, staged at every checkpoint: `ticks` and the
    # coordinator's per-shard rows hold only the rows since the last one (a checkpoint's
    # cost does not grow with the run; checkpoints of older releases hold every row)
    tick_log: StagedTable | None = None
    shard_log: StagedTable | None = None
    t0_ms: int = 0
    last_ts: float = 0.0  # simulated seconds of the latest tick row staged
    inputs_fp: dict | None = None  # what the run was made from (matcher.io.fingerprint), checked on resume
    options_fp: dict | None = None

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["deferred"] = None  # drained before every checkpoint; its jobs are closures
        return d


def run_replay(
    cfg: RunConfig, progress=None, overwrite: bool = False, backend_factory: BackendFactory | None = None
) -> dict:
    """Replay ``cfg.trace`` and write the run folder ``cfg.out``; returns the summary.

    The folder is held for the run's life and must be new or empty, or a run to
    replace with ``overwrite`` (:mod:`matcher.io.runfolder`).

    ``backend_factory(shard_cfg, match_cfg, run_name)`` makes the shard backend (default:
    ``make_backend``, which reads ``cfg.shard.backend`` and ``cfg.quiet``); tests pass their own."""
    sim = cfg.sim
    if sim.policy not in tuple(Policy):
        raise MatcherError(f"unknown policy {sim.policy!r} (expected {' or '.join(Policy)})")
    out = Path(cfg.out)
    with runfolder.claim(out, kind="run", overwrite=overwrite):
        inputs = _load_inputs(cfg)
        _announce(out)
        fp = fingerprint.inputs(cfg.trace, cfg.drivers), fingerprint.options(cfg)
        trace.write_quarantine(inputs.quarantine, out / "quarantine.parquet")
        from matcher.sim import areas  # a trace of several independent areas replays them separately

        split = areas.split(cfg, inputs)
        if split is not None:
            return areas.run_split(cfg, inputs, split, progress=progress, fingerprints=fp)
        return _run(cfg, inputs, resume=None, progress=progress, backend_factory=backend_factory, fingerprints=fp)


def _announce(out: Path) -> None:
    """Every run says where its output goes (a job's log included), once its inputs are read."""
    print(f"matcher: output folder {out.resolve()}", file=sys.stderr, flush=True)


# Modules of the flat 0.1 layout (matcher.world, ...) and where they live now: a
# checkpoint written before the move names its classes by the old paths.
_MOVED_MODULES = {
    f"matcher.{name}": f"matcher.{pkg}.{name}"
    for pkg, names in {
        "core": ("geo", "states", "driver_table", "candidates", "cost", "assignment", "shard"),
        "dist": ("sharding", "coordinator", "backend", "ray_backend"),
        "sim": ("world", "fleet", "rand", "synth", "replay", "compare"),
        "io": ("schemas", "atomic", "trace", "eventlog", "importers"),
        "analysis": ("metrics", "audit", "summary_text", "report"),
    }.items()
    for name in names
}


class _CheckpointUnpickler(pickle.Unpickler):
    """Loads checkpoints of either layout: old module paths are mapped to the new ones."""

    def find_class(self, module: str, name: str):
        return super().find_class(_MOVED_MODULES.get(module, module), name)


def resume_replay(
    out_dir: str, progress=None, quiet: bool | None = None, check=None, backend_factory: BackendFactory | None = None
) -> dict:
    """Continue an interrupted run from its last complete checkpoint (``matcher replay --resume OUT``).

    Events written after the checkpoint are discarded and produced again, so the
    finished log equals an uninterrupted run's and holds no duplicate. The run's
    trace, driver file and options must be those it started with (checked against
    the fingerprints in the checkpoint; a difference is refused with one line
    naming it, before anything in OUT changes). ``check(cfg)``, when given, may
    refuse the run's config too (the CLI checks options given again).
    """
    out = Path(out_dir)
    from matcher.sim import areas

    if areas.is_split_run(out):
        with runfolder.claim(out, resume=True):
            return areas.resume_split(out, progress=progress, quiet=quiet, check=check)
    path = out / CHECKPOINT
    if not path.exists():
        if (out / "summary.json").exists():
            raise MatcherError(f"{out}: the run is already complete (summary.json exists)")
        raise MatcherError(f"{out}: no checkpoint to resume from ({CHECKPOINT} missing)")
    with runfolder.claim(out, resume=True):
        ck = read_checkpoint(path)
        cfg: RunConfig = ck["cfg"]
        if check is not None:
            check(cfg)
        check_resumable(out, ck["loop"].inputs_fp, ck["loop"].options_fp, cfg)
        if quiet is not None:
            cfg = replace(cfg, quiet=quiet)
        discard_after_checkpoint(out, ck)
        inputs = _load_inputs(cfg)
        _announce(out)
        return _run(cfg, inputs, resume=ck, progress=progress, backend_factory=backend_factory)


def check_resumable(out: Path, inputs_fp: dict | None, options_fp: dict | None, cfg: RunConfig) -> None:
    """Refuse (one line naming what changed) a resume whose inputs or options differ from the run's start."""
    if inputs_fp is None:  # a checkpoint from before fingerprints: nothing to compare with
        _log.warning("%s: this checkpoint predates input fingerprints; the inputs are not checked", out)
        return
    try:
        now = fingerprint.inputs(cfg.trace, cfg.drivers)
    except MatcherError as e:
        raise MatcherError(f"{out}: cannot resume: {e}") from None
    what = fingerprint.changes(inputs_fp, now, options_fp, fingerprint.options(cfg))
    if what:
        raise MatcherError(f"{out}: cannot resume: {what} since the run started; start it again with --overwrite")


def read_checkpoint(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _CheckpointUnpickler(f).load()
    except Exception as e:
        raise MatcherError(f"{path}: unreadable checkpoint ({type(e).__name__})") from e


def discard_after_checkpoint(out: Path, ck: dict) -> None:
    """Remove what a run folder got after its checkpoint ``ck``: a resume writes it again."""
    for folder, first in (("events", ck["events_part"]), ("locations", ck.get("locations_part", 0))):
        for f in sorted((out / folder).glob("part-*.parquet")) if (out / folder).exists() else []:
            if int(f.stem.split("-")[1]) >= first:
                f.unlink()  # written after the checkpoint: they will be written again
    remove_leftovers(out)  # a part file that was being written when the run died


@dataclass
class Inputs:
    """A run's trace and fleet, read and validated."""

    reqs: Requests
    request_ids: pa.Array
    t0_ms: int
    fleet: Fleet
    driver_ids: pa.Array
    quarantine: list[pa.Table]  # rows left out (requests, then drivers)
    seq_base: int = 0  # seq of the first event (an area of a split run starts at its own base)


LONG_TRACE_S = 2 * 86_400.0  # a trace longer than this gets a warning with its span


def _load_inputs(cfg: RunConfig) -> Inputs:
    table, quarantine = trace.read_requests(cfg.trace)
    reqs, request_ids, t0_ms = _requests(table)
    span = float(reqs.t[-1] - reqs.t[0]) if len(reqs) else 0.0
    if span > LONG_TRACE_S:
        _log.warning(
            "%s spans %.1f days of requests (%s); the replay simulates all of it",
            cfg.trace,
            span / 86_400.0,
            _span_text(t0_ms, span),
        )
    fleet, driver_ids, drv_quarantine = fleet_mod.load(cfg.drivers, table, t0_ms, cfg.sim.seed)
    q = [quarantine] + ([drv_quarantine] if drv_quarantine is not None else [])
    return Inputs(reqs, request_ids, t0_ms, fleet, driver_ids, q)


def _span_text(t0_ms: int, span_s: float) -> str:
    from datetime import UTC, datetime

    a = datetime.fromtimestamp(t0_ms / 1000, tz=UTC)
    b = datetime.fromtimestamp(t0_ms / 1000 + span_s, tz=UTC)
    return f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} UTC"


def _run(
    cfg: RunConfig,
    inputs: Inputs,
    resume: dict | None,
    progress,
    backend_factory: BackendFactory | None = None,
    fingerprints=(None, None),
) -> dict:
    wall0 = time.perf_counter()
    sim, out = cfg.sim, Path(cfg.out)
    reqs, request_ids, t0_ms = inputs.reqs, inputs.request_ids, inputs.t0_ms
    fleet, driver_ids = inputs.fleet, inputs.driver_ids
    n_quarantined = sum(q.num_rows for q in inputs.quarantine)
    run_name = f"matcher-{out.name}-{int(time.time())}"
    if backend_factory is None:
        backend = make_backend(cfg.shard, cfg.match, run_name, quiet=cfg.quiet)
    else:
        backend = backend_factory(cfg.shard, cfg.match, run_name)
    interrupt.reclaim()  # Ray's init takes SIGTERM over; the stop must stay resumable
    try:
        if resume is None:
            log = EventLog(out / "events", request_ids, driver_ids, t0_ms, first_seq=inputs.seq_base)
            locations = LocationLog(out / "locations", driver_ids, t0_ms) if cfg.record_locations else None
            world = World(reqs, fleet, sim, cfg.match, log)
            coord = Coordinator(backend, make_router(cfg.shard, cfg.match), len(fleet), cfg.match, cfg.shard)
            st = LoopState(last_sent=np.full(len(fleet), -np.inf), next_checkpoint=cfg.checkpoint_every_s)
            st.cells = ReplayCells(out, t0_ms)
            st.inputs_fp, st.options_fp = fingerprints
            st.tick_log, st.shard_log = _row_logs(out)
        else:
            log = EventLog(
                out / "events",
                request_ids,
                driver_ids,
                t0_ms,
                first_seq=resume["events_seq"],
                first_part=resume["events_part"],
            )
            log.counts = resume["events_counts"]
            locations = (
                LocationLog(out / "locations", driver_ids, t0_ms, first_part=resume["locations_part"])
                if cfg.record_locations
                else None
            )
            world, coord, st = resume["world"], resume["coord"], resume["loop"]
            world.log = log
            coord.attach(backend)  # fresh shards: rebuilt from the coordinator's latest reports
            if getattr(st, "cells", None) is not None:
                st.cells.resumed()
            for name in TICKS_SCHEMA.names:  # a checkpoint of an older release: its ticks lack the newer columns
                st.ticks.setdefault(name, [None] * len(st.ticks["tick"]))
            if st.tick_log is None or st.shard_log is None:
                st.tick_log, st.shard_log = _row_logs(out)  # an older release: every row is in the checkpoint
            else:
                st.tick_log.drop_after_checkpoint()
                st.shard_log.drop_after_checkpoint()
        st.t0_ms = t0_ms
        log.locate = coord.route_requests  # `shard` of the request and expire events
        base_wall = st.wall_before
        st.deferred = Deferred()
        coord.idle = st.deferred.run_one  # the surge cells of past ticks, while the shards solve
        _loop(cfg, world, coord, locations, progress, st, lambda: base_wall + time.perf_counter() - wall0)
        st.deferred.drain()
        coord.finish()  # the shard inputs sent without waiting: done, refusals counted
        closing = _close_meanwhile(backend)
    except BaseException:
        backend.close()
        interrupt.reclaim()
        raise
    try:  # the shards are no longer needed: their backend stops (Ray: about 0.6 s) while the logs are finished
        log.flush()
        if locations is not None:
            locations.flush()
        if getattr(st, "cells", None) is not None:
            st.cells.finish()
        _stage_rows(st, coord)
        assert st.tick_log is not None and st.shard_log is not None
        st.tick_log.finish()
        st.shard_log.finish()
    finally:
        closing()
        interrupt.reclaim()
    meta = {
        "policy": Policy(sim.policy).value,
        "window_s": sim.window_s if sim.policy == Policy.BATCH else None,
        "shards": cfg.shard.shards,
        "backend": cfg.shard.backend,
        "seed": sim.seed,
        "drivers": len(fleet),
        "quarantined": n_quarantined,
        "label": cfg.label,
        "sim_seconds": max(world.clock, st.last_ts),  # drain included
        "wall_seconds": base_wall + time.perf_counter() - wall0,
        "handoffs": coord.handoffs,
        "shard_restarts": coord.restarts,
        "lost_shards": coord.lost,
        "refused_pings": dict(coord.refusals),
        "resumed": resume is not None,
        "failed_ticks": st.failed_ticks,
        "trace": str(cfg.trace),
        "config": _jsonable(asdict(cfg)),
        **_jsonable(scenario.describe(cfg)),  # world, settings (non-default) and the whole scenario
    }
    metrics.write_json_atomic(out / "run.json", meta)
    del world, coord, log, inputs, reqs  # the summary reads the log back from disk: free the run's state first
    summary = metrics.write_summary(out, meta)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return summary


def _close_meanwhile(backend) -> Callable[[], None]:
    """Close ``backend`` on a thread of its own; the returned call waits for it (and raises what
    ``close`` raised). The run is not over until it returns: Ray is stopped by then."""
    failed: list[BaseException] = []

    def close() -> None:
        try:
            backend.close()
        except BaseException as e:  # noqa: BLE001 - raised again by the waiter, on the main thread
            failed.append(e)

    t = threading.Thread(target=close, name="matcher-backend-close", daemon=True)
    t.start()

    def wait() -> None:
        t.join()
        if failed:
            raise failed[0]

    return wait


def _checkpoint(cfg: RunConfig, world: World, coord: Coordinator, locations, st: LoopState, wall_so_far: float) -> None:
    """Flush the logs to whole part files, then save the state that produces the rest (atomically)."""
    out = Path(cfg.out)
    log = world.log
    log.flush()
    if locations is not None:
        locations.flush()
    st.wall_before = wall_so_far
    coord.finish()
    if st.deferred is not None:
        st.deferred.drain()  # the cells of every tick before this one are in
    if st.cells is not None:
        st.cells.flush()
    _stage_rows(st, coord)
    state = {
        "cfg": cfg,
        "world": world,
        "coord": coord,
        "loop": st,
        "events_seq": log.seq,
        "events_part": log.out.part,
        "events_counts": log.counts.copy(),
        "locations_part": locations.out.part if locations is not None else 0,
    }
    with atomic_path(out / CHECKPOINT) as tmp, open(tmp, "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)


def _row_logs(out: Path) -> tuple[StagedTable, StagedTable]:
    """The staged OUT/ticks.parquet and OUT/shards.parquet of a run (nothing staged yet)."""
    return (
        StagedTable(out / "ticks.parquet", TICKS_SCHEMA, first_part=0),
        StagedTable(out / "shards.parquet", SHARDS, first_part=0),
    )


def _stage_rows(st: LoopState, coord: Coordinator) -> None:
    """Write the tick rows and per-shard rows gathered since the last call as part files, and
    forget them. Only once every shard output is in (after ``coord.finish()``)."""
    assert st.tick_log is not None and st.shard_log is not None
    ticks = st.ticks
    if ticks["tick"]:
        st.last_ts = float(ticks["ts"][-1])
        rows = dict(ticks)
        rows["ts"] = pa.array(st.t0_ms + np.round(np.asarray(ticks["ts"], np.float64) * 1000.0).astype(np.int64))
        st.tick_log.add(rows)
        st.ticks = {name: [] for name in TICKS_SCHEMA.names}
    st.tick_log.flush()
    st.shard_log.add(coord.stats.take())
    st.shard_log.flush()


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


def _loop(cfg: RunConfig, world: World, coord: Coordinator, locations, progress, st: LoopState, wall) -> None:
    """Ticks until every request has ended. ``wall()`` gives the run's wall seconds so far."""
    bar = _progress(cfg, world) if progress is None else progress
    try:
        with interrupt.graceful():
            _ticks(cfg, world, coord, locations, bar, st, wall)
    finally:
        if bar is not None:
            bar.close()


def _ticks(cfg: RunConfig, world: World, coord: Coordinator, locations, bar, st: LoopState, wall) -> None:
    sim = cfg.sim
    step = sim.step_s
    deferred = st.deferred
    assert deferred is not None  # set by _run
    if not (math.isfinite(step) and step > 0):  # the guard, part one: a step that cannot advance time
        raise MatcherError(f"the tick step must be a finite number of seconds > 0, got {step} (policy {sim.policy})")
    last_t = -math.inf
    while not world.done():
        if interrupt.requested() is not None:  # Ctrl-C or SIGTERM: stop between two ticks, resumable
            _checkpoint(cfg, world, coord, locations, st, wall())
            raise interrupt.Interrupted(interrupt.requested() or 0, checkpointed=True)
        if world.pending:
            st.k += 1
        else:
            nt = world.next_time()
            if not np.isfinite(nt):
                break
            st.k = max(st.k + 1, math.ceil(nt / step))
        k = st.k
        t = k * step
        if not (math.isfinite(t) and t > last_t):  # the guard: simulated time always moves forward
            raise MatcherError(
                f"simulated time stopped advancing at tick {k} (t = {t} s after {last_t} s, step {step} s); "
                "this is a bug: please report it with the command line"
            )
        last_t = t
        if cfg.checkpoint_every_s > 0 and t >= st.next_checkpoint:
            # state as of the end of the previous tick: a resume redoes this tick
            st.k -= 1
            _checkpoint(cfg, world, coord, locations, st, wall())
            st.k += 1
            st.next_checkpoint = t + cfg.checkpoint_every_s
        if locations is not None:
            st.last_rec = _record(world, locations, st.last_rec, t, k)
        world.advance(t, k)
        world.log.label_shards()
        if world.pending:
            w0 = time.perf_counter()
            _, pings = world.pings(t, st.last_sent)
            idx, wait = world.pending_batch(t)
            b_req, b_key = _barred(world, idx)
            rb = RequestBatch(idx, world.r.plat[idx], world.r.plng[idx], world.r.ride_type[idx], wait, b_req, b_key)
            try:
                m, shard_of, ts = coord.tick(k, t, pings, rb, sim.policy)
            except RunStopped as e:
                # state as of the end of the previous tick: `--resume` redoes this one on new shards
                st.k -= 1
                _checkpoint(cfg, world, coord, locations, st, wall())
                raise RunStopped(
                    f"{e}; stopped at tick {k} with a checkpoint: matcher replay --resume {cfg.out}"
                ) from e
            except Exception as e:  # noqa: BLE001 - one bad tick must not end the run
                # nothing is offered this tick; the shards are rebuilt from the latest reports
                # next tick, so a half-applied tick leaves no trace in their state
                coord.failed(k, e)
                st.failed_ticks += 1
                _log.warning("tick %d failed (%s: %s); its requests wait for the next tick", k, type(e).__name__, e)
                continue
            deferred.check()  # a surge-cells job that failed while this tick's shards solved
            world.apply_matches(t, k, m.req, m.key, m.eta, m.dist, m.lat, m.lng, shard_of)
            if st.cells is not None:
                deferred.add(st.cells.snapshot(world, k, t, idx))  # runs while a later tick's shards solve
            for name, v in (
                ("tick", k),
                ("ts", t),
                ("wall_ms", (time.perf_counter() - w0) * 1e3),
                ("pending", ts.pending),
                ("matched", ts.matched),
                ("deferred", ts.deferred),
                ("fallbacks", ts.fallbacks),
                ("solve_ms", ts.solve_ms_max),
                ("coordinator_ms", ts.coordinator_ms),
                ("critical_ms", ts.critical_ms),
                ("shard_cpu_ms", ts.shard_cpu_ms),
                ("round2", ts.round2),
            ):
                st.ticks[name].append(v)
        if bar is not None:
            bar.update(world)


def _barred(world: World, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not world.barred:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pairs = [(i, k) for i in idx.tolist() if i in world.barred for k in world.barred[i]]
    if not pairs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a = np.array(pairs, np.int64)
    return a[:, 0], a[:, 1]


def _record(world: World, locations: LocationLog, last_rec: float, t: float, k: int) -> float:
    """Driver positions at every ping interval up to t (the location history)."""
    iv = world.sim.ping_interval_s
    b = (math.floor(last_rec / iv) + 1) * iv if np.isfinite(last_rec) else 0.0
    while b <= t:
        world.advance(b, k)
        keys = np.flatnonzero(world.status != DriverStatus.OFFLINE)  # online drivers
        lat, lng, hd, sp = world.position(keys, b)
        locations.add(b, keys, lat, lng, hd, sp, world.status[keys])
        last_rec = b
        b += iv
    return last_rec


class _Bar:
    """Progress on stderr: requests ended out of the total."""

    def __init__(self, total: int, label: str):
        from tqdm import tqdm

        self.t = tqdm(total=total, desc=label, unit="req", leave=False, mininterval=0.5)
        self.done = 0

    def update(self, world: World) -> None:
        ended = world.next_arrival - world.open
        if ended - self.done >= 1000 or world.done():
            self.t.update(ended - self.done)
            self.done = ended

    def close(self) -> None:
        self.t.close()


def _progress(cfg: RunConfig, world: World):
    if cfg.quiet:
        return None
    return _Bar(len(world.r), cfg.label or cfg.sim.policy)
