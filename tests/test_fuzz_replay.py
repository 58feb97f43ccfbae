"""Fuzz: option values and trace mutations through `matcher replay`, end to end (issue 13).

Whatever the options and the trace, `matcher replay` exits 0, 1 or 2 with no traceback and no
"internal error"; a failure is one line. When it exits 0 the run folder keeps the contract's rules
1-4 (matcher.analysis.audit.check_run), every valid request of the trace has its events (and only
those), the quarantine holds exactly the other rows, report.html is written and the absolute output
folder is the last line printed.

Examples per run: ``min(profile's max_examples, 12)``; the ``ci`` profile (HYPOTHESIS_PROFILE=ci,
set by .ci/run) runs a handful; MATCHER_FUZZ_EXAMPLES=200 for a long local hunt. Traces are tiny (at most 12 requests over a few minutes).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from matcher.analysis.audit import check_run
from matcher.analysis.metrics import read_events
from matcher.cli import main
from matcher.io import trace as trace_io
from matcher.io.schemas import TERMINAL_KINDS

REPO = Path(__file__).resolve().parents[1]
BASE = pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 12)
NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- options

# each option: values a user could well give (kept small, so a run stays short) and wrong ones
_WRONG = ["nan", "inf", "-inf", "-1", "0", "1e400", "abc", "", "1e30"]
OPTIONS: dict[str, list[str]] = {
    "--window": ["0.5", "2", "10", "3600", "0.05"],
    "--patience": ["30", "300", "1"],
    "--accept-prob": ["0", "0.5", "1"],
    "--offer-timeout": ["5", "20"],
    "--cancel-base": ["0", "0.5", "1"],
    "--cancel-per-min": ["0", "0.1", "1"],
    "--gps-dropout-rate": ["0", "5", "60"],
    "--speed": ["0.5", "7", "100"],
    "--radius": ["10", "2000", "4500"],
    "--k": ["1", "5", "1000"],
    "--gps-timeout": ["1", "30"],
    "--seed": ["0", "7", str(2**63 - 1)],
    "--checkpoint-every": ["0", "60", "3600"],
    "--shards": ["1", "2", "3"],
    "--drivers": ["1", "3", "8"],
    "--policy": ["batch", "greedy", "fastest"],
}


@st.composite
def options(draw) -> list[str]:
    out: list[str] = []
    for flag in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=5, unique=True)):
        good = draw(st.integers(0, 5)) > 0 or flag == "--policy"  # one value in six is wrong
        value = draw(st.sampled_from(OPTIONS[flag] if good else _WRONG))
        out.append(f"{flag}={value}")
    if draw(st.booleans()):
        out.append("--record-locations")
    if not any(o.startswith("--drivers") for o in out):
        out.append("--drivers=4")
    if any(o.startswith("--shards") for o in out):
        out.append("--backend=inprocess")  # shards in this process: no Ray in a fuzz example
    return out


# --------------------------------------------------------------------------- trace mutations


def _set(t: pa.Table, col: str, row: int, value) -> pa.Table:
    vals = t.column(col).to_pylist()
    vals[row % len(vals)] = value
    f = t.schema.field(col).with_nullable(True)
    return t.set_column(t.column_names.index(col), f, pa.array(vals, f.type))


CELL_EDITS = {
    "pickup_lat": [NAN, INF, 91.0, None, -90.0],
    "pickup_lng": [NAN, -181.0, None, 180.0],
    "dropoff_lat": [NAN, None, 95.0],
    "trip_duration_s": [-1.0, NAN, 1e12, 0.0, 86_400.0],
    "ride_type": ["helicopter", None, " XL ", "pool"],
    "request_id": [None, "", "dup"],
}


@st.composite
def traces(draw) -> tuple[pa.Table, str]:
    """(table, layout): the base trace with a few cell edits, rows reordered or duplicated, columns
    dropped or retyped; layout: "file", "folder" (two files) or "hive" (ride_type=... folders)."""
    t = BASE
    n = draw(st.integers(1, BASE.num_rows))
    t = t.slice(0, n)
    for _ in range(draw(st.integers(0, 4))):
        col = draw(st.sampled_from(sorted(CELL_EDITS)))
        value = draw(st.sampled_from(CELL_EDITS[col]))
        if col == "request_id" and value == "dup":
            value = t.column("request_id")[0].as_py()
        t = _set(t, col, draw(st.integers(0, n - 1)), value)
    if draw(st.booleans()):
        t = t.take(pa.array(draw(st.permutations(range(n)))))
    if draw(st.integers(0, 4)) == 0:
        t = pa.concat_tables([t, t.slice(0, 1)])  # a duplicated row
    for col in ("dropoff_lat", "dropoff_lng", "trip_duration_s", "ride_type"):
        if draw(st.integers(0, 5)) == 0:
            t = t.drop_columns([col])
    if draw(st.integers(0, 4)) == 0:
        i = t.column_names.index("pickup_lat")
        t = t.set_column(i, pa.field("pickup_lat", pa.float32()), t.column(i).cast(pa.float32()))
    if draw(st.integers(0, 4)) == 0:
        i = t.column_names.index("request_time")
        t = t.set_column(i, pa.field("request_time", pa.timestamp("us")), t.column(i).cast(pa.timestamp("us")))
    layout = draw(st.sampled_from(["file", "file", "folder", "hive"] if "ride_type" in t.column_names else ["file"]))
    return t, layout


def _write(t: pa.Table, layout: str, root: Path) -> Path:
    if layout == "file":
        pq.write_table(t, root / "trace.parquet")
        return root / "trace.parquet"
    folder = root / "trace"
    folder.mkdir()
    if layout == "folder":
        half = max(1, t.num_rows // 2)
        pq.write_table(t.slice(0, half), folder / "a.parquet")
        pq.write_table(t.slice(half), folder / "b.parquet")
        return folder
    rides = t.column("ride_type").to_pylist()
    rest = t.drop_columns(["ride_type"])
    for value in sorted(set(rides), key=lambda v: (v is None, str(v))):
        idx = [i for i, r in enumerate(rides) if r == value]
        name = "__HIVE_DEFAULT_PARTITION__" if value is None else value.replace(" ", "%20")
        (folder / f"ride_type={name}").mkdir()
        pq.write_table(rest.take(pa.array(idx)), folder / f"ride_type={name}" / "part.parquet")
    return folder


# --------------------------------------------------------------------------- the property


def _examples() -> int:
    """MATCHER_FUZZ_EXAMPLES=N for a long local run; else the profile's count, at most 12."""
    return int(os.environ.get("MATCHER_FUZZ_EXAMPLES", "0")) or min(settings.default.max_examples, 12)


