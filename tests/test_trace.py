"""The Parquet trace format (contracts/trace.md): reading, quarantine, rejection, writing, validate."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from matcher.errors import TraceError
from matcher.io import trace
from matcher.io.schemas import DRIVERS, QUARANTINE_BASE, REQUESTS

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000  # ms


def _ts(ms_list, unit="ms", tz="UTC"):
    return pa.array(ms_list, pa.int64()).cast(pa.timestamp("ms", tz)).cast(pa.timestamp(unit, tz))


def requests_table(n=5, **overrides) -> pa.Table:
    cols = {
        "request_id": [f"r{i}" for i in range(n)],
        "request_time": _ts([T0 + 1000 * i for i in range(n)]),
        "pickup_lat": [40.7 + 0.001 * i for i in range(n)],
        "pickup_lng": [-74.0] * n,
    }
    cols.update(overrides)
    return pa.table(cols)


def write(tmp_path: Path, table: pa.Table, name="trace.parquet", **kw) -> str:
    path = tmp_path / name
    pq.write_table(table, path, **kw)
    return str(path)


def reasons(q: pa.Table) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in q.column("reason").to_pylist():
        out[r] = out.get(r, 0) + 1
    return out


# --------------------------------------------------------------------------- good files


def test_good_trace_normalized(tmp_path):
    t = requests_table(
        4,
        request_id=pa.array(["a", "b", "c", "d"], pa.large_string()),
        request_time=_ts([T0, T0 + 1, T0 + 2, T0 + 3], unit="ns", tz="America/New_York"),
        pickup_lat=pa.array([40.7, 40.71, 40.72, 40.73], pa.float32()),
        pickup_lng=pa.array([-74, -74, -73, -73], pa.int32()),
        ride_type=pa.array(["UberX", " pool ", "XL", None]).dictionary_encode(),
        trip_duration_s=pa.array([600, None, 0, 12], pa.int64()),
        extra_col=["x", "y", "z", "w"],
    )
    valid, q = trace.read_requests(write(tmp_path, t))
    assert valid.schema.equals(REQUESTS)
    assert q.num_rows == 0 and q.schema.names[:3] == QUARANTINE_BASE.names
    assert valid.column("request_id").to_pylist() == ["a", "b", "c", "d"]
    assert valid.column("request_time").cast(pa.int64()).to_pylist() == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert valid.column("pickup_lat").to_pylist() == [40.7, 40.71, 40.72, 40.73]  # float32 keeps its decimal value
    assert valid.column("ride_type").to_pylist() == ["uberx", "pool", "xl", "uberx"]
    assert valid.column("trip_duration_s").to_pylist() == [600.0, None, 0.0, 12.0]
    assert valid.column("dropoff_lat").null_count == 4


def test_naive_timestamp_is_utc_and_units(tmp_path):
    secs = [1_700_000_000, 1_700_000_060]
    for unit, factor in (("s", 1), ("ms", 1000), ("us", 10**6), ("ns", 10**9)):
        t = requests_table(2, request_time=pa.array([s * factor for s in secs], pa.timestamp(unit)))
        valid, _ = trace.read_requests(write(tmp_path, t, f"{unit}.parquet"))
        assert valid.column("request_time").type == pa.timestamp("ms", "UTC")
        assert valid.column("request_time").cast(pa.int64()).to_pylist() == [s * 1000 for s in secs]


def test_integer_ids_accepted(tmp_path):
    t = requests_table(3, request_id=pa.array([7, 8, 9], pa.int64()))
    valid, _ = trace.read_requests(write(tmp_path, t))
    assert valid.column("request_id").to_pylist() == ["7", "8", "9"]


def test_unsorted_times_are_sorted_stably(tmp_path):
    t = requests_table(5, request_time=_ts([T0 + 3000, T0 + 1000, T0 + 3000, T0, T0 + 1000]))
    path = write(tmp_path, t)
    valid, _ = trace.read_requests(path)
    assert valid.column("request_id").to_pylist() == ["r3", "r1", "r4", "r0", "r2"]  # ties keep input order
    streamed = pa.Table.from_batches(list(trace.iter_requests(path)))
    assert streamed.column("request_id").to_pylist() == ["r0", "r1", "r2", "r3", "r4"]  # streaming keeps input order
    rep = trace.validate(path)
    assert rep.ok and not rep.sorted and "not in time order" in rep.format()


def test_folder_is_one_dataset(tmp_path):
    folder = tmp_path / "trace"
    folder.mkdir()
    pq.write_table(requests_table(3), folder / "part-0.parquet")
    pq.write_table(requests_table(3, request_id=["x", "r1", "y"]), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")  # ignored like Spark/Hive markers
    valid, q = trace.read_requests(folder)
    assert valid.num_rows == 5
    assert q.column("row").to_pylist() == [4] and reasons(q) == {"duplicate_request_id": 1}


# --------------------------------------------------------------------------- unusable files


def test_not_parquet(tmp_path):
    p = tmp_path / "notes.parquet"
    p.write_text("request_id,request_time\nr1,2014-01-01\n")
    with pytest.raises(TraceError, match=r"notes\.parquet: not a readable Parquet trace"):
        trace.read_requests(p)


def test_missing_path(tmp_path):
    with pytest.raises(TraceError, match="nope.parquet"):
        trace.read_requests(tmp_path / "nope.parquet")


def test_truncated_parquet(tmp_path):
    src = write(tmp_path, requests_table(5000), "full.parquet")
    data = Path(src).read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=r"cut\.parquet: not a readable Parquet trace"):
        trace.read_requests(cut)
    # in a folder, the broken file is named even when another one is fine
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.parquet").write_bytes(data)
    (folder / "b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=r"b\.parquet: not a readable Parquet trace"):
        trace.read_requests(folder)


def test_truncated_real_sample(tmp_path):
    data = (REPO / "data" / "synth-small.parquet").read_bytes()
    cut = tmp_path / "half.parquet"
    cut.write_bytes(data[: len(data) // 2])
    rep = trace.validate(cut)
    assert not rep.ok and "half.parquet" in rep.format() and "\n" not in rep.format()


def test_missing_required_column(tmp_path):
    path = write(tmp_path, requests_table(3).drop_columns(["pickup_lng"]))
    with pytest.raises(TraceError, match=r"trace\.parquet: missing required column 'pickup_lng'"):
        trace.read_requests(path)


@pytest.mark.parametrize(
    "column,value",
    [
        ("pickup_lat", pa.array(["40.7", "40.7", "40.7"])),
        ("request_time", pa.array(["2014-04-01 00:00:00"] * 3)),
        ("request_time", pa.array([1, 2, 3], pa.int64())),
        ("request_id", pa.array([1.5, 2.5, 3.5])),
        ("ride_type", pa.array([1, 2, 3])),
        ("trip_duration_s", pa.array(["600"] * 3)),
    ],
)
def test_wrong_type(tmp_path, column, value):
    t = requests_table(3)
    t = t.drop_columns([column]) if column in t.column_names else t
    t = t.append_column(column, value)
    with pytest.raises(TraceError, match=rf"trace\.parquet: column '{column}' has type"):
        trace.read_requests(write(tmp_path, t))


def test_empty_trace(tmp_path):
    path = write(tmp_path, REQUESTS.empty_table())
    with pytest.raises(TraceError, match=r"trace\.parquet: holds no request \(0 rows\)"):
        trace.read_requests(path)


def test_all_rows_bad(tmp_path):
    path = write(tmp_path, requests_table(2, pickup_lat=[float("nan"), 99.0]))
    with pytest.raises(TraceError, match=r"holds no request \(all 2 rows quarantined: bad_pickup_coordinate 2\)"):
        trace.read_requests(path)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceError, match="no Parquet file"):
        trace.read_requests(tmp_path / "empty")


# --------------------------------------------------------------------------- bad rows


def test_bad_coordinates_exact_counts(tmp_path):
    nan, inf = float("nan"), float("inf")
    lat = [40.7, nan, inf, 91.0, -90.0, 40.7, 40.7, None, 40.7, 40.7, 40.7]
    lng = [-74.0, -74.0, -74.0, -74.0, 180.0, -181.0, -inf, -74.0, -74.0, -74.0, -74.0]
    dlat = [None] * 8 + [40.8, nan, 40.8]
    dlng = [None] * 8 + [-73.9, -73.9, None]
    t = requests_table(
        11,
        pickup_lat=lat,
        pickup_lng=lng,
        dropoff_lat=pa.array(dlat, pa.float64()),
        dropoff_lng=pa.array(dlng, pa.float64()),
    )
    valid, q = trace.read_requests(write(tmp_path, t))
    assert valid.column("request_id").to_pylist() == ["r0", "r4", "r8"]
    assert reasons(q) == {"bad_pickup_coordinate": 5, "missing_pickup_coordinate": 1, "bad_dropoff_coordinate": 2}
    assert q.column("row").to_pylist() == [1, 2, 3, 5, 6, 7, 9, 10]
    # the offending values are kept as text
    bad = q.filter(pa.compute.equal(q.column("row"), 3)).to_pylist()[0]
    assert bad["pickup_lat"] == "91" and bad["request_id"] == "r3" and bad["source"] == "requests"


def test_duplicate_and_null_ids_across_batches(tmp_path):
    ids = ["a", "b", None, "a", "", "c", "b", "a", "d"]
    path = write(tmp_path, requests_table(9, request_id=ids), row_group_size=2)
    q: list = []
    batches = list(trace.iter_requests(path, batch_rows=1, quarantine=q))
    got = [x for b in batches for x in b.column("request_id").to_pylist()]
    assert got == ["a", "b", "c", "d"]
    qt = trace.concat_quarantine(q)
    assert reasons(qt) == {"missing_request_id": 2, "duplicate_request_id": 3}
    assert sorted(qt.column("row").to_pylist()) == [2, 3, 4, 6, 7]


def test_duplicate_of_a_bad_row_is_not_a_duplicate(tmp_path):
    # the first row with id "a" is quarantined for its coordinate; the later good one stays
    t = requests_table(2, request_id=["a", "a"], pickup_lat=[float("nan"), 40.7])
    valid, q = trace.read_requests(write(tmp_path, t))
    assert valid.num_rows == 1 and reasons(q) == {"bad_pickup_coordinate": 1}


def test_ride_types(tmp_path):
    rt = ["uberx", "POOL", " xl", "black", None, "", "limo", "uber x", "pool"]
    valid, q = trace.read_requests(write(tmp_path, requests_table(9, ride_type=rt)))
    assert valid.column("ride_type").to_pylist() == ["uberx", "pool", "xl", "black", "uberx", "uberx", "pool"]
    assert reasons(q) == {"unknown_ride_type": 2}
    assert q.column("ride_type").to_pylist() == ["limo", "uber x"]


def test_trip_duration_and_times(tmp_path):
    dur = [600.0, -1.0, float("nan"), None, float("inf"), 0.0]
    rt = pa.array([T0, T0, T0, None, T0, 10**17], pa.int64()).cast(pa.timestamp("ms", "UTC"))
    valid, q = trace.read_requests(write(tmp_path, requests_table(6, trip_duration_s=dur, request_time=rt)))
    assert valid.column("request_id").to_pylist() == ["r0"]
    assert reasons(q) == {"bad_trip_duration": 3, "missing_request_time": 1, "bad_request_time": 1}


def test_huge_second_timestamps_do_not_overflow(tmp_path):
    rt = pa.array([1_700_000_000, 2**52, -(2**52)], pa.timestamp("s"))  # Parquet stores s as ms: 2**62 s won't write
    valid, q = trace.read_requests(write(tmp_path, requests_table(3, request_time=rt)))
    assert valid.num_rows == 1 and reasons(q) == {"bad_request_time": 2}


def test_drivers(tmp_path):
    t = pa.table(
        {
            "driver_id": ["d0", "d1", "d2", "d3", "d4", "d0", None, "d7", "d8"],
            "lat": [40.7, 40.7, 40.7, 40.7, 40.7, 40.7, 40.7, 140.0, 40.7],
            "lng": [-74.0] * 9,
            "vehicle_type": ["uberx", "XL", "bike", None, "black", "xl", "xl", "xl", "pool"],
            "rating": [4.9, 5.0, 4.0, 0.5, None, 4.0, 4.0, 4.0, 4.5],
            "online_from": _ts([T0] * 9),
            "online_until": _ts([T0 + 1, T0, T0, T0, T0 - 1, T0, T0, T0, None]),
        }
    )
    valid, q = trace.read_drivers(write(tmp_path, t, "drivers.parquet"))
    assert valid.schema.equals(DRIVERS)
    assert valid.column("driver_id").to_pylist() == ["d0", "d1"]
    assert valid.column("vehicle_type").to_pylist() == ["uberx", "xl"]
    assert reasons(q) == {
        "unknown_vehicle_type": 2,
        "bad_rating": 1,
        "bad_shift": 1,
        "duplicate_driver_id": 1,
        "missing_driver_id": 1,
        "bad_coordinate": 1,
    }
    assert set(q.column("source").to_pylist()) == {"drivers"}


def test_drivers_defaults_and_rejection(tmp_path):
    t = pa.table({"driver_id": ["a", "b"], "lat": [1.0, 2.0], "lng": [3.0, 4.0]})
    valid, q = trace.read_drivers(write(tmp_path, t, "d.parquet"))
    assert valid.column("vehicle_type").to_pylist() == ["uberx", "uberx"] and q.num_rows == 0
    with pytest.raises(TraceError, match=r"d2\.parquet: missing required column 'lat'"):
        trace.read_drivers(write(tmp_path, t.drop_columns(["lat"]), "d2.parquet"))
    with pytest.raises(TraceError, match=r"d3\.parquet: holds no driver"):
        trace.read_drivers(write(tmp_path, t.slice(0, 0), "d3.parquet"))


def test_quarantine_keeps_all_columns_and_handles_odd_types(tmp_path):
    t = requests_table(
        2,
        pickup_lat=[float("nan"), 40.0],
        nested=pa.array([{"a": 1}, {"a": 2}]),
        listy=pa.array([[1, 2], []]),
        raw=pa.array([b"\xff\x00", b"ok"]),
        reason=["user column named reason", "x"],
    )
    _, q = trace.read_requests(write(tmp_path, t))
    row = q.to_pylist()[0]
    assert row["reason"] == "bad_pickup_coordinate" and row["reason_input"] == "user column named reason"
    assert row["nested"] == "{'a': 1}" and row["listy"] == "[1, 2]" and row["raw"] == "\\xff\x00"
    out = tmp_path / "OUT" / "quarantine.parquet"
    trace.write_quarantine([q], out)
    assert pq.read_table(out).num_rows == 1


# --------------------------------------------------------------------------- writing


def test_write_table_row_groups_and_zstd(tmp_path):
    n = 300_000
    t = requests_table(
        n,
        request_id=[f"r{i}" for i in range(n)],
        request_time=_ts(np.arange(n) + T0),
        pickup_lat=np.full(n, 40.7),
        pickup_lng=np.full(n, -74.0),
    )
    path = tmp_path / "big.parquet"
    trace.write_table(t, path, REQUESTS)
    md = pq.ParquetFile(path).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [131072, 131072, 37856]
    assert md.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_schema(path).equals(REQUESTS)
    assert os.listdir(tmp_path) == ["big.parquet"]


def test_write_is_atomic(tmp_path):
    path = tmp_path / "t.parquet"
    trace.write_table(requests_table(3), path, REQUESTS)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        trace.write_table(pa.table({"x": [1]}), path, REQUESTS)  # lacks required columns
    assert path.read_bytes() == before
    with pytest.raises(RuntimeError), trace.AtomicParquetWriter(path, REQUESTS) as w:
        w.write(requests_table(2))
        raise RuntimeError("boom")
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["t.parquet"]


def test_write_quarantine_empty(tmp_path):
    out = tmp_path / "quarantine.parquet"
    trace.write_quarantine([], out)
    t = pq.read_table(out)
    assert t.num_rows == 0 and t.schema.names == QUARANTINE_BASE.names


def test_write_quarantine_mixed_sources(tmp_path):
    _, q1 = trace.read_requests(write(tmp_path, requests_table(2, pickup_lat=[91.0, 1.0]), "r.parquet"))
    d = pa.table({"driver_id": ["a", "a"], "lat": [1.0, 1.0], "lng": [1.0, 1.0], "shift_note": ["x", "y"]})
    _, q2 = trace.read_drivers(write(tmp_path, d, "d.parquet"))
    out = tmp_path / "quarantine.parquet"
    trace.write_quarantine([q1, q2], out)
    t = pq.read_table(out)
    assert t.column("source").to_pylist() == ["requests", "drivers"]
    assert t.schema.names[:3] == ["source", "row", "reason"] and "shift_note" in t.schema.names


# --------------------------------------------------------------------------- validate + CLI


def test_validate_report(tmp_path):
    path = write(tmp_path, requests_table(4, pickup_lat=[40.0, 40.0, 95.0, 40.0], request_id=["a", "b", "c", "a"]))
    rep = trace.validate(path)
    assert rep.ok and rep.rows == 4 and rep.valid == 2
    assert rep.quarantined == {"bad_pickup_coordinate": 1, "duplicate_request_id": 1}
    text = rep.format()
    assert "bad_pickup_coordinate 1" in text and "duplicate_request_id 1" in text and "4 rows" in text
    bad = trace.validate(tmp_path / "missing.parquet")
    assert not bad.ok and bad.format().startswith("rejected: ")


def _matcher(*args):
    return subprocess.run(
        [sys.executable, "-m", "matcher", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_cli_validate_good_and_bad(tmp_path):
    good = write(tmp_path, requests_table(3))
    drivers = write(tmp_path, pa.table({"driver_id": ["a"], "lat": [1.0], "lng": [1.0]}), "drivers.parquet")
    r = _matcher("validate", good, "--drivers", drivers)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ") and "Traceback" not in r.stderr
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    r = _matcher("validate", str(bad))
    assert r.returncode == 1
    assert len(r.stdout.strip().splitlines()) == 1 and "bad.parquet" in r.stdout
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    r = _matcher("validate", good, "--drivers", str(bad))
    assert r.returncode == 1 and "bad.parquet" in r.stdout


def test_cli_validate_in_process(tmp_path, capsys):
    from matcher.cli import main

    assert main(["validate", write(tmp_path, requests_table(3))]) == 0
    assert main(["validate", write(tmp_path, requests_table(0), "empty.parquet")]) == 1
    out = capsys.readouterr().out
    assert "empty.parquet: holds no request" in out


# --------------------------------------------------------------------------- fuzz

_COLUMNS = list(REQUESTS.names) + ["extra", "reason"]
_TYPES = [
    pa.string(),
    pa.large_string(),
    pa.int64(),
    pa.int8(),
    pa.uint64(),
    pa.float32(),
    pa.float64(),
    pa.bool_(),
    pa.timestamp("s"),
    pa.timestamp("ns", "Asia/Kolkata"),
    pa.timestamp("ms", "UTC"),
    pa.binary(),
    pa.null(),
    pa.date32(),
    pa.decimal128(12, 3),
    pa.duration("s"),
    pa.list_(pa.int32()),
]

_weird_text = st.one_of(
    st.sampled_from(["uberx", "POOL", "xl", "black", "", " ", "nan", "inf", "\x00", "é", "🚕", "1e400", "-0"]),
    st.text(max_size=6),
)
_float = st.one_of(
    st.floats(-95, 95),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([40.7, -74.0, 0.0, 1e308, -1e-308]),
)


def _value(t: pa.DataType):
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _weird_text
    if pa.types.is_integer(t):
        info = np.iinfo(t.to_pandas_dtype())
        return st.integers(int(info.min), int(info.max))
    if pa.types.is_floating(t):
        return _float.map(
            lambda x: (
                float(np.float32(x))
                if t == pa.float32() and math.isfinite(x) and abs(x) < 3e38
                else (x if t != pa.float32() else float("nan"))
            )
        )
    if pa.types.is_boolean(t):
        return st.booleans()
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        return st.integers(0, 4_000_000_000) | st.integers(-(2**62), 2**62)
    if pa.types.is_binary(t):
        return st.binary(max_size=4)
    if pa.types.is_null(t):
        return st.none()
    if pa.types.is_date(t):
        return st.integers(-100_000, 100_000)
    if pa.types.is_decimal(t):
        return st.decimals(min_value=-999_999_999, max_value=999_999_999, places=3, allow_nan=False)
    return st.lists(st.integers(-5, 5), max_size=2)


@st.composite
def random_tables(draw):
    n = draw(st.integers(0, 6))
    names = draw(st.lists(st.sampled_from(_COLUMNS), unique=True, max_size=len(_COLUMNS)))
    if draw(st.integers(0, 4)) > 0:  # usually the required columns are there, so rows get checked
        names = list(dict.fromkeys(["request_id", "request_time", "pickup_lat", "pickup_lng"] + names))
    cols, fields = [], []
    messy = draw(st.integers(0, 9)) < 3  # most tables use the contract's types, so rows reach the row checks
    for name in names:
        default = REQUESTS.field(name).type if name in REQUESTS.names and not (messy and draw(st.booleans())) else None
        t = default if default is not None else draw(st.sampled_from(_TYPES))
        value = st.integers(0, 9).flatmap(lambda k, t=t: st.none() if k == 0 else _value(t))  # ~10 % nulls
        values = draw(st.lists(value, min_size=n, max_size=n))
        if (pa.types.is_timestamp(t) and not pa.types.is_integer(t)) or pa.types.is_duration(t):
            arr = pa.array(values, pa.int64()).cast(t)
        elif pa.types.is_date(t):
            arr = pa.array(values, pa.int32()).cast(t)
        else:
            arr = pa.array(values, t)
        if pa.types.is_string(t) and draw(st.booleans()):
            arr = arr.dictionary_encode()
        cols.append(arr)
        fields.append(name)
    return pa.table(cols, names=fields) if fields else pa.table({"only": pa.nulls(n)})


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(table=random_tables(), batch_rows=st.integers(1, 4))
def test_fuzz_read_requests_never_crashes(tmp_path, table, batch_rows):
    path = tmp_path / "fuzz.parquet"
    try:
        pq.write_table(table, path, row_group_size=3)
    except (pa.ArrowException, ValueError):
        assume(False)  # e.g. timestamp[s] values too large for Parquet's ms: not a file anyone can hand us
    try:
        valid, q = trace.read_requests(path)
    except TraceError as e:
        assert "fuzz.parquet" in str(e)
        event("rejected: " + str(e).split(": ", 1)[1][:20])
    else:
        event(f"read: {'some valid' if valid.num_rows else 'none valid'}, {'some' if q.num_rows else 'no'} quarantine")
        assert valid.num_rows + q.num_rows == table.num_rows
        assert valid.schema.equals(REQUESTS)
        ids = valid.column("request_id").to_pylist()
        assert len(ids) == len(set(ids)) and None not in ids
        times = valid.column("request_time").cast(pa.int64()).to_pylist()
        assert times == sorted(times)
        trace.write_quarantine([q], tmp_path / "q.parquet")
    try:
        q2: list = []
        n = sum(b.num_rows for b in trace.iter_requests(path, batch_rows=batch_rows, quarantine=q2))
        assert n + sum(t.num_rows for t in q2) == table.num_rows
    except TraceError:
        pass
    rep = trace.validate(path)
    assert rep.ok in (True, False) and rep.format()


def test_fmt_times_are_utc():
    ms = int(datetime(2014, 4, 4, 4, 0, tzinfo=UTC).timestamp() * 1000)
    assert trace._fmt_ms(ms) == "2014-04-04 04:00:00Z"
