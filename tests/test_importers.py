"""Importers of public trip data, on small copies of the real files (tests/data/README.md) and on crafted CSVs."""

from __future__ import annotations

import csv
import gzip
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matcher.errors import TraceError
from matcher.io import trace
from matcher.io.importers import IMPORTERS, import_nyc_uber_2014, import_tlc_yellow, local_to_utc, quarantine_path
from matcher.io.schemas import REQUESTS

DATA = Path(__file__).resolve().parent / "data"  # committed cuts of the real files (tests/data/README.md)
UBER = DATA / "nyc-uber-2014"
TLC = DATA / "nyc-tlc-yellow-samples"
NY = ZoneInfo("America/New_York")
UBER_SAMPLE_ROWS = 12_478  # 9,978 rows of April (its first 1,000 and all of 4 April) + 5 x 500
APRIL_SAMPLE_ROWS = 9_978


def _csv_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- local time -> UTC


def _zoneinfo_utc_ms(naive: datetime) -> int:
    return int(naive.replace(tzinfo=NY, fold=0).astimezone(UTC).timestamp() * 1000)


@pytest.mark.parametrize("first", [datetime(2014, 11, 1, 23, 0), datetime(2014, 3, 8, 23, 0)])
def test_local_to_utc_matches_zoneinfo_across_dst(first):
    # every minute from 23:00 the night before to 05:00: covers the fall-back repeat and the spring-forward gap
    naive = [first + timedelta(minutes=m) for m in range(6 * 60 + 1)]
    arr = pa.array(naive, pa.timestamp("s"))
    got = local_to_utc(arr).cast(pa.int64()).to_pylist()
    assert got == [_zoneinfo_utc_ms(t) for t in naive]


def test_local_to_utc_crafted_instants():
    cases = {
        "2014-11-02 00:59:00": "2014-11-02 04:59:00",  # EDT
        "2014-11-02 01:30:00": "2014-11-02 05:30:00",  # ambiguous: the first occurrence (EDT)
        "2014-11-02 02:00:00": "2014-11-02 07:00:00",  # EST
        "2014-03-09 01:59:00": "2014-03-09 06:59:00",  # EST
        "2014-03-09 02:30:00": "2014-03-09 07:30:00",  # does not exist: read with the offset before (EST)
        "2014-03-09 03:00:00": "2014-03-09 07:00:00",  # EDT
        "2014-07-04 12:00:00": "2014-07-04 16:00:00",
        "2014-01-15 12:00:00": "2014-01-15 17:00:00",
    }
    naive = pa.array([datetime.fromisoformat(k) for k in cases], pa.timestamp("s"))
    got = local_to_utc(naive).to_pylist()
    want = [datetime.fromisoformat(v).replace(tzinfo=UTC) for v in cases.values()]
    assert got == want
    assert local_to_utc(pa.array([None], pa.timestamp("s"))).to_pylist() == [None]


# --------------------------------------------------------------------------- Uber 2014, real files


def test_uber_all_six_months(tmp_path):
    files = sorted(UBER.glob("uber-raw-data-*14.csv.gz"))
    assert len(files) == 6
    expected = 0
    for f in files:
        with gzip.open(f, "rt") as fh:
            expected += sum(1 for _ in fh) - 1  # minus the header
    out = tmp_path / "uber.parquet"
    rep = import_nyc_uber_2014([str(f) for f in files], str(out))
    assert expected == UBER_SAMPLE_ROWS
    assert rep.rows_read == expected and rep.rows_written == expected and rep.quarantined == {}
    assert not Path(quarantine_path(str(out))).exists()
    t = pq.read_table(out)
    assert t.schema.equals(REQUESTS) and t.num_rows == expected
    ids = t.column("request_id")
    assert pa.compute.count_distinct(ids).as_py() == expected
    assert all(re.fullmatch(r"uber14-2014(0[4-9])-\d{7}", x) for x in ids.to_pylist()[::997])
    times = t.column("request_time").cast(pa.int64()).to_numpy()
    assert (np.diff(times) >= 0).all()  # written sorted by time
    assert t.column("ride_type").unique().to_pylist() == ["uberx"]
    assert t.column("dropoff_lat").null_count == expected and t.column("trip_duration_s").null_count == expected
    text = str(rep)
    assert f"{UBER_SAMPLE_ROWS:,}" in text and "6 files" in text and "2014-04-01 04:11Z to 2014-09-01 23:35Z" in text