@pytest.mark.slow
@settings(
    max_examples=_examples(),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tr=traces(), opts=options())
def test_replay_never_crashes_and_a_good_exit_keeps_the_contract(tr, opts):
    table, layout = tr
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = _write(table, layout, root)
        out = root / "out"
        so, se = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            try:
                code = main(["replay", str(path), "--out", str(out), "--quiet", *opts])
            except SystemExit as e:
                code = e.code
        err = se.getvalue()
        event(f"exit {code}")
        assert code in (0, 1, 2), err
        assert "Traceback" not in err and "internal error" not in err, err
        # the replay announces its folder once the inputs are read (sim.replay._announce)
        err_lines = [ln for ln in err.strip().splitlines() if not ln.startswith("matcher: output folder ")]
        if code != 0:
            assert len(err_lines) == 1, err
            return
        assert [ln for ln in err_lines if not ln.startswith("matcher: warning: ")] == [], err
        assert so.getvalue().splitlines()[-1] == str(out.resolve())
        assert check_run(out) == []
        valid, quarantined = trace_io.read_requests(path)
        assert valid.num_rows + quarantined.num_rows == table.num_rows
        assert pq.read_table(out / "quarantine.parquet").num_rows == quarantined.num_rows
        ev = read_events(out)
        requested = set(ev.filter(pl.col("kind") == "request")["request_id"].to_list())
        assert requested == set(valid.column("request_id").to_pylist())  # every valid request, and only those
        ended = ev.filter(pl.col("kind").is_in(list(TERMINAL_KINDS)))
        assert set(ended["request_id"].to_list()) == requested  # and each one ended
        assert (out / "report.html").is_file()
