"""Pinned digests of today's world: the event log (and location history) of a few small runs
that go through every path of the world model (offers, declines, timeouts, cancels, faults,
GPS dropouts, shifts, repositioning, trips with and without durations).

``python tests/world_golden.py DIR`` prints the digests (runs in DIR); ``tests/data/world_golden.json`` holds the
ones of the release the world was pinned at. A change of the world model that is meant to change
runs updates that file in the same commit and says why.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl

from matcher.config import RunConfig, SimConfig

REPO = Path(__file__).resolve().parents[1]
NYC = REPO / "data" / "nyc-uber-2014-04-04.parquet"
SYNTH = REPO / "data" / "synth-small.parquet"
SYNTH_DRIVERS = REPO / "data" / "synth-small-drivers.parquet"
GOLDEN = REPO / "tests" / "data" / "world_golden.json"

HARSH = {"accept_prob": 0.7, "gps_dropout_rate_per_h": 2.0, "driver_fault_rate_per_h": 0.5, "cancel_base": 0.1}

# name -> (trace, RunConfig overrides, SimConfig overrides)
CASES: dict[str, tuple[str, dict, dict]] = {
    "nyc-batch-default": ("nyc", {"drivers": 40}, {}),
    "nyc-greedy-harsh-locations": ("nyc", {"drivers": 40, "record_locations": True}, {**HARSH, "policy": "greedy"}),
    "nyc-batch-harsh": ("nyc", {"drivers": 40}, {**HARSH, "seed": 5}),
    "synth-shifts": ("synth", {"drivers": str(SYNTH_DRIVERS)}, {**HARSH, "driver_fault_rate_per_h": 2.0}),
}


def make_traces(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    t = pl.read_parquet(NYC).sort("request_time")
    nyc = folder / "nyc2h.parquet"
    t.filter(pl.col("request_time") < t["request_time"][0] + pl.duration(hours=2)).write_parquet(nyc)
    synth = folder / "synth400.parquet"
    pl.read_parquet(SYNTH).sort("request_time").head(400).write_parquet(synth)
    return {"nyc": nyc, "synth": synth}


def frame_digest(df: pl.DataFrame) -> str:
    return hashlib.sha256(df.write_csv().encode()).hexdigest()


def run_case(name: str, traces: dict[str, Path], out: Path) -> dict[str, str]:
    from matcher.analysis.metrics import read_events
    from matcher.sim.replay import run_replay

    which, run_kw, sim_kw = CASES[name]
    cfg = RunConfig(trace=str(traces[which]), out=str(out), quiet=True, sim=replace(SimConfig(), **sim_kw), **run_kw)
    run_replay(cfg)
    d = {"events": frame_digest(read_events(out).sort("seq"))}
    if run_kw.get("record_locations"):
        d["locations"] = frame_digest(pl.read_parquet(out / "locations" / "*.parquet").sort("ts", "driver_id"))
    return d


def main(folder: str) -> None:
    traces = make_traces(Path(folder) / "traces")
    res = {name: run_case(name, traces, Path(folder) / name) for name in CASES}
    print(json.dumps(res, indent=2, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