def test_uber_first_row_and_stability(tmp_path):
    src = str(UBER / "uber-raw-data-apr14.csv.gz")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    import_nyc_uber_2014([src], str(a))
    import_nyc_uber_2014([src], str(b))
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.equals(tb)  # importing twice gives the same table
    rows = _csv_rows(UBER / "uber-raw-data-apr14.csv.gz")
    first = ta.filter(pa.compute.equal(ta.column("request_id"), "uber14-201404-0000000")).to_pylist()[0]
    assert rows[0]["Date/Time"] == "2014/4/1 00:11:00"
    assert first["request_time"] == datetime(2014, 4, 1, 4, 11, tzinfo=UTC)  # EDT = UTC-4
    assert (first["pickup_lat"], first["pickup_lng"]) == (float(rows[0]["Lat"]), float(rows[0]["Lon"]))
    # identical CSV rows are distinct pickups: all kept
    distinct = len({tuple(r.values()) for r in rows})
    assert len(rows) - distinct > 0 and ta.num_rows == len(rows)


def test_uber_day_filter_matches_csv(tmp_path):
    src = UBER / "uber-raw-data-apr14.csv.gz"
    want = sum(1 for r in _csv_rows(src) if r["Date/Time"].startswith("2014/4/4 "))
    out = tmp_path / "day.parquet"
    rep = import_nyc_uber_2014([str(src)], str(out), day="2014-04-04")
    t = pq.read_table(out)
    assert t.num_rows == want == rep.rows_written and rep.outside_day == APRIL_SAMPLE_ROWS - want
    times = t.column("request_time").to_pylist()
    assert min(times) >= datetime(2014, 4, 4, 4, 0, tzinfo=UTC)
    assert max(times) < datetime(2014, 4, 5, 4, 0, tzinfo=UTC)
    # ids are numbered before filtering: the same as in a full import
    full = tmp_path / "full.parquet"
    import_nyc_uber_2014([str(src)], str(full))
    ft = pq.read_table(full)
    sub = ft.filter(pa.compute.is_in(ft.column("request_id"), t.column("request_id")))
    assert sub.num_rows == want


def test_committed_uber_sample_is_a_dense_day():
    sample = Path(__file__).resolve().parents[1] / "data" / "nyc-uber-2014-04-04.parquet"
    valid, q = trace.read_requests(sample)
    assert valid.num_rows == 8_978 and q.num_rows == 0


# --------------------------------------------------------------------------- Uber, crafted


def _write_csv(path: Path, text: str, gz: bool = False) -> str:
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


def test_uber_both_date_spellings_and_bad_rows(tmp_path):
    src = _write_csv(
        tmp_path / "uber-raw-data-nov14.csv.gz",
        (
            '"Date/Time","Lat","Lon","Base"\n'
            "2014/11/1 00:11:00,40.769,-73.9549,B02512\n"
            "11/1/2014 0:11:00,40.769,-73.9549,B02512\n"
            "11/2/2014 1:30:00,40.7,-74.0,B02512\n"
            "yesterday,40.7,-74.0,B02512\n"
            "2014/11/1 00:12:00,,-74.0,B02512\n"
            "2014/11/1 00:13:00,0,0,B02512\n"
            "2014/11/1 00:14:00,95.5,-74.0,B02512\n"
            "2014/11/1 00:15:00,40.7,abc,B02512\n"
            "2014/11/1 00:16:00,40.7,-74.0,B02512,extra,fields\n"
        ),
        gz=True,
    )
    out = tmp_path / "u.parquet"
    rep = import_nyc_uber_2014([src], str(out))
    t = pq.read_table(out)
    assert t.column("request_id").to_pylist() == [
        "uber14-201411-0000000",
        "uber14-201411-0000001",
        "uber14-201411-0000002",
    ]
    times = t.column("request_time").to_pylist()
    assert times[0] == times[1] == datetime(2014, 11, 1, 4, 11, tzinfo=UTC)
    assert times[2] == datetime(2014, 11, 2, 5, 30, tzinfo=UTC)
    assert rep.quarantined == {
        "bad_pickup_time": 1,
        "missing_gps": 3,
        "bad_pickup_coordinate": 1,
        "malformed_csv_row": 1,
    }
    assert rep.rows_read == 9 and rep.rows_written == 3
    q = pq.read_table(quarantine_path(str(out)))
    assert q.num_rows == 6 and q.schema.names[:3] == ["source", "row", "reason"]
    assert set(q.column("source").to_pylist()) == {"uber-raw-data-nov14.csv.gz"}
    assert "quarantined 6" in str(rep)
    # a clean re-import of the same out removes the stale quarantine file
    good = _write_csv(tmp_path / "good.csv", "Date/Time,Lat,Lon,Base\n2014/11/1 00:11:00,40.769,-73.9549,B02512\n")
    import_nyc_uber_2014([good], str(out))
    assert not Path(quarantine_path(str(out))).exists()


