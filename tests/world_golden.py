"""Pinned digests of today's world: the event log (and location history) of a few small runs
that go through every path of the world model (offers, declines, timeouts, cancels, faults,
GPS dropouts, shifts, repositioning, trips with and without durations).

``python tests/world_golden.py DIR`` prints the digests (runs in DIR); ``tests/data/world_golden.json`` holds the
ones of the release the world was pinned at. A change of the world model that is meant to change
runs updates that file in the same commit and says why.

The pinned runs are made with numpy's AVX-512 code off (`portable_env`): on a CPU with AVX-512,
numpy's exp, log, arcsin, arctan2, power and others (its SVML paths) differ from the AVX2 ones in
the last bit, and a last bit is enough to move a logged time or break a tie. With those paths off,
an AVX-512 machine computes what an AVX2 machine does, so one pinned digest holds on both (checked
on an AVX-512 AMD EPYC: its default digest differs, the portable one matches the AVX2 machine's).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
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


def portable_env() -> dict[str, str]:
    """The environment of a child process whose numpy leaves out the AVX-512 targets this machine has.

    Only targets the machine has and this numpy dispatches are named (numpy refuses others),
    so on a CPU without AVX-512 this is the plain environment.
    """
    from numpy._core import _multiarray_umath as um

    off = [f for f in um.__cpu_dispatch__ if (f.startswith("AVX512") or f == "X86_V4") and um.__cpu_features__.get(f)]
    env = dict(os.environ)
    if off:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(off)
    return env


def run_portable(args: list[str]) -> str:
    """``python ARGS`` in a child with `portable_env`; its stdout (it must succeed)."""
    r = subprocess.run(
        [sys.executable, *args], env=portable_env(), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, f"{args} failed ({r.returncode}): {r.stderr[-2000:]}"
    return r.stdout


def run_case_portable(name: str, traces: dict[str, Path], out: Path) -> dict[str, str]:
    """`run_case` in a child process with `portable_env`."""
    got: dict[str, str] = json.loads(
        run_portable([__file__, "--case", name, str(out), json.dumps({k: str(v) for k, v in traces.items()})])
    )
    return got


def main(argv: list[str]) -> None:
    if argv[0] == "--case":  # one case, in the calling process's environment (run_case_portable)
        name, out, traces = argv[1], Path(argv[2]), {k: Path(v) for k, v in json.loads(argv[3]).items()}
        print(json.dumps(run_case(name, traces, out)))
        return
    folder = Path(argv[0])
    traces = make_traces(folder / "traces")
    res = {name: run_case_portable(name, traces, folder / name) for name in CASES}
    print(json.dumps(res, indent=2, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
