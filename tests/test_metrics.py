"""matcher.analysis.metrics (summary.json) and matcher.analysis.summary_text on hand-computed logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from eventlog import ride, ticks_table, tiny_log, write_run

from matcher.analysis.audit import SUMMARY_KEYS
from matcher.analysis.metrics import read_events, request_table, summarize
from matcher.analysis.summary_text import format_summary, run_label

TICKS = {"pending": [1, 2, 3, 4, 0], "deferred": [0, 1, 0, 1, 0], "fallbacks": [0, 0, 1, 0, 0]}


@pytest.fixture
def tiny(tmp_path):
    meta = {
        "policy": "batch",
        "window_s": 2.0,
        "shards": 2,
        "seed": 7,
        "drivers": 2,
        "quarantined": 3,
        "sim_seconds": 1400.0,
        "wall_seconds": 7.0,
        "label": "batch-2s",
    }
    out = write_run(tmp_path / "run", tiny_log(), meta=meta, ticks=ticks_table([10, 20, 30, 40, 50], **TICKS))
    return out, meta


def test_tiny_log_by_hand(tiny):
    out, meta = tiny
    s = json.loads((out / "summary.json").read_text())
    assert (s["policy"], s["window_s"], s["shards"], s["seed"], s["label"]) == ("batch", 2.0, 2, 7, "batch-2s")
    assert (s["requests"], s["completed"], s["cancelled"], s["expired"]) == (5, 2, 1, 2)
    assert s["quarantined"] == 3 and s["drivers"] == 2
    assert s["served_rate"] == 0.4
    # completed waits: r1 100 s, r4 200 s
    assert s["wait_s"] == {"mean": 150.0, "p50": 150.0, "p90": 190.0, "p95": 195.0}
    # first match: r1 2, r2 2, r3 4, r4 6 (r5 never matched)
    assert s["match_delay_s"] == {"mean": 3.5, "p50": 3.0, "p90": pytest.approx(5.4, abs=1e-12)}
    # picked up: r1 (eta 100 s, 500 m), r4 (eta 50 s, 250 m); r2, r3 never picked up
    assert s["pickup_eta_s"] == {"mean": 75.0, "p50": 75.0, "p90": 95.0}
    assert s["pickup_distance_m"] == {"mean": 375.0, "p50": 375.0, "p90": 475.0}
    assert s["declines"] == 1 and s["matches"] == 4
    # busy: r1 accept 5 -> dropoff 700 (695) + r3 accept 60 -> cancel 160 (100) + r4 810 -> 1200 (390) = 1185
    # online: d1 0 -> end of log 1400 (1400) + d2 0 -> offline 1000 (1000) = 2400
    assert s["utilization"] == 1185 / 2400
    assert s["tick_ms"] == {"p50": 30.0, "p99": pytest.approx(49.6, abs=1e-12), "max": 50.0}
    assert s["border_share"] == 0.2 and s["fallback_ticks"] == 1 and s["ticks"] == 5
    assert s["sim_seconds"] == 1400.0 and s["wall_seconds"] == 7.0 and s["speedup"] == 200.0
    assert s["requests_per_hour_peak"] == 5
    for key, sub in SUMMARY_KEYS.items():
        assert key in s
        if sub:
            assert set(sub) <= set(s[key])


def test_summary_json_is_recomputable_and_atomic(tiny):
    out, meta = tiny
    assert json.loads((out / "summary.json").read_text()) == summarize(out, meta)
    assert sorted(p.name for p in out.iterdir()) == [
        "events",
        "quarantine.parquet",
        "run.json",
        "summary.json",
        "ticks.parquet",
    ]  # no temp file left


def test_request_table(tiny):
    out, _ = tiny
    t = request_table(read_events(out))
    assert t["request_id"].to_list() == ["r1", "r2", "r3", "r4", "r5"]
    assert t["outcome"].to_list() == ["completed", "expired", "cancelled", "completed", "expired"]
    assert t["wait_s"].to_list() == [100.0, None, None, 200.0, None]
    assert t["time_in_system_s"].to_list() == [700.0, 300.0, 110.0, 400.0, 300.0]


def test_empty_sets_are_null_not_nan(tmp_path):
    rows = [(0, "request", "r1"), (300, "expire", "r1")]
    out = write_run(tmp_path / "run", rows, ticks=ticks_table([]))
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    s = json.loads(text)
    assert s["served_rate"] == 0.0
    assert s["wait_s"] == {"mean": None, "p50": None, "p90": None, "p95": None}
    assert s["match_delay_s"] == {"mean": None, "p50": None, "p90": None}
    assert s["pickup_eta_s"] == {"mean": None, "p50": None, "p90": None}
    assert s["pickup_distance_m"] == {"mean": None, "p50": None, "p90": None}
    assert s["utilization"] is None  # no online driver time
    assert s["tick_ms"] == {"p50": None, "p99": None, "max": None}
    assert s["border_share"] is None


def test_no_request_at_all(tmp_path):
    out = write_run(tmp_path / "run", [(0, "driver_online", None, "d1"), (60, "driver_offline", None, "d1")])
    s = json.loads((out / "summary.json").read_text())
    assert s["requests"] == 0 and s["served_rate"] is None
    assert s["utilization"] == 0.0


def test_meta_fallbacks(tmp_path):
    out = write_run(tmp_path / "run", tiny_log(), summary=False)
    (out / "ticks.parquet").unlink()
    s = summarize(out, {})
    assert s["drivers"] == 2  # distinct drivers with driver_online
    assert s["quarantined"] == 0  # rows of quarantine.parquet
    assert s["sim_seconds"] == 1400.0  # last - first event
    assert s["wall_seconds"] is None and s["speedup"] is None and s["policy"] is None
    assert s["tick_ms"] == {"p50": None, "p99": None, "max": None} and s["ticks"] is None


def test_busy_time_and_intervals(tmp_path):
    rows = [
        (0, "driver_online", None, "d1"),
        (100, "driver_offline", None, "d1"),
        (200, "driver_online", None, "d1"),  # second shift, still open at the end (1000)
        *ride("r1", "d1", 300, 301, 310, 400, 600),
        (610, "request", "r2"),
        (611, "match", "r2", "d1"),
        (612, "accept", "r2", "d1"),
        (700, "cancel", "r2", "d1"),  # rider cancels en route: 88 s busy
        (1000, "request", "r3"),
        (1000, "expire", "r3"),
    ]
    out = write_run(tmp_path / "run", rows)
    s = json.loads((out / "summary.json").read_text())
    assert s["utilization"] == (290 + 88) / (100 + 800)
    assert s["wait_s"]["mean"] == 100.0  # 300 -> 400


def test_format_summary():
    s1 = {
        "label": "greedy",
        "requests": 1000,
        "completed": 900,
        "served_rate": 0.9,
        "wait_s": {"mean": 120.04, "p50": 100.0, "p90": 250.0},
        "match_delay_s": {"mean": 0.5},
        "pickup_eta_s": {"mean": 180.0},
        "pickup_distance_m": {"mean": 900.0},
        "cancelled": 50,
        "expired": 50,
        "declines": 70,
        "utilization": 0.4567,
        "tick_ms": {"p50": 3.0, "p99": 12.5},
        "sim_seconds": 3600.0,
        "wall_seconds": 36.0,
    }
    s2 = {"policy": "batch", "window_s": 10.0, "requests": 1000, "wait_s": {"mean": None}}
    text = format_summary([s1, s2])
    lines = text.splitlines()
    assert lines[0].split() == ["greedy", "batch-10s"]
    assert any(line.split()[:2] == ["requests", "1,000"] for line in lines)
    assert "90.0%" in text and "45.7%" in text and "100.0x" in text and "120.0" in text
    wait = next(line for line in lines if line.startswith("wait mean"))
    assert wait.split()[-1] == "-"
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert run_label({"policy": "greedy", "window_s": 2.0}) == "greedy"