def test_uber_wrong_layout_and_no_rows(tmp_path):
    bad = _write_csv(tmp_path / "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match=r"x\.csv: not the Uber 2014 layout"):
        import_nyc_uber_2014([bad], str(tmp_path / "o.parquet"))
    empty = _write_csv(tmp_path / "e.csv", "Date/Time,Lat,Lon,Base\n")
    with pytest.raises(TraceError, match=r"e\.csv: no usable row"):
        import_nyc_uber_2014([empty], str(tmp_path / "o.parquet"))
    assert not (tmp_path / "o.parquet").exists()


# --------------------------------------------------------------------------- TLC yellow


def _tlc_expected(path: Path) -> dict[str, int]:
    """Independent count of the rows the importer must quarantine, with the csv module."""
    counts = {"rows": 0, "missing_gps": 0, "bad_trip_duration": 0}
    for r in _csv_rows(path):
        counts["rows"] += 1
        lat, lng = r["pickup_latitude"].strip(), r["pickup_longitude"].strip()
        if not lat or not lng or float(lat) == 0.0 or float(lng) == 0.0:
            counts["missing_gps"] += 1
            continue
        p = datetime.fromisoformat(r["tpep_pickup_datetime"]).replace(tzinfo=NY)
        d = datetime.fromisoformat(r["tpep_dropoff_datetime"]).replace(tzinfo=NY)
        if (d.astimezone(UTC) - p.astimezone(UTC)).total_seconds() <= 0:
            counts["bad_trip_duration"] += 1
    return counts


@pytest.mark.parametrize(
    "name,layout", [("yellow_tripdata_2015-01.head.csv.gz", "2015"), ("yellow_tripdata_2016-03.head.csv.gz", "2016")]
)
def test_tlc_layouts(tmp_path, name, layout):
    src = TLC / name
    exp = _tlc_expected(src)
    out = tmp_path / "tlc.parquet"
    rep = import_tlc_yellow([str(src)], str(out))
    assert rep.layouts == {str(src): layout}
    assert rep.rows_read == exp["rows"]
    assert rep.quarantined.get("missing_gps", 0) == exp["missing_gps"] > 0
    assert rep.quarantined.get("bad_trip_duration", 0) == exp["bad_trip_duration"]
    assert rep.rows_written == exp["rows"] - exp["missing_gps"] - exp["bad_trip_duration"]
    t = pq.read_table(out)
    assert t.schema.equals(REQUESTS)
    dur = t.column("trip_duration_s").to_numpy(zero_copy_only=False)
    assert t.column("trip_duration_s").null_count == 0 and (dur > 0).all()
    stem = name[: -len(".csv.gz")]
    assert all(x.startswith(f"tlc-{stem}-") for x in t.column("request_id").to_pylist())
    assert pa.compute.count_distinct(t.column("request_id")).as_py() == t.num_rows
    q = pq.read_table(quarantine_path(str(out)))
    assert q.num_rows == exp["missing_gps"] + exp["bad_trip_duration"]
    lat = t.column("pickup_lat").to_numpy()
    assert ((lat > 39) & (lat < 42)).mean() > 0.99
    valid, vq = trace.read_requests(out)
    assert valid.num_rows == t.num_rows and vq.num_rows == 0


def test_tlc_first_row_values(tmp_path):
    src = TLC / "yellow_tripdata_2015-01.head.csv.gz"
    row = _csv_rows(src)[0]
    out = tmp_path / "t.parquet"
    import_tlc_yellow([str(src)], str(out))
    t = pq.read_table(out)
    got = t.filter(pa.compute.equal(t.column("request_id"), "tlc-yellow_tripdata_2015-01.head-00000000")).to_pylist()[0]
    p = datetime.fromisoformat(row["tpep_pickup_datetime"]).replace(tzinfo=NY)
    d = datetime.fromisoformat(row["tpep_dropoff_datetime"]).replace(tzinfo=NY)
    assert got["request_time"] == p.astimezone(UTC)
    assert got["trip_duration_s"] == (d - p).total_seconds()
    assert got["pickup_lat"] == float(row["pickup_latitude"]) and got["dropoff_lng"] == float(row["dropoff_longitude"])


def test_tlc_older_layouts(tmp_path):
    y2009 = _write_csv(
        tmp_path / "yellow_tripdata_2009-01.csv",
        (
            "vendor_name,Trip_Pickup_DateTime,Trip_Dropoff_DateTime,Passenger_Count,Trip_Distance,Start_Lon,Start_Lat,"
            "Rate_Code,store_and_forward,End_Lon,End_Lat,Payment_Type,Fare_Amt\n"
            "VTS,2009-01-04 02:52:00,2009-01-04 03:02:00,1,2.63,-73.991957,40.721567,,,-73.993803,40.695922,CASH,8.9\n"
            "VTS,2009-01-04 03:31:00,2009-01-04 03:38:00,3,4.55,0,0,,,-73.955184,40.768030,Credit,12.1\n"
        ),
    )
    y2013 = _write_csv(
        tmp_path / "yellow_tripdata_2013-11.csv",
        (
            "vendor_id, pickup_datetime, dropoff_datetime, passenger_count, trip_distance, pickup_longitude,"
            " pickup_latitude, rate_code, store_and_fwd_flag, dropoff_longitude, dropoff_latitude\n"
            "\n"
            "CMT,2013-11-03 01:50:00,2013-11-03 01:10:00,1,1.0,-73.98,40.75,1,N,0,0\n"  # across the fall-back: 20 min
            "CMT,2013-11-03 10:00:00,2013-11-03 09:59:00,1,1.0,-73.98,40.75,1,N,-73.97,40.76\n"
            "CMT,2013-03-10 01:55:00,2013-03-10 03:05:00,1,1.0,-73.98,40.75,1,N,-73.97,40.76\n"  # across the gap: 10 min
        ),
    )
    out = tmp_path / "old.parquet"
    rep = import_tlc_yellow([y2009, y2013], str(out))
    assert rep.layouts == {y2009: "2009", y2013: "2010-2014"}
    assert rep.quarantined == {"missing_gps": 1, "bad_trip_duration": 1}
    t = pq.read_table(out).to_pylist()
    assert [r["request_id"] for r in t] == [
        "tlc-yellow_tripdata_2009-01-00000000",  # sorted by pickup time
        "tlc-yellow_tripdata_2013-11-00000002",
        "tlc-yellow_tripdata_2013-11-00000000",
    ]
    assert [r["trip_duration_s"] for r in t] == [600.0, 600.0, 1200.0]
    assert t[2]["request_time"] == datetime(2013, 11, 3, 5, 50, tzinfo=UTC)
    assert t[2]["dropoff_lat"] is None  # a 0,0 dropoff is an unknown dropoff; the row stays


def test_tlc_not_a_tlc_file(tmp_path):
    bad = _write_csv(tmp_path / "green.csv", "lpep_pickup_datetime,PULocationID\n2019-01-01 00:00:00,4\n")
    with pytest.raises(TraceError, match=r"green\.csv: not a TLC yellow-taxi layout"):
        import_tlc_yellow([bad], str(tmp_path / "o.parquet"))


# --------------------------------------------------------------------------- CLI


def test_cli_import(tmp_path, capsys):
    from matcher.cli import main

    out = tmp_path / "apr.parquet"
    assert (
        main(
            [
                "import",
                "nyc-uber-2014",
                str(UBER / "uber-raw-data-apr14.csv.gz"),
                "--out",
                str(out),
                "--day",
                "2014-04-04",
            ]
        )
        == 0
    )
    assert "wrote 8,978 requests" in capsys.readouterr().out
    assert main(["validate", str(out)]) == 0
    assert main(["import", "nyc-uber-2014", str(tmp_path / "nope.csv"), "--out", str(out)]) == 1
    assert "nope.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a bad --day is a bad argument: exit 2, one line
        main(["import", "nyc-uber-2014", str(UBER / "uber-raw-data-apr14.csv.gz"), "--out", str(out), "--day", "April"])
    assert e.value.code == 2
    assert set(IMPORTERS) == {"nyc-uber-2014", "tlc-yellow"}
