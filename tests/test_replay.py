"""The replay engine end to end (in-process, no Ray): contract rules on real runs,
determinism, draining, and the CLI forms that drive it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from matcher.analysis import metrics
from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.cli import main
from matcher.config import RunConfig, SimConfig
from matcher.sim.replay import run_replay

REPO = Path(__file__).resolve().parents[1]
NYC = REPO / "data" / "nyc-uber-2014-04-04.parquet"
SYNTH = REPO / "data" / "synth-small.parquet"
SYNTH_DRIVERS = REPO / "data" / "synth-small-drivers.parquet"


@pytest.fixture(scope="module")
def nyc_morning(tmp_path_factory) -> Path:
    """Three busy hours of the real NYC day (keeps each replay to a few seconds)."""
    t = pl.read_parquet(NYC).sort("request_time")
    start = t["request_time"][0]
    sub = t.filter(pl.col("request_time") < start + pl.duration(hours=3))
    p = tmp_path_factory.mktemp("trace") / "nyc3h.parquet"
    sub.write_parquet(p)
    return p


def _run(trace, out, **sim) -> dict:
    cfg = RunConfig(
        trace=str(trace), out=str(out), drivers=sim.pop("drivers", 40), quiet=True, sim=replace(SimConfig(), **sim)
    )
    return run_replay(cfg)


@pytest.mark.parametrize("policy", ["batch", "greedy"])
def test_contract_rules_hold_on_a_real_run(nyc_morning, tmp_path, policy):
    s = _run(
        nyc_morning,
        tmp_path / policy,
        policy=policy,
        accept_prob=0.7,
        gps_dropout_rate_per_h=2.0,
        driver_fault_rate_per_h=0.5,
        cancel_base=0.1,
    )
    assert check_run(tmp_path / policy) == []
    ev = read_events(tmp_path / policy)
    kinds = set(ev["kind"].unique())
    # the run exercised the failure paths, not just the happy one
    assert {"request", "match", "accept", "decline", "pickup", "dropoff", "cancel", "expire"} <= kinds
    assert s["requests"] == pl.read_parquet(nyc_morning).height
    assert s["completed"] + s["cancelled"] + s["expired"] == s["requests"]  # drained


def test_summary_in_slices_equals_one_pass(nyc_morning, tmp_path, monkeypatch):
    """A long log is summarized in slices by request: the figures (and rows) are those of one pass."""
    out = tmp_path / "run"
    s = _run(nyc_morning, out, accept_prob=0.7, cancel_base=0.1, driver_fault_rate_per_h=0.5)
    meta = json.loads((out / "run.json").read_text())
    n_events = read_events(out).height
    monkeypatch.setattr(metrics, "SUMMARY_PASS_EVENTS", n_events // 7)  # 8 slices
    sliced = metrics.summarize(out, meta)
    assert sliced.pop("utilization") == pytest.approx(s.pop("utilization"), rel=1e-12)  # busy sums re-ordered
    for key in ("busy_driver_hours", "online_driver_hours"):
        assert sliced.pop(key) == pytest.approx(s.pop(key), rel=1e-12)
    assert sliced == s
    # the report's per-request table, sliced the same way, is the one-pass table row for row
    assert metrics.run_request_table(out).equals(metrics.request_table(read_events(out)))


@pytest.mark.slow
def test_same_seed_same_log_and_seed_matters(nyc_morning, tmp_path):
    _run(nyc_morning, tmp_path / "a", seed=3)
    _run(nyc_morning, tmp_path / "b", seed=3)
    _run(nyc_morning, tmp_path / "c", seed=4)
    a, b, c = (read_events(tmp_path / x) for x in "abc")
    assert a.equals(b)
    assert not a.equals(c)


def test_stale_drivers_are_never_matched(nyc_morning, tmp_path):
    """With GPS dropouts far longer than the timeout, no match goes to a driver inside one."""
    out = tmp_path / "gps"
    _run(nyc_morning, out, gps_dropout_rate_per_h=6.0, gps_dropout_mean_s=600.0)
    assert check_run(out) == []
    s = json.loads((out / "summary.json").read_text())
    assert s["completed"] > 0


@pytest.mark.slow
def test_batch_beats_greedy_on_pickup_eta_under_tight_supply(nyc_morning, tmp_path):
    g = _run(nyc_morning, tmp_path / "g", policy="greedy", drivers=25)
    b = _run(nyc_morning, tmp_path / "b", policy="batch", drivers=25)
    assert b["pickup_eta_s"]["mean"] < g["pickup_eta_s"]["mean"]
    assert b["completed"] >= 0.97 * g["completed"]


def test_driver_file_and_shifts(tmp_path):
    t = pl.read_parquet(SYNTH).sort("request_time").head(400)
    trace = tmp_path / "t.parquet"
    t.write_parquet(trace)
    out = tmp_path / "out"
    s = run_replay(RunConfig(trace=str(trace), out=str(out), drivers=str(SYNTH_DRIVERS), quiet=True))
    assert check_run(out) == []
    assert s["drivers"] == pq.read_metadata(SYNTH_DRIVERS).num_rows
    ev = read_events(out)
    assert ev.filter(pl.col("kind") == "match")["pickup_eta_s"].is_not_null().all()


def test_record_locations(tmp_path):
    t = pl.read_parquet(SYNTH).sort("request_time").head(100)
    trace = tmp_path / "t.parquet"
    t.write_parquet(trace)
    out = tmp_path / "out"
    run_replay(RunConfig(trace=str(trace), out=str(out), drivers=30, quiet=True, record_locations=True))
    loc = pl.read_parquet(out / "locations" / "*.parquet")
    assert loc.columns == ["driver_id", "ts", "lat", "lng", "heading_deg", "speed_mps", "status"]
    per_ts = loc.group_by("ts").len()
    assert per_ts["len"].max() <= 30
    gaps = loc.select(pl.col("ts").unique().sort().diff().dt.total_milliseconds()).drop_nulls()
    assert set(gaps["ts"].to_list()) == {4000}  # one row per driver per 4 s ping interval
    assert set(loc["status"].unique()) <= {"available", "offered", "en_route", "on_trip"}


@pytest.mark.slow
def test_cli_replay_compare_report(nyc_morning, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(nyc_morning),
                "--out",
                str(out),
                "--policies",
                "greedy,batch:2",
                "--drivers",
                "30",
                "--quiet",
            ]
        )
        == 0
    )
    cmp = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in cmp["runs"]] == ["greedy", "batch-2s"]
    for run in cmp["runs"]:
        assert run["path"] == str((out / run["label"]).resolve())
        assert check_run(run["path"]) == []
    assert (out / "report.html").stat().st_size > 10_000
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").exists()
    assert (
        main(["replay", str(nyc_morning), "--out", str(tmp_path / "one"), "--drivers", "30", "--policy", "greedy"]) == 0
    )
    printed = capsys.readouterr().out
    assert "greedy" in printed and "served" in printed


def test_events_are_in_time_order_with_unique_seq(nyc_morning, tmp_path):
    _run(nyc_morning, tmp_path / "o")
    ev = read_events(tmp_path / "o").sort("seq")
    assert ev["seq"].is_unique().all()
    ts = ev["ts"].cast(pl.Int64).to_numpy()
    assert np.all(np.diff(ts) >= 0)
