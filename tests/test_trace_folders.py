"""Trace folders (docs/trace.md): hive partitions are columns, nothing in a folder is skipped silently,
and a CSV or JSON file given as a trace is pointed to `matcher import`."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matcher.errors import TraceError
from matcher.io import trace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base() -> pa.Table:
    return pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 40)


def _partitioned(root: Path, base: pa.Table, key: str = "ride_type", values=("pool", "xl")) -> list[int]:
    """``base`` without its ``key`` column, split into KEY=VALUE folders; returns the rows per folder."""
    t = base.drop_columns([key]) if key in base.column_names else base
    n = t.num_rows // len(values)
    sizes = []
    for i, v in enumerate(values):
        folder = root / f"{key}={v}"
        folder.mkdir(parents=True)
        part = t.slice(i * n, n)
        pq.write_table(part, folder / "part-0.parquet")
        sizes.append(part.num_rows)
    return sizes


def test_hive_partition_column_is_read(tmp_path, base):
    sizes = _partitioned(tmp_path / "t", base)
    valid, q = trace.read_requests(tmp_path / "t")
    assert q.num_rows == 0
    assert valid.num_rows == sum(sizes)
    rides = valid.column("ride_type").to_pylist()
    assert (rides.count("pool"), rides.count("xl")) == tuple(sizes)
    rep = trace.validate(tmp_path / "t")
    assert rep.ok and rep.valid == sum(sizes) and rep.files == 2


def test_hive_partition_value_is_checked_like_a_column(tmp_path, base):
    _partitioned(tmp_path / "t", base, values=("pool", "helicopter"))
    valid, q = trace.read_requests(tmp_path / "t")
    assert set(q.column("reason").to_pylist()) == {"unknown_ride_type"}
    assert "ride_type" in q.column_names and set(q.column("ride_type").to_pylist()) == {"helicopter"}
    assert set(valid.column("ride_type").to_pylist()) == {"pool"}


def test_hive_escapes_and_default_partition(tmp_path, base):
    _partitioned(tmp_path / "t", base, values=("%20XL%20", "__HIVE_DEFAULT_PARTITION__"))
    valid, q = trace.read_requests(tmp_path / "t")
    assert q.num_rows == 0
    assert set(valid.column("ride_type").to_pylist()) == {"xl", "uberx"}  # " XL " trimmed; null is uberx


def test_numeric_partition_typed_or_refused(tmp_path, base):
    _partitioned(tmp_path / "ok", base, key="trip_duration_s", values=("600", "1200"))
    valid, _ = trace.read_requests(tmp_path / "ok")
    assert set(valid.column("trip_duration_s").to_pylist()) == {600.0, 1200.0}
    _partitioned(tmp_path / "bad", base, key="trip_duration_s", values=("600", "long"))
    with pytest.raises(TraceError, match=r"trip_duration_s='long' is not a number"):
        trace.read_requests(tmp_path / "bad")


def test_unknown_partition_key_is_an_extra_column(tmp_path, base):
    _partitioned(tmp_path / "t", base, key="city", values=("nyc", "sf"))
    valid, q = trace.read_requests(tmp_path / "t")
    assert valid.num_rows == base.num_rows and q.num_rows == 0


def test_partition_key_also_in_file_is_refused(tmp_path, base):
    (tmp_path / "t" / "ride_type=pool").mkdir(parents=True)
    pq.write_table(base, tmp_path / "t" / "ride_type=pool" / "p.parquet")
    with pytest.raises(TraceError, match=r"p\.parquet: column 'ride_type' is both in the file and a partition"):
        trace.read_requests(tmp_path / "t")


def test_mixed_partitioned_and_flat_files_are_refused(tmp_path, base):
    _partitioned(tmp_path / "t", base)
    pq.write_table(base.drop_columns(["ride_type"]), tmp_path / "t" / "loose.parquet")
    with pytest.raises(TraceError, match="hive partition folders differ"):
        trace.read_requests(tmp_path / "t")


def test_broken_link_inside_a_folder_is_named(tmp_path, base):
    (tmp_path / "t").mkdir()
    pq.write_table(base, tmp_path / "t" / "a.parquet")
    os.symlink(tmp_path / "gone.parquet", tmp_path / "t" / "b.parquet")
    with pytest.raises(TraceError) as e:
        trace.read_requests(tmp_path / "t")
    assert str(tmp_path / "t" / "b.parquet") in str(e.value)


def test_hidden_and_underscore_files_are_skipped(tmp_path, base):
    (tmp_path / "t").mkdir()
    pq.write_table(base, tmp_path / "t" / "a.parquet")
    (tmp_path / "t" / "_SUCCESS").write_text("")
    (tmp_path / "t" / ".a.parquet.crc").write_text("x")
    valid, _ = trace.read_requests(tmp_path / "t")
    assert valid.num_rows == base.num_rows


@pytest.mark.parametrize(
    "name, text, kind",
    [
        ("trips.csv", "request_id,request_time\nr1,2026-01-05\n", "CSV"),
        ("trips.parquet", "Date/Time,Lat,Lon,Base\n4/1/2014 0:11:00,40.7,-74.0,B02512\n", "CSV"),
        ("trips.json", '[{"request_id": "r1"}]', "JSON"),
        ("trips.jsonl", '{"request_id": "r1"}\n', "JSON"),
    ],
)
def test_csv_or_json_given_as_a_trace_hints_import(tmp_path, name, text, kind):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(TraceError) as e:
        trace.read_requests(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: not a readable Parquet trace (looks like {kind}")
    assert "matcher import" in msg


def test_csv_inside_a_trace_folder_is_named_with_the_hint(tmp_path, base):
    (tmp_path / "t").mkdir()
    pq.write_table(base, tmp_path / "t" / "a.parquet")
    (tmp_path / "t" / "b.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TraceError) as e:
        trace.read_requests(tmp_path / "t")
    assert str(tmp_path / "t" / "b.csv") in str(e.value) and "matcher import" in str(e.value)
