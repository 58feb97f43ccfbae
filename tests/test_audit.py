"""matcher.analysis.audit: the event-log contract (run-output.md rules 1-4) on hand-written logs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from eventlog import events_frame, in_time_order, tiny_log, write_run

from matcher.analysis.audit import check_log, check_run
from matcher.analysis.metrics import _EVENT_DTYPES


def rules(messages: list[str]) -> set[str]:
    return {m.split(":", 1)[0] for m in messages if not m.startswith("...")}


def test_valid_log_has_no_violation():
    assert check_log(events_frame(tiny_log())) == []


def test_valid_run_folder_passes(tmp_path):
    out = write_run(tmp_path / "run", tiny_log(), parts=3)  # hive folders shard=0..2
    assert check_run(out) == []


def test_double_terminal():
    rows = in_time_order(tiny_log() + [(750, "cancel", "r1", "d1")])
    msgs = check_log(events_frame(rows))
    assert any("request r1 has 2 terminal events (dropoff, cancel)" in m for m in msgs), msgs
    assert rules(msgs) == {"rule 1"}


def test_missing_terminal():
    rows = [r for r in tiny_log() if not (r[1] == "expire" and r[2] == "r5")]
    msgs = check_log(events_frame(rows))
    assert msgs == [
        "rule 1: request r5 never ends (no dropoff, cancel or expire; last event `request` at "
        "2014-04-01T08:18:20.000Z (seq 20))"
    ]


def test_event_after_terminal():
    rows = in_time_order(tiny_log() + [(750, "match", "r1", "d2")])
    msgs = check_log(events_frame(rows))
    assert any(
        m.startswith("rule 1: request r1 has a `match` event") and "after its terminal event" in m for m in msgs
    ), msgs
    assert rules(msgs) == {"rule 1"}


def test_request_event_missing_and_duplicated():
    rows = [r for r in tiny_log() if not (r[1] == "request" and r[2] == "r5")]
    rows = in_time_order(rows + [(11, "request", "r2")])
    msgs = check_log(events_frame(rows))
    assert "rule 1: request r5 has events but no `request` event" in msgs
    assert "rule 1: request r2 has 2 `request` events" in msgs


def test_driver_double_booked():
    # r3 goes to d1 while d1 still drives r1 (matched at 2, dropped off at 700)
    rows = [
        (r[0], r[1], r[2], "d1", *r[4:]) if r[2] == "r3" and r[1] in ("match", "accept", "cancel") else r
        for r in tiny_log()
    ]
    msgs = check_log(events_frame(rows))
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith("rule 2: driver d1 matched to request r3 at 2014-04-01T08:00:54.000Z")
    assert "its ride for request r1" in msgs[0]


def test_driver_double_booked_without_close():
    # d2's ride for r2 is never closed for d2 (no decline), then d2 gets r3
    rows = [r for r in tiny_log() if r[1] != "decline"]
    msgs = check_log(events_frame(rows))
    assert rules(msgs) == {"rule 2"}, msgs


def test_rematch_to_decliner():
    rows = in_time_order(tiny_log() + [(30, "match", "r2", "d2"), (35, "decline", "r2", "d2")])
    msgs = check_log(events_frame(rows))
    assert msgs == [
        "rule 3: request r2 matched again to driver d2 at 2014-04-01T08:00:30.000Z (seq 8) "
        "after that driver declined it"
    ]


def test_pickup_before_accept():
    rows = in_time_order([(4, "pickup", "r1", "d1") if r[1] == "pickup" and r[2] == "r1" else r for r in tiny_log()])
    msgs = check_log(events_frame(rows))
    assert msgs == [
        "rule 4: request r1, driver d1: pickup at 2014-04-01T08:00:04.000Z before accept at 2014-04-01T08:00:05.000Z"
    ]


def test_accept_and_dropoff_without_predecessor():
    rows = in_time_order([r for r in tiny_log() if not (r[2] == "r4" and r[1] in ("match", "pickup"))])
    msgs = check_log(events_frame(rows))
    assert "rule 4: request r4, driver d1: accept at 2014-04-01T08:13:30.000Z without a match" in msgs
    assert "rule 4: request r4, driver d1: dropoff at 2014-04-01T08:20:00.000Z without a pickup" in msgs


def test_fields_seq_kind_match_values():
    rows = tiny_log()
    rows[3] = (*rows[3][:4], {"pickup_eta_s": None}) if rows[3][1] == "match" else rows[3]
    assert rows[3][1] == "match"
    rows = rows + [(1400, "teleport", None, "d1"), (1400, "driver_offline", None, "d1", {"seq": 0})]
    msgs = check_log(events_frame(rows))
    assert "seq: 0 is used by 2 events" in msgs
    assert "kind: 1 event(s) of unknown kind 'teleport'" in msgs
    assert any(m.startswith("fields: match of request r1 to driver d1") and "pickup_eta_s" in m for m in msgs), msgs


def test_missing_column():
    assert check_log(events_frame(tiny_log()).drop("driver_id")) == ["schema: the event log lacks column(s) driver_id"]


def test_limit_caps_messages():
    rows = [(i, "request", f"r{i}") for i in range(30)]
    msgs = check_log(events_frame(rows), limit=5)
    assert len(msgs) == 6
    assert msgs[-1] == "... and 25 more requests without a terminal event"


def test_check_run_detects_a_wrong_summary(tmp_path):
    out = write_run(tmp_path / "run", tiny_log())
    s = json.loads((out / "summary.json").read_text())
    s["completed"] = 3
    s["wait_s"]["p90"] = 1.0
    del s["declines"]
    (out / "summary.json").write_text(json.dumps(s))
    msgs = check_run(out)
    assert "summary: completed is 3, the events give 2" in msgs
    assert "summary: wait_s.p90 is 1.0, the events give 190.0" in msgs
    assert "summary: key 'declines' is missing" in msgs


def test_check_run_without_summary(tmp_path):
    out = write_run(tmp_path / "run", tiny_log(), summary=False)
    assert check_run(out) == [f"summary: {out / 'summary.json'} is missing"]


def _big_log(n: int, rng) -> pl.DataFrame:
    """n completed rides over n // 10 drivers (a driver's rides never overlap), vectorized."""
    d = n // 10
    t_req = np.arange(n, dtype=np.int64) * 1000  # one request a second, ms
    drv = np.arange(n) % d  # a driver gets every d-th request: 10 rides, d seconds apart
    offsets = {"request": 0, "match": 2000, "accept": 5000, "pickup": 60000, "dropoff": 60000 + 1000 * (d // 2)}
    parts = []
    for k, (kind, off) in enumerate(offsets.items()):
        parts.append(
            pl.DataFrame(
                {
                    "ts": t_req + off + rng.integers(0, 500, n) * (kind == "request"),
                    "order": np.full(n, k),
                    "kind": [kind] * n,
                    "request_id": np.char.add("r", np.arange(n).astype(str)),
                    "driver_id": None if kind == "request" else np.char.add("d", drv.astype(str)),
                },
                schema_overrides={"driver_id": pl.String},
            )
        )
    ev = pl.concat(parts, how="vertical").sort("ts", "order").with_row_index("seq")
    return ev.with_columns(
        pl.col("seq").cast(pl.Int64),
        pl.col("ts").cast(pl.Datetime("ms", "UTC")),
        tick=pl.lit(0, pl.Int64),
        shard=pl.lit(0, pl.Int32),
        lat=pl.lit(40.7),
        lng=pl.lit(-74.0),
        pickup_eta_s=pl.when(pl.col("kind") == "match").then(55.0),
        pickup_distance_m=pl.when(pl.col("kind") == "match").then(300.0),
    ).select([pl.col(c).cast(t) for c, t in _EVENT_DTYPES.items()])


def test_vectorized_on_a_larger_log():
    ev = _big_log(50_000, np.random.default_rng(1))
    t0 = time.perf_counter()
    assert check_log(ev) == []
    assert time.perf_counter() - t0 < 10
    # double-book one driver: r7's match goes to r6's driver while r6 is on its way
    d6 = ev.filter((pl.col("request_id") == "r6") & (pl.col("kind") == "match"))["driver_id"].item()
    bad = ev.with_columns(
        pl.when((pl.col("request_id") == "r7") & pl.col("driver_id").is_not_null())
        .then(pl.lit(d6))
        .otherwise(pl.col("driver_id"))
        .alias("driver_id")
    )
    msgs = check_log(bad)
    assert rules(msgs) == {"rule 2"}, msgs
    assert any(f"driver {d6} matched to request r7" in m for m in msgs)


@pytest.mark.parametrize("parts", [1, 4])
def test_reads_partitioned_logs(tmp_path, parts):
    out = write_run(tmp_path / f"run{parts}", tiny_log(), parts=parts)
    assert check_run(out) == []
