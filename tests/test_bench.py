"""The benchmark harness runs end to end in --quick mode and writes well-formed JSON.

No timing assertions: this only guards the harness (bench/run.py) against rot.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXPECTED = {
    "geohash_encode_points_per_s",
    "candidates_geohash_vs_kdtree",
    "tick_solve_ms_p50",
    "tick_dense_vs_sparse",
    "queued_solve_speedup",
    "scaling_exponent",
    "ingest_pings_per_s",
    "cost_ratio_sharded_vs_global",
    "shard_balance_4",
    "shard_balance_8",
    "coordinator_solve_share",
    "modeled_speedup_8",
    "nyc_day_sharded_vs_1",
    "wall_2_shards_vs_1",
    "ingest_pings_per_s_ray",
    "replay_speedup_metro",
    "metro_tick_ms_p99",
    "littles_law_ratio",
    "wait_ratio_batch_vs_greedy",
    "peak_rss_mb_replay_1m",
    "ray_overhead_small_city",
    "ray_overhead_metro",
    "serve_batch_pings_per_s",
    "serve_batch_put_ms_p99",
    "serve_single_put_per_s",
    "serve_request_post_ms_p99",
    "serve_request_to_offer_ms_p99",
    "serve_audit_violations",
    "area_speedup_2_tasks",
    "area_speedup_2_tasks_embedded",
    "area_events_per_s",
    "area_metro_speed",
    "area_nodes_realtime_100x50k",
    "area_nodes_10x_100x50k",
}
SERVE = {f for f in EXPECTED if f.startswith("serve_")}
# measured even in --quick mode (the others are skipped there: Ray, the 1M replay)
MEASURED_IN_QUICK = (
    EXPECTED
    - SERVE
    - {
        "ingest_pings_per_s_ray",
        "peak_rss_mb_replay_1m",
        "ray_overhead_small_city",
        "ray_overhead_metro",
        "wall_2_shards_vs_1",
    }
)


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "results" / "latest.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--cache", str(tmp_path / "cache"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,  # about a minute alone; several times that on a 2-core machine shared by other work
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


@pytest.mark.slow
def test_quick_run_writes_well_formed_results(tmp_path):
    proc, out = _run(tmp_path)
    res = json.loads(out.read_text())  # strict JSON: no NaN/inf
    assert {"machine", "figures"} <= set(res)
    m = res["machine"]
    for key in ("cpu", "cores", "python", "numpy", "scipy", "ray", "date"):
        assert key in m, key
    figs = res["figures"]
    assert set(figs) == EXPECTED
    for name, f in figs.items():
        assert {"value", "unit", "target", "better", "ok", "note"} <= set(f), name
        assert f["better"] in ("lower", "higher", None), name
        assert isinstance(f["ok"], bool), name
        assert isinstance(f["note"], str) and f["note"], name
        assert f["value"] is None or (isinstance(f["value"], (int, float)) and math.isfinite(f["value"])), name
        if f["value"] is None:
            assert f["ok"] is False, name
    for name in MEASURED_IN_QUICK:
        assert figs[name]["value"] is not None, (name, figs[name]["note"])
    # the printed table names every figure
    for name in EXPECTED:
        assert name in proc.stdout
    assert (out.parent / "tick_scaling.png").stat().st_size > 0


@pytest.mark.slow
def test_only_selects_figures(tmp_path):
    _, out = _run(tmp_path, "--only", "ingest_pings_per_s,metro_tick_ms_p99")
    figs = json.loads(out.read_text())["figures"]
    # a figure produced with others by one function brings its siblings along
    assert set(figs) == {"ingest_pings_per_s", "replay_speedup_metro", "metro_tick_ms_p99", "littles_law_ratio"}


def test_unknown_figure_is_refused(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--only",
            "nope",
            "--out",
            str(tmp_path / "x.json"),
            "--cache",
            str(tmp_path / "c"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "unknown figure" in proc.stderr
