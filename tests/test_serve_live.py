"""The real service: ``matcher serve`` on 127.0.0.1 (a free port, its own RAY_TMPDIR, its own
session), driven by ``matcher loadgen`` for about 30 s, then the audit of its log; and a
``kill -9`` of the whole service followed by a restart on the same ``--out``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matcher.analysis.audit import check_run
from matcher.serve.auth import issue
from matcher.serve.process import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
MATCHER = [sys.executable, "-m", "matcher"]
SECRET = b"live-test-secret-0123456789abcdef0123456789"


def Service(out: Path, secret: Path, *args: str) -> ServiceProcess:
    return ServiceProcess(out, secret, *args, cwd=REPO, timeout_s=240)


@pytest.fixture
def secret(tmp_path) -> Path:
    p = tmp_path / "secret"
    p.write_bytes(SECRET + b"\n")
    return p


def listener_of(svc: ServiceProcess) -> str:
    """Which of the service's processes listens on its port: 'ServeReplica', 'ProxyActor', ..."""
    import psutil

    names = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) != svc.proc.pid:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == svc.port for c in p.net_connections("tcp")):
                names.append(p.cmdline()[0])
        except (psutil.Error, ProcessLookupError):
            continue
    assert len(names) == 1, names
    return names[0].removeprefix("ray::").split(":")[0]


def small_trace(tmp_path: Path) -> Path:
    """Every 4th of the sample's first 2,000 requests (about 1 per 1.7 s of trace), 2-minute trips."""
    t = pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 2000)
    t = t.take(pa.array(range(0, t.num_rows, 4)))
    t = t.set_column(t.schema.get_field_index("trip_duration_s"), "trip_duration_s", pa.array([120.0] * t.num_rows))
    path = tmp_path / "trace.parquet"
    pq.write_table(t, path)
    return path


def test_loadgen_drives_a_live_service_and_the_log_audits_clean(tmp_path, secret):
    import json

    out = tmp_path / "live"
    svc = Service(out, secret, "--patience", "60")
    try:
        lg = subprocess.run(
            [*MATCHER, "loadgen", str(small_trace(tmp_path)), "--url", svc.url, "--out", str(tmp_path / "lg"),
             "--drivers", "120", "--speed", "10", "--duration", "30", "--secret-file", str(secret),
             "--drain-timeout", "180"],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert lg.returncode == 0, lg.stdout + lg.stderr + svc.tail()
        metrics = httpx.get(f"{svc.url}/metrics").text
        # direct ingress: the replica itself listens on --port (no hop through Serve's proxy)
        assert listener_of(svc) == "ServeReplica", svc.tail()
    finally:
        rc = svc.stop()
    assert rc == 0, svc.tail()
    report = json.loads((tmp_path / "lg" / "loadgen.json").read_text())
    assert report["rides_open"] == 0 and report["requests_acknowledged"] == report["requests_posted"] > 30
    assert report["pings_accepted"] > 0 and report["batch_put_ms"]["n"] > 0 and report["location_put_ms"]["n"] > 0
    assert report["http_status"]["request_post"] == {"200": report["requests_posted"]}
    assert "matcher_matched_total" in metrics
    # the live run folder keeps the run-output contract
    assert check_run(out) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == report["requests_posted"]
    assert summary["completed"] == report["outcomes"].get("completed", 0) > 0
    for f in ("ticks.parquet", "cells.parquet", "run.json"):
        assert (out / f).exists(), f
    assert pq.read_table(out / "cells.parquet").num_rows > 0
    assert any((out / "locations").glob("*.parquet"))
    rep = subprocess.run([*MATCHER, "report", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    assert SECRET.decode() not in (out / "run.json").read_text() + svc.tail()


def test_kill_9_and_restart_recover_every_acknowledged_ride(tmp_path, secret):
    out = tmp_path / "live"
    key = SECRET

    def h(role, sub, **kw):
        return {"Authorization": f"Bearer {issue(key, role, sub, **kw)}"}

    svc = Service(out, secret, "--patience", "600", "--offer-timeout", "600")
    rides = {}
    try:
        c = httpx.Client(base_url=svc.url, timeout=30)
        batch = {"driver_id": ["d1", "d2"], "lat": [40.7581, 40.70], "lng": [-73.9855, -73.90]}
        assert c.put("/v1/drivers/locations", json=batch, headers=h("service", "gw")).status_code == 200
        for i in range(6):
            body = {"pickup_lat": 40.758 + 0.0001 * i, "pickup_lng": -73.9855, "destination_lat": 40.78,
                    "destination_lng": -73.97}  # fmt: skip
            r = c.post("/v1/rides/request", json=body, headers={**h("rider", f"r{i}"), "Idempotency-Key": f"k{i}"})
            assert r.status_code == 200
            rides[i] = r.json()["ride_id"]
        deadline = time.monotonic() + 60
        while True:  # the next ticks offer d1 (nearest) one of the rides
            o = c.get("/v1/drivers/offer", params={"wait_s": 10}, headers=h("driver", "d1"))
            if o.status_code == 200 or time.monotonic() > deadline:
                break
        assert o.status_code == 200, svc.tail()
        offered = o.json()
        assert c.post(f"/v1/offers/{offered['offer_id']}/accept", headers=h("driver", "d1")).status_code == 200
        st = c.put(f"/v1/rides/{offered['ride_id']}/status", json={"status": "arrived"}, headers=h("driver", "d1"))
        assert st.status_code == 200
        before = {
            i: c.get(f"/v1/rides/{rid}", headers=h("rider", f"r{i}")).json()["status"] for i, rid in rides.items()
        }
    finally:
        svc.kill9()
    assert not (out / "summary.json").exists()  # it died: no drain happened

    svc2 = Service(out, secret, "--patience", "600", "--offer-timeout", "600")
    try:
        c = httpx.Client(base_url=svc2.url, timeout=30)
        after = {i: c.get(f"/v1/rides/{rid}", headers=h("rider", f"r{i}")).json()["status"] for i, rid in rides.items()}
        assert after == before, (before, after)
        # a retried request (same idempotency key) is the same ride, not a new one
        body = {"pickup_lat": 40.758, "pickup_lng": -73.9855, "destination_lat": 40.78, "destination_lng": -73.97}
        again = c.post("/v1/rides/request", json=body, headers={**h("rider", "r0"), "Idempotency-Key": "k0"})
        assert again.json()["ride_id"] == rides[0]
        # the recovered ride goes on; the others are cancelled by their riders
        rid = offered["ride_id"]
        for s in ("in_progress", "completed"):
            assert c.put(f"/v1/rides/{rid}/status", json={"status": s}, headers=h("driver", "d1")).status_code == 200
        for i, r_id in rides.items():
            if r_id != rid:
                assert c.post(f"/v1/rides/{r_id}/cancel", headers=h("rider", f"r{i}")).status_code == 200
        metrics = c.get("/metrics").text
    finally:
        assert svc2.stop() == 0, svc2.tail()
    assert check_run(out) == []
    import polars as pl

    ev = pl.read_parquet(out / "events" / "*.parquet")
    req = ev.filter(pl.col("kind") == "request")
    assert sorted(req["request_id"].to_list()) == sorted(rides.values())  # none lost, none twice
    assert ev["seq"].n_unique() == ev.height
    assert 'matcher_rides{state="completed"} 1' in metrics
