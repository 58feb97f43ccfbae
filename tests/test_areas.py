"""Independent areas (issue #15): detection (matcher/core/areas.py) and the split replay
(matcher/sim/areas.py): layout, identity with a replay of each sub-trace alone, the union
holding every request once, resume of only the unfinished areas, Ray tasks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.config import AreaConfig, RunConfig, ShardConfig
from matcher.core import geo
from matcher.core.areas import NAME_PREFIX, detect
from matcher.errors import MatcherError
from matcher.io.schemas import EVENTS
from matcher.sim import areas as areas_mod
from matcher.sim import scenario
from matcher.sim.replay import _load_inputs, resume_replay, run_replay
from matcher.sim.synth import synthesize

# ------------------------------------------------------------------ detection


@st.composite
def clustered_points(draw):
    """Points in a few clusters (some near the antimeridian or a pole), trips inside a cluster
    or (rarely) between two, and drivers: the shapes areas are made of."""
    n_clusters = draw(st.integers(1, 4))
    centres = [
        (
            draw(st.sampled_from([-89.0, -60.0, 0.0, 40.7, 78.2, 89.5]) | st.floats(-85, 85)),
            draw(st.sampled_from([-179.99, 179.99, 0.0, -74.0]) | st.floats(-180, 180)),
        )
        for _ in range(n_clusters)
    ]
    spread_km = draw(st.sampled_from([0.5, 3.0, 20.0]))

    def points(k):
        out = []
        for _ in range(k):
            c = draw(st.integers(0, n_clusters - 1))
            lat = centres[c][0] + draw(st.floats(-1, 1)) * spread_km / 111.0
            lng = centres[c][1] + draw(st.floats(-1, 1)) * spread_km / 111.0 / max(np.cos(np.radians(lat)), 0.05)
            out.append((float(np.clip(lat, -89.99, 89.99)), float((lng + 180.0) % 360.0 - 180.0)))
        return np.array(out, dtype=np.float64).reshape(-1, 2)

    n = draw(st.integers(1, 25))
    pick = points(n)
    drop = points(n)
    no_drop = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    drop[no_drop] = np.nan
    drivers = points(draw(st.integers(0, 15)))
    join_m = draw(st.sampled_from([500.0, 3000.0, 30_000.0]))
    precision = draw(st.sampled_from([3, 4, 5]))
    return pick, drop, drivers, join_m, precision


def _detect(pick, drop, drivers, join_m, precision):
    return detect(pick[:, 0], pick[:, 1], drop[:, 0], drop[:, 1], drivers[:, 0], drivers[:, 1], join_m, precision)


@settings(max_examples=150, deadline=None)
@given(clustered_points())
def test_nothing_connects_two_areas(case):
    pick, drop, drivers, join_m, precision = case
    a = _detect(*case)
    has_drop = ~np.isnan(drop[:, 0])
    # points and their areas: pickups and dropoffs by their request, drivers by themselves
    pts = np.concatenate([pick, drop[has_drop], drivers])
    area = np.concatenate([a.request_area, a.request_area[has_drop], a.driver_area])
    # rule 1: a trip's dropoff is in its pickup's area (the dropoff's cell belongs to that area)
    cell_area = {c: i for i, cs in enumerate(a.cells) for c in cs}
    cells = geo.encode(pts[:, 0], pts[:, 1], precision)
    assert [cell_area[str(c)] for c in cells] == area.tolist()
    # rule 3 (brute force): points of different areas are more than join_m apart
    d = geo.haversine_m(pts[:, None, 0], pts[:, None, 1], pts[None, :, 0], pts[None, :, 1])
    diff = area[:, None] != area[None, :]
    assert not (diff & (d <= join_m)).any(), float(d[diff].min())
    # names: sorted, unique, the prefix + the first cell; cells disjoint
    assert list(a.names) == sorted(set(a.names))
    assert all(n == NAME_PREFIX + cs[0] and list(cs) == sorted(cs) for n, cs in zip(a.names, a.cells))
    assert sum(len(cs) for cs in a.cells) == len(cell_area)


@settings(max_examples=60, deadline=None)
@given(clustered_points(), st.randoms(use_true_random=False))
def test_areas_do_not_depend_on_the_order_of_the_points(case, rnd):
    pick, drop, drivers, join_m, precision = case
    a = _detect(*case)
    pr, dr = list(range(len(pick))), list(range(len(drivers)))
    rnd.shuffle(pr)
    rnd.shuffle(dr)
    b = _detect(pick[pr], drop[pr], drivers[dr], join_m, precision)
    assert a.names == b.names and a.cells == b.cells
    assert [a.names[i] for i in a.request_area[pr]] == [b.names[i] for i in b.request_area]
    assert [a.names[i] for i in a.driver_area[dr]] == [b.names[i] for i in b.driver_area]


def test_far_cities_are_separate_and_a_city_across_the_antimeridian_is_one():
    rng = np.random.default_rng(0)
    centres = np.array([[40.7, -74.0], [51.5, -0.1], [-16.77, 179.97], [78.2, 15.6]])
    c = rng.integers(0, len(centres), 4000)
    lat = centres[c, 0] + rng.normal(0, 0.08, len(c))
    lng = (centres[c, 1] + rng.normal(0, 0.08, len(c)) / np.cos(np.radians(centres[c, 0])) + 180) % 360 - 180
    a = detect(lat, lng, np.full(len(c), np.nan), np.full(len(c), np.nan), lat[:300], lng[:300], 3000.0)
    assert len(a) == 4
    # one area per city: the partition is exactly the cities
    assert len(set(zip(c.tolist(), a.request_area.tolist()))) == 4
    taveuni = a.request_area[c == 2]
    assert (lng[c == 2] > 0).any() and (lng[c == 2] < 0).any() and len(set(taveuni.tolist())) == 1


def test_a_trip_between_two_cities_joins_them():
    plat, plng = np.array([40.7, 51.5, 51.5]), np.array([-74.0, -0.1, -0.1])
    dlat, dlng = np.array([40.71, 40.7, np.nan]), np.array([-74.0, -74.0, np.nan])
    a = detect(plat, plng, dlat, dlng, np.empty(0), np.empty(0), 3000.0)
    assert len(a) == 1
    a2 = detect(plat, plng, np.full(3, np.nan), np.full(3, np.nan), np.empty(0), np.empty(0), 3000.0)
    assert len(a2) == 2


def test_bad_join_distance_is_refused():
    with pytest.raises(ValueError, match="join_m"):
        detect([0.0], [0.0], [np.nan], [np.nan], [], [], 0.0)


# ------------------------------------------------------------------ split replays


@pytest.fixture(scope="module")
def world_trace(tmp_path_factory) -> tuple[Path, Path]:
    """Four small cities on three continents (six synthetic minutes)."""
    d = tmp_path_factory.mktemp("cities")
    trace, drivers = d / "cities.parquet", d / "cities-drivers.parquet"
    synthesize(trace, drivers, drivers=300, requests_per_s=1.5, hours=0.1, seed=3, cities=4)
    return trace, drivers


def _cfg(world_trace, out: Path, **kw) -> RunConfig:
    trace, drivers = world_trace
    return RunConfig(trace=str(trace), out=str(out), drivers=str(drivers), quiet=True, **kw)


@pytest.fixture(scope="module")
def split_run(world_trace, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split") / "run"
    run_replay(_cfg(world_trace, out, shard=ShardConfig(shards=2)))
    return out


def _events(folder: Path) -> pl.DataFrame:
    return read_events(folder).sort("seq")


def test_split_run_layout_and_summary(split_run, world_trace):
    out = split_run
    names = sorted(p.name.split("=", 1)[1] for p in (out / "events").iterdir())
    assert len(names) == 4 and all(n.startswith(NAME_PREFIX) for n in names)
    assert not (out / "areas" / areas_mod.PLAN).exists()  # finished
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["areas"]
    assert [r["area"] for r in rows] == names
    assert sum(r["requests"] for r in rows) == summary["requests"] == pq.read_table(world_trace[0]).num_rows
    assert sum(r["completed"] for r in rows) == summary["completed"]
    assert sum(r["drivers"] for r in rows) == summary["drivers"] == 300
    assert sum(r["events"] for r in rows) == read_events(out).height
    # polars reads the partitioned log as one dataset, with the area from the path
    lf = pl.scan_parquet(out / "events" / "**" / "*.parquet", hive_partitioning=True)
    per_area = lf.group_by("area").agg(pl.col("request_id").filter(pl.col("kind") == "request").count()).collect()
    assert dict(per_area.iter_rows()) == {r["area"]: r["requests"] for r in rows}
    ticks = pl.read_parquet(out / "ticks.parquet")
    assert sorted(ticks["area"].unique().to_list()) == names
    # shards.parquet carries the area like ticks.parquet: each area's own 2 shards on each of its ticks
    sh = pl.read_parquet(out / "shards.parquet")
    assert sorted(sh["area"].unique().to_list()) == names
    per_tick = sh.group_by("area", "tick").agg(pl.col("shard").sort(), pl.col("matched").sum())
    assert per_tick["shard"].to_list() == [[0, 1]] * per_tick.height
    both = per_tick.join(ticks.select("area", "tick", pl.col("matched").alias("t")), on=["area", "tick"])
    assert both.height == ticks.height and (both["matched"] == both["t"]).all()
    per_shard = sh.group_by("area", "shard").agg(pl.col("solve_ms").sum())["solve_ms"]
    assert summary["shard_balance"] == pytest.approx(per_shard.max() / per_shard.mean())
    assert check_run(out) == []
    run = json.loads((out / "run.json").read_text())
    assert run["areas"] == 4 and run["area_backend"] == "inprocess"
    # a split run names its world and carries the scenario that --config reads back (issue 18)
    assert run["world"] == summary["world"] == "full" and summary["settings"] == run["settings"]
    assert scenario.load_file(out / "run.json")["shards"] == 2


def test_the_union_of_areas_holds_every_request_once(split_run, world_trace):
    ev = read_events(split_run)
    assert ev["seq"].n_unique() == ev.height
    want = set(pq.read_table(world_trace[0]).column("request_id").to_pylist())
    req = ev.filter(pl.col("kind") == "request")["request_id"]
    assert req.n_unique() == req.len() == len(want) and set(req.to_list()) == want
    term = ev.filter(pl.col("kind").is_in(["dropoff", "cancel", "expire"]))["request_id"]
    assert term.n_unique() == term.len() == len(want)


def test_an_area_equals_its_sub_trace_replayed_alone(split_run, world_trace, tmp_path):
    """Every area's events equal `matcher replay` of a trace and a driver file holding only
    that area's rows, with the same seed and options (seq aside: the area's starts at its base)."""
    trace, drivers = world_trace
    req, drv = pq.read_table(trace), pq.read_table(drivers)
    cfg = _cfg(world_trace, split_run)
    inputs = _load_inputs(cfg)
    sp = areas_mod.split(cfg, inputs)
    assert len(sp) == 4
    for a, name in enumerate(sp.names):
        ids = inputs.request_ids.filter(pa.array(sp.request_area == a))
        dids = inputs.driver_ids.filter(pa.array(sp.driver_area == a))
        sub_t, sub_d = tmp_path / f"{name}.parquet", tmp_path / f"{name}-drivers.parquet"
        pq.write_table(req.filter(pc.is_in(req["request_id"], ids)), sub_t)
        pq.write_table(drv.filter(pc.is_in(drv["driver_id"], dids)), sub_d)
        alone = tmp_path / f"alone-{name}"
        run_replay(
            RunConfig(trace=str(sub_t), out=str(alone), drivers=str(sub_d), quiet=True, shard=ShardConfig(shards=2))
        )
        mine = pl.read_parquet(split_run / "events" / f"area={name}" / "*.parquet").sort("seq")
        mine = mine.with_columns(pl.col("seq") - a * areas_mod.SEQ_STRIDE)
        theirs = _events(alone)
        assert theirs.columns == mine.columns == EVENTS.names
        assert theirs.height > 0 and theirs.equals(mine), name


def test_one_area_mode_keeps_todays_layout(world_trace, tmp_path):
    out = tmp_path / "one"
    run_replay(_cfg(world_trace, out, areas=AreaConfig(mode="one")))
    assert sorted(p.name for p in (out / "events").iterdir())[0].startswith("part-")
    assert not (out / "areas").exists()
    assert "area" not in pl.read_parquet(out / "ticks.parquet").columns
    assert "areas" not in json.loads((out / "summary.json").read_text())


def test_a_trace_of_one_area_replays_as_before(tmp_path):
    from conftest import SAMPLE_DRIVERS, SAMPLE_TRACE

    t = pq.read_table(SAMPLE_TRACE).slice(0, 300)
    pq.write_table(t, tmp_path / "t.parquet")
    base = RunConfig(trace=str(tmp_path / "t.parquet"), out="", drivers=str(SAMPLE_DRIVERS), quiet=True)
    run_replay(replace(base, out=str(tmp_path / "auto")))
    run_replay(replace(base, out=str(tmp_path / "one"), areas=AreaConfig(mode="one")))
    assert not (tmp_path / "auto" / "areas").exists()
    assert _events(tmp_path / "auto").equals(_events(tmp_path / "one"))


class _Crash(Exception):
    pass


class _CrashInArea:
    """A progress hook that kills the run (like a crash) at the n-th tick of the k-th area it sees."""

    def __init__(self, k, n):
        self.k, self.n, self.worlds = k, n, []

    def update(self, world):
        if not self.worlds or self.worlds[-1] is not world:
            self.worlds.append(world)
        if len(self.worlds) == self.k:
            self.n -= 1
            if self.n == 0:
                raise _Crash()

    def close(self):
        pass


def test_resume_runs_only_the_unfinished_areas(split_run, world_trace, tmp_path):
    out = tmp_path / "cut"
    cfg = _cfg(world_trace, out, shard=ShardConfig(shards=2), checkpoint_every_s=120)
    with pytest.raises(_Crash):
        run_replay(cfg, progress=_CrashInArea(3, 150))  # dies in the third area, after its checkpoints
    plan = areas_mod.is_split_run(out)
    assert plan
    done = sorted(p.name.split("=", 1)[1] for p in (out / "events").iterdir())
    assert len(done) == 2
    stamps = {p: p.stat().st_mtime_ns for d in done for p in (out / "events" / f"area={d}").iterdir()}
    ckpts = list((out / "areas").glob("*/checkpoint.pkl"))
    assert len(ckpts) == 1  # the area that died had checkpointed
    resume_replay(str(out))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished areas untouched
    assert _events(out).equals(_events(split_run))
    assert check_run(out) == []
    assert json.loads((out / "run.json").read_text())["resumed"] is True


def test_a_split_run_holds_its_folder_and_checks_what_it_resumes(split_run, world_trace, tmp_path):
    from matcher.errors import UsageError
    from matcher.io import runfolder

    with pytest.raises(UsageError, match="exists and holds a run; pass --overwrite"):
        run_replay(_cfg(world_trace, split_run, shard=ShardConfig(shards=2)))  # never emptied by surprise
    out, trace = tmp_path / "cut", tmp_path / "trace.parquet"
    trace.write_bytes(Path(world_trace[0]).read_bytes())  # a copy this test may change
    mine = (trace, world_trace[1])
    cfg = _cfg(mine, out, shard=ShardConfig(shards=2), checkpoint_every_s=120)
    with pytest.raises(_Crash):
        run_replay(cfg, progress=_CrashInArea(3, 150))
    with runfolder.claim(out, resume=True), pytest.raises(MatcherError, match="in use by another matcher run"):
        resume_replay(str(out))  # one writer, for a split run too
    saved = trace.read_bytes()
    t = pq.read_table(trace)
    pq.write_table(t.slice(0, t.num_rows - 1), trace)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(MatcherError, match="cannot resume: the trace changed"):
        resume_replay(str(out))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # refused before anything changed
    trace.write_bytes(saved)
    resume_replay(str(out))
    assert _events(out).equals(_events(split_run))
    run_replay(_cfg(mine, out, shard=ShardConfig(shards=2)), overwrite=True)  # removed whole, run again
    assert _events(out).equals(_events(split_run))


@pytest.mark.ray
def test_areas_as_ray_tasks_give_the_inprocess_log(ray_session, split_run, world_trace, tmp_path):
    out = tmp_path / "ray"
    cfg = _cfg(
        world_trace,
        out,
        shard=ShardConfig(shards=2, backend="ray"),
        areas=AreaConfig(num_cpus=0.5),
    )
    summary = run_replay(cfg)
    assert json.loads((out / "run.json").read_text())["area_backend"] == "ray"
    assert _events(out).equals(_events(split_run))
    timing = ("wall_ms", "solve_ms", "coordinator_ms", "critical_ms", "shard_cpu_ms")  # measured, not simulated
    assert (
        pl.read_parquet(out / "ticks.parquet")
        .drop(timing)
        .equals(pl.read_parquet(split_run / "ticks.parquet").drop(timing))
    )
    assert (
        pl.read_parquet(out / "shards.parquet")
        .drop("solve_ms")
        .equals(pl.read_parquet(split_run / "shards.parquet").drop("solve_ms"))
    )
    assert [r["area"] for r in summary["areas"]] == [
        r["area"] for r in json.loads((split_run / "summary.json").read_text())["areas"]
    ]


def test_report_of_a_split_run_has_a_row_per_area(split_run, tmp_path):
    import shutil

    from matcher.analysis.report import build_report

    folder = tmp_path / "copy"
    shutil.copytree(split_run, folder)
    text = Path(build_report(folder)).read_text()
    summary = json.loads((folder / "summary.json").read_text())
    assert "<h2>Independent areas</h2>" in text
    for row in summary["areas"]:
        assert f"<tr><th>{row['area']}</th><td>{row['requests']:,}</td>" in text


@pytest.mark.slow
def test_resume_after_sigkill_of_a_split_run(split_run, world_trace, tmp_path):
    """A real kill -9 of `matcher replay` once an area has finished and another has checkpointed,
    then `matcher replay --resume OUT`: the log equals the uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from matcher.cli import main

    trace, drivers = world_trace
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "matcher", "replay", str(trace), "--out", str(out), "--drivers", str(drivers)]
    proc = subprocess.Popen([*cmd, "--shards", "2", "--backend", "inprocess", "--quiet", "--checkpoint-every", "60"])

    def ready() -> bool:
        parts = list((out / "events").glob("area=*")) if (out / "events").exists() else []
        return bool(parts) and bool(list((out / "areas").glob("*/checkpoint.pkl")))

    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert areas_mod.is_split_run(out)
    assert main(["replay", "--resume", str(out), "--quiet"]) == 0
    assert _events(out).equals(_events(split_run))
    assert check_run(out) == []
