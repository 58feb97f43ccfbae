"""Scenarios (issue 18): every behaviour model switchable from the CLI, presets, a scenario file,
and run.json that reproduces a run event for event (matcher.sim.scenario)."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import world_golden as wg

from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.cli import build_parser, config_from_args, main
from matcher.config import RunConfig
from matcher.sim import scenario
from matcher.sim.scenario import BY_NAME, OPTIONS, PRESETS

REPO = Path(__file__).resolve().parents[1]
NYC = REPO / "data" / "nyc-uber-2014-04-04.parquet"


def _cfg(*argv: str) -> RunConfig:
    """The RunConfig the CLI resolves for ``matcher replay T --out O ARGV``."""
    full = ["replay", "t.parquet", "--out", "o", *argv]
    p = build_parser()
    a = p.parse_args(full)
    a.given = scenario.given_options(p, full)
    return config_from_args(a)


def _get(cfg, path):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """100 requests of the NYC morning (a few seconds per replay)."""
    t = pl.read_parquet(NYC).sort("request_time").head(100)
    p = tmp_path_factory.mktemp("scn") / "nyc100.parquet"
    t.write_parquet(p)
    return p


# ------------------------------------------------------------------ resolution


def test_no_option_is_the_full_world_of_config_py():
    assert _cfg() == RunConfig(trace=str(Path("t.parquet").resolve()), out="o")
    assert _cfg("--world", "full") == _cfg()


def test_minimal_preset_sets_exactly_its_models():
    cfg, base = _cfg("--world", "minimal"), _cfg()
    assert cfg.world == "minimal"
    changed = {o.name for o in OPTIONS if _get(cfg, o.path) != _get(base, o.path)}
    assert changed == set(PRESETS["minimal"])
    assert cfg.sim.accept_prob == 1.0 and cfg.sim.response_s == 0.0 and not cfg.sim.reposition
    assert cfg.sim.driver_fault_rate_per_h == 0.0 and cfg.sim.dwell_s == 0.0 and cfg.match.eta.turnaround_s == 0.0


def test_layers_defaults_preset_file_cli(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('world = "minimal"\naccept-prob = 0.5\nboarding = 12\nspeed = 5\n')
    cfg = _cfg("--config", str(f))
    assert cfg.world == "minimal" and cfg.sim.accept_prob == 0.5 and cfg.sim.dwell_s == 12.0
    assert cfg.sim.cancel_base == 0.0  # from the preset
    assert cfg.sim.trip_speed_mps == cfg.match.eta.city_speed_mps == 5.0  # speed sets both
    cfg = _cfg("--config", str(f), "--accept-prob", "0.9", "--eta-speed", "6", "--world", "full")
    assert cfg.world == "full" and cfg.sim.cancel_base == 0.02  # the CLI's world wins over the file's
    # an option given with its default value still overrides the file
    assert cfg.sim.accept_prob == 0.9
    assert cfg.match.eta.city_speed_mps == 6.0 and cfg.sim.trip_speed_mps == 5.0
    cfg = _cfg("--speed", "4", "--drive-speed", "8")  # within one layer the specific option wins
    assert (cfg.match.eta.city_speed_mps, cfg.sim.trip_speed_mps) == (4.0, 8.0)


def test_every_option_reaches_its_config_field():
    assert _cfg("--record-locations").record_locations is True
    for o in OPTIONS:
        if o.name in ("drivers", "policy", "record-locations"):
            continue
        value = {"bool": "off", "str": o.choices[-1] if o.choices else "127.0.0.2:6379"}.get(o.kind)
        if value is None:
            r = o.range
            value = str(r.hi if o.kind == "int" else (r.lo + r.hi) / 2 if np.isfinite(r.hi) else r.lo + 1)
        cfg = _cfg(f"--{o.name}", value)
        assert _get(cfg, o.path) == o.convert(value, "test"), o.name


def test_every_world_field_has_an_option():
    """A behaviour added to SimConfig/EtaConfig must get a switch (or a reason here)."""
    internal = {"sim.greedy_step_s", "sim.ping_interval_s", "match.eta.moving_mps", "match.k_search"}
    internal |= {f"match.{n}" for n in ("unmatched_base_s", "unmatched_per_wait", "dense_max_cells", "compat")}
    reached = {o.path for o in OPTIONS}

    def leaves(obj, prefix):
        for f in fields(obj):
            v = getattr(obj, f.name)
            yield from leaves(v, f"{prefix}{f.name}.") if is_dataclass(v) else [prefix + f.name]

    base = RunConfig(trace="", out="")
    missing = set(leaves(base.sim, "sim.")) | set(leaves(base.match, "match."))
    assert missing - reached - internal == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accept-prob = nan\n", "accept-prob must be a finite number"),
        ("accept-prob = 2\n", "accept-prob must be 0..1"),
        ("reposition = 3\n", "reposition must be on or off"),
        ("colour = 1\n", "unknown option 'colour'"),
        ("[world]\nx = 1\n", "tables are not used"),
        ("accept-prob = \n", "not valid TOML"),
        ('world = "tiny"\n', "unknown world 'tiny'"),
        ("k = 2.5\n", "k must be an integer"),
        ('eta-model = "teleport"\n', "eta-model must be one of straight_line"),
    ],
)
def test_a_bad_scenario_file_is_one_line_and_exit_2(tmp_path, capsys, small, text, message):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["replay", str(small), "--out", str(tmp_path / "o"), "--config", str(f)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bad_config_paths_and_json(tmp_path, capsys, small):
    for path, message in ((tmp_path / "missing.toml", "cannot read it"), (tmp_path / "r.json", '"scenario" object')):
        if path.suffix == ".json":
            path.write_text('{"policy": "greedy"}')
        with pytest.raises(SystemExit) as e:
            main(["replay", str(small), "--out", str(tmp_path / "o"), "--config", str(path)])
        assert e.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "x"])
def test_new_numeric_switches_refuse_non_numbers(bad, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["replay", "t", "--out", "o", "--boarding", bad])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


# ------------------------------------------------------------- switches in runs


def _replay(trace: Path, out: Path, *argv: str) -> pl.DataFrame:
    assert main(["replay", str(trace), "--out", str(out), "--drivers", "12", "--quiet", *argv]) == 0
    assert check_run(out) == []
    return read_events(out).sort("seq")


def _pairs(ev: pl.DataFrame, a: str, b: str) -> pl.DataFrame:
    """Per request and driver: ts of its first ``a`` and of the first ``b`` after it, in seconds."""
    x = ev.filter(pl.col("kind") == a).group_by("request_id", "driver_id").agg(pl.col("ts").min().alias("ta"))
    y = ev.filter(pl.col("kind") == b).group_by("request_id", "driver_id").agg(pl.col("ts").min().alias("tb"))
    j = x.join(y, on=["request_id", "driver_id"])
    return j.with_columns(((pl.col("tb") - pl.col("ta")).dt.total_milliseconds() / 1000.0).alias("dt"))


def test_minimal_world_in_a_run(small, tmp_path):
    ev = _replay(small, tmp_path / "m", "--world", "minimal", "--policy", "greedy")
    kinds = set(ev["kind"])
    assert "decline" not in kinds and "cancel" not in kinds  # accept at once, no cancels, no faults
    assert set(ev.filter(pl.col("kind") == "driver_offline")["kind"]) == set()
    assert (_pairs(ev, "match", "accept")["dt"] == 0).all()  # no response delay
    m = ev.filter(pl.col("kind") == "match")
    # no turnaround: every ETA is distance x detour / speed
    assert np.allclose(m["pickup_eta_s"], m["pickup_distance_m"] * 1.3 / 7.0, rtol=1e-9)
    # no repositioning: a driver is matched where its previous ride ended (or where it started)
    ends = ev.filter(pl.col("kind").is_in(["dropoff", "driver_online"])).select("driver_id", "ts", "lat", "lng")
    last = m.join_asof(
        ends.sort("ts"), on="ts", by="driver_id", strategy="backward", suffix="_end", check_sortedness=False
    )
    assert np.allclose(last["lat"], last["lat_end"]) and np.allclose(last["lng"], last["lng_end"])


def test_full_world_repositions_and_turns(small, tmp_path):
    ev = _replay(small, tmp_path / "f", "--policy", "greedy")
    m = ev.filter(pl.col("kind") == "match")
    assert (m["pickup_eta_s"] > m["pickup_distance_m"] * 1.3 / 7.0 + 1e-6).any()  # some turn around
    assert (_pairs(ev, "match", "accept")["dt"] > 0).all()  # drivers take time to answer


def test_speeds_boarding_detour_and_response(small, tmp_path):
    base = ["--world", "minimal", "--policy", "greedy"]
    a = _replay(small, tmp_path / "a", *base)
    b = _replay(small, tmp_path / "b", *base, "--drive-speed", "3.5", "--boarding", "100", "--detour", "1.5")
    # the matcher's ETA uses the detour and the ETA speed (7 m/s) ...
    mb = b.filter(pl.col("kind") == "match")
    assert np.allclose(mb["pickup_eta_s"], mb["pickup_distance_m"] * 1.5 / 7.0, rtol=1e-9)
    # ... drivers really drive at the driving speed: twice the ETA (to the millisecond)
    drive = _pairs(b, "accept", "pickup").join(
        mb.select("request_id", "driver_id", "pickup_eta_s"), on=["request_id", "driver_id"]
    )
    assert np.allclose(drive["dt"], 2 * drive["pickup_eta_s"], atol=2e-3)
    # trips take distance x detour / driving speed + boarding
    trips_a, trips_b = _pairs(a, "pickup", "dropoff"), _pairs(b, "pickup", "dropoff")
    ja = trips_a.join(trips_b, on=["request_id", "driver_id"], suffix="_b")
    assert len(ja) > 0 and np.allclose(ja["dt_b"], ja["dt"] * (1.5 / 1.3) * 2 + 100, atol=5e-3)
    c = _replay(small, tmp_path / "c", *base, "--response-time", "10", "--offer-timeout", "300")
    resp = _pairs(c, "match", "accept")["dt"]
    assert resp.min() >= 0 and 3 < resp.mean() < 30


def test_faults_and_their_downtime(small, tmp_path):
    ev = _replay(small, tmp_path / "f", "--world", "minimal", "--fault-rate", "30", "--fault-downtime", "123")
    off = ev.filter(pl.col("kind") == "driver_offline").select("driver_id", "ts").sort("ts")
    on = ev.filter(pl.col("kind") == "driver_online").select("driver_id", pl.col("ts").alias("back")).sort("back")
    assert len(off) > 0
    j = off.join_asof(
        on, left_on="ts", right_on="back", by="driver_id", strategy="forward", check_sortedness=False
    ).drop_nulls()
    dt = (j["back"] - j["ts"]).dt.total_milliseconds().to_numpy() / 1000.0
    assert len(dt) > 0 and np.allclose(dt, 123.0, atol=1e-3)  # back exactly the downtime later


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--reposition-lookback", "1"),
        ("--gps-dropout-mean", "3000"),
        ("--gps-dropout-rate", "5"),
        ("--eta-speed", "4"),
        ("--turnaround", "300"),
        ("--reposition", "off"),
        ("--patience", "60"),
        ("--cancel-base", "0.3"),
    ],
)
def test_each_switch_changes_the_run(small, tmp_path, option, value):
    common = (
        ["--policy", "greedy", "--gps-dropout-rate", "5"] if option == "--gps-dropout-mean" else ["--policy", "greedy"]
    )
    base = _replay(small, tmp_path / "base", *common)
    other = _replay(small, tmp_path / "other", *common, option, value)
    assert not base.equals(other), f"{option} {value} changed nothing"


# ------------------------------------------------------------- reproducing runs


def test_run_json_reproduces_the_run_event_for_event(small, tmp_path):
    a = tmp_path / "a"
    args = ["--world", "minimal", "--accept-prob", "0.8", "--fault-rate", "2", "--policy", "greedy", "--seed", "3"]
    ev_a = _replay(small, a, *args)
    meta = json.loads((a / "run.json").read_text())
    sc = meta["scenario"]
    assert Path(sc["trace"]).is_absolute() and Path(sc["out"]).is_absolute()
    assert sc["world"] == "minimal" and sc["accept-prob"] == 0.8 and sc["policy"] == "greedy"
    # from run.json: the same run
    assert main(["replay", str(small), "--config", str(a / "run.json"), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert read_events(tmp_path / "b").sort("seq").equals(ev_a)
    # the trace can come from the file too; --print-config gives a TOML that does the same
    toml = tmp_path / "s.toml"
    assert main(["replay", "--config", str(a / "run.json"), "--out", str(tmp_path / "c"), "--print-config"]) == 0
    assert main(["replay", "--config", str(a / "run.json"), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert read_events(tmp_path / "c").sort("seq").equals(ev_a)
    cfg = scenario.resolve({}, config=str(a / "run.json"), out=str(tmp_path / "d"))
    toml.write_text(scenario.to_toml(cfg))
    assert main(["replay", "--config", str(toml), "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert read_events(tmp_path / "d").sort("seq").equals(ev_a)


def test_summary_and_report_name_the_world(small, tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", str(small), "--out", str(out), "--drivers", "12", "--policies", "greedy,batch:2"]
    assert main([*argv, "--world", "minimal", "--boarding", "5", "--quiet"]) == 0
    s = json.loads((out / "greedy" / "summary.json").read_text())
    assert s["world"] == "minimal"
    assert s["settings"] == {**PRESETS["minimal"], "boarding": 5.0, "policy": "greedy", "drivers": 12}
    html = (out / "report.html").read_text()
    for name in ("world", "minimal", "accept-prob", "reposition", "boarding"):
        assert f"<th>{name}</th>" in html or f"<td>{name}</td>" in html, name
    # a compare run's run.json replays that run
    assert main(["replay", "--config", str(out / "greedy" / "run.json"), "--out", str(tmp_path / "g"), "--quiet"]) == 0
    assert read_events(tmp_path / "g").sort("seq").equals(read_events(out / "greedy").sort("seq"))


def test_full_world_from_the_cli_is_the_pinned_world(tmp_path):
    """``--world full`` (and no option at all) reproduces the pinned runs of today's world."""
    traces = wg.make_traces(tmp_path / "traces")
    want = json.loads(wg.GOLDEN.read_text())["nyc-batch-default"]["events"]
    for extra in ([], ["--world", "full"]):
        out = tmp_path / f"run{len(extra)}"
        # the command line in a child process without numpy's AVX-512 paths (see world_golden)
        wg.run_portable(
            ["-m", "matcher", "replay", str(traces["nyc"]), "--out", str(out), "--drivers", "40", "--quiet", *extra]
        )
        assert wg.frame_digest(read_events(out).sort("seq")) == want
    assert BY_NAME["reposition"].convert("on", "t") is True
