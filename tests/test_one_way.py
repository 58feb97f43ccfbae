"""One way to do each thing (issue 11): the policy and driver status through their enums,
coordinate validity through ``geo.valid_coords``, every file through one atomic, fsynced commit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher.config import Policy
from matcher.core import geo
from matcher.core.driver_table import DriverTable, Pings
from matcher.core.states import DriverStatus
from matcher.errors import MatcherError
from matcher.io import atomic, importers, rows, writers
from matcher.io.eventlog import LocationLog, PartWriter
from matcher.sim.compare import parse_policies, policy_label

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "matcher"


def _sources_matching(pattern: str, skip: tuple[str, ...] = ()) -> list[str]:
    rx = re.compile(pattern)
    hits = []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = str(p.relative_to(REPO))
        if rel in skip:
            continue
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if rx.search(line.split("#", 1)[0]):  # code, not comments
                hits.append(f"{rel}:{n}: {line.strip()}")
    return hits


# ---------------------------------------------------------------------- policy


def test_policy_keeps_the_cli_and_file_spelling():
    assert [p.value for p in Policy] == ["batch", "greedy"]
    assert Policy("greedy") is Policy.GREEDY
    assert json.dumps({"policy": Policy.BATCH}) == '{"policy": "batch"}'
    assert Policy.BATCH == "batch"  # a value read back from summary.json compares equal
    with pytest.raises(ValueError):
        Policy("fastest")


def test_compare_parses_policies_into_the_enum():
    got = parse_policies("greedy,batch:3,batch")
    assert got == [("greedy", Policy.GREEDY, None), ("batch-3s", Policy.BATCH, 3.0), ("batch-2s", Policy.BATCH, 2.0)]
    assert all(type(p) is Policy for _, p, _ in got)
    assert policy_label(Policy.BATCH, 10.0) == "batch-10s"
    with pytest.raises(MatcherError, match="unknown policy"):
        parse_policies("fastest")


def test_no_policy_string_compared_in_the_package():
    lit = r"""["'](batch|greedy)["']"""
    found = _sources_matching(rf"[=!]=\s*{lit}|{lit}\s*[=!]=|in \({lit}", skip=("matcher/config.py",))
    assert found == []


# ---------------------------------------------------------------- driver status


def test_no_driver_status_compared_to_a_number():
    assert _sources_matching(r"status\b[^=!<>]*[=!]=\s*-?\d") == []


def test_location_log_names_statuses_as_the_enum_does():
    assert LocationLog.STATUS.to_pylist() == [s.name.lower() for s in DriverStatus]
    assert [int(s) for s in DriverStatus] == list(range(len(DriverStatus)))  # codes index STATUS


# --------------------------------------------------------- coordinate validity

_EDGE = [0.0, 45.5, 89.999999, 90.0, 90.000001, 179.99999, 180.0, 180.00001, 1e300, np.inf, np.nan]
_coord = st.sampled_from(_EDGE).flatmap(lambda v: st.sampled_from([v, -v]))


@st.composite
def _points(draw):
    n = draw(st.integers(1, 12))
    lat = np.array(draw(st.lists(_coord, min_size=n, max_size=n)))
    lng = np.array(draw(st.lists(_coord, min_size=n, max_size=n)))
    return lat, lng


@given(_points())
def test_every_coordinate_check_is_valid_coords(pts):
    lat, lng = pts
    n = len(lat)
    ok = geo.valid_coords(lat, lng)
    assert np.array_equal(ok, np.isfinite(lat) & np.isfinite(lng) & (np.abs(lat) <= 90) & (np.abs(lng) <= 180))
    # the trace reader's row check
    assert np.array_equal(rows._check_coords(lat, lng), ~ok)
    # the importers' pickup check (0 and NaN are "missing_gps", reported first)
    reason = importers._pickup_reasons(lat, lng, np.zeros(n, bool))
    missing = np.isnan(lat) | np.isnan(lng) | (lat == 0) | (lng == 0)
    assert np.array_equal(reason == "bad_pickup_coordinate", ~ok & ~missing)
    # the shard's ping check
    pings = Pings(
        key=np.arange(n, dtype=np.int64),
        lat=lat,
        lng=lng,
        heading=np.zeros(n, np.float32),
        speed=np.zeros(n, np.float32),
        status=np.full(n, DriverStatus.AVAILABLE, np.int8),
        vehicle=np.zeros(n, np.int8),
        rating=np.full(n, 5.0, np.float32),
        ts=np.zeros(n),
        owned=np.ones(n, bool),
        shared=np.zeros(n, bool),
    )
    t = DriverTable(4)
    assert t.apply_pings(pings)["bad_coordinate"] == int((~ok).sum())
    assert sorted(t.col("key")) == list(np.flatnonzero(ok))


# ------------------------------------------------------------------ atomic files


def test_only_the_atomic_module_renames_or_fsyncs():
    assert _sources_matching(r"os\.(replace|rename|fsync)\b|\.rename\(", skip=("matcher/io/atomic.py",)) == []


@pytest.fixture
def fs_calls(monkeypatch):
    """Records ("fsync", path) and ("replace", src, dst), in order, from the real calls."""
    calls: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        calls.append(("replace", os.path.abspath(src), os.path.abspath(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def _writers(folder: Path):
    table = pa.table({"a": pa.array([1, 2, 3], pa.int64())})
    yield "json", lambda: atomic.write_json(folder / "x.json", {"a": 1})
    yield "text", lambda: atomic.write_text(folder / "x.html", "<p>")
    yield "parquet", lambda: writers.write_table(table, folder / "t.parquet")
    yield "quarantine", lambda: writers.write_quarantine([], folder / "q.parquet")
    yield "event part", lambda: PartWriter(folder / "events").write(table)

    def stream():
        with writers.AtomicParquetWriter(folder / "s.parquet", table.schema, row_group_rows=2) as w:
            w.write(table)
            w.write(table)

    yield "streamed parquet", stream

    def raw():
        with atomic.atomic_path(folder / "ckpt.pkl") as tmp, open(tmp, "wb") as f:
            f.write(b"state")

    yield "checkpoint", raw


def test_every_writer_fsyncs_the_file_before_renaming_it(tmp_path, fs_calls):
    for name, write in _writers(tmp_path):
        fs_calls.clear()
        write()
        renames = [c for c in fs_calls if c[0] == "replace"]
        assert len(renames) == 1, name
        _, src, dst = renames[0]
        i = fs_calls.index(renames[0])
        assert ("fsync", src) in fs_calls[:i], f"{name}: {src} renamed without an fsync"
        assert ("fsync", os.path.dirname(dst)) in fs_calls[i:], f"{name}: the folder of {dst} not synced"
        assert os.path.exists(dst) and not os.path.exists(src)
        assert list(Path(os.path.dirname(dst)).glob(".*.tmp")) == [], name


def test_a_failed_write_leaves_no_file_and_no_temp(tmp_path):
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []
