"""The live API surface with FastAPI's TestClient, without Ray: the dispatcher drives the
in-process shard backend, ticks are called by the test on a clock the test moves.

Covered: auth (401 without/bad/expired token, 403 wrong role or subject), validation (422
with field errors), idempotency, every ride transition and its 409, offers (long-poll,
accept, decline, timeout), the batched pings (JSON and Arrow IPC), the read-only candidate
query, durability (the request line is in the journal before the 200) and recovery from
the journal (a second dispatcher on the same folder), the audit of the finished log.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from matcher.analysis import audit
from matcher.config import ServeConfig
from matcher.dist.backend import InProcessBackend
from matcher.serve import auth
from matcher.serve.api import make_app
from matcher.serve.dispatcher import Dispatcher

SECRET = b"test-secret-0123456789abcdef-0123456789"
NYC = (40.7580, -73.9855)  # Times Square


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def tok(role: str, sub: str, **kw) -> dict:
    return {"Authorization": f"Bearer {auth.issue(SECRET, role, sub, **kw)}"}


class Service:
    def __init__(self, out: Path, clock: Clock | None = None, **cfg):
        self.out = out
        self.clock = clock or Clock()
        self.cfg = ServeConfig(out=str(out), max_drivers=1000, **cfg)
        self.d = Dispatcher(self.cfg, InProcessBackend(1, _match()), clock=self.clock)
        self.client = TestClient(make_app(self.d, auth.Authenticator(SECRET)))

    def ping(self, driver: str, lat: float, lng: float, status: str = "available", **kw):
        r = self.client.put(
            "/v1/drivers/location",
            json={"lat": lat, "lng": lng, "heading": 0, "speed_mps": 0, "status": status},
            headers=tok("driver", driver, **kw),
        )
        assert r.status_code == 200, r.text
        return r

    def request(self, rider: str, lat: float = NYC[0], lng: float = NYC[1], key: str | None = None, **body):
        h = tok("rider", rider)
        if key:
            h["Idempotency-Key"] = key
        b = {"pickup_lat": lat, "pickup_lng": lng, "destination_lat": lat + 0.02, "destination_lng": lng + 0.01,
             "ride_type": "uberx", **body}  # fmt: skip
        return self.client.post("/v1/rides/request", json=b, headers=h)

    def offer(self, driver: str):
        return self.client.get("/v1/drivers/offer", headers=tok("driver", driver))

    def status(self, ride_id: str, driver: str, status: str):
        return self.client.put(f"/v1/rides/{ride_id}/status", json={"status": status}, headers=tok("driver", driver))

    def tick(self, dt: float = 2.0):
        self.clock.t += dt
        return self.d.tick()


def _match():
    from matcher.config import MatchConfig

    return MatchConfig()


@pytest.fixture
def svc(tmp_path):
    s = Service(tmp_path / "live")
    yield s
    if not s.d.closed:
        s.d.close()


def matched(svc: Service, driver: str = "d1", rider: str = "r1"):
    svc.ping(driver, NYC[0] + 0.001, NYC[1])
    r = svc.request(rider)
    assert r.status_code == 200, r.text
    ride = r.json()
    svc.tick()
    o = svc.offer(driver)
    assert o.status_code == 200, o.text
    return ride, o.json()


# --- auth -------------------------------------------------------------------------------
def test_no_token_is_401_json(svc):
    r = svc.client.post("/v1/rides/request", json={})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    ["Bearer nonsense", "Basic abc", "Bearer " + auth.issue(b"another-secret-0123456789-0123456789", "rider", "r1")],
)
def test_bad_token_is_401(svc, header):
    r = svc.client.get("/v1/rides/x", headers={"Authorization": header})
    assert r.status_code == 401
    assert "error" in r.json()


def test_expired_token_is_401(svc):
    r = svc.client.get("/v1/rides/x", headers=tok("rider", "r1", ttl_s=-10))
    assert r.status_code == 401 and r.json()["message"] == "token expired"


def test_wrong_role_is_403(svc):
    body = {"pickup_lat": 40.7, "pickup_lng": -73.9, "destination_lat": 40.8, "destination_lng": -73.9}
    assert svc.client.post("/v1/rides/request", json=body, headers=tok("driver", "d1")).status_code == 403
    loc = {"lat": 40.7, "lng": -73.9}
    assert svc.client.put("/v1/drivers/location", json=loc, headers=tok("rider", "r1")).status_code == 403
    batch = {"driver_id": ["d1"], "lat": [40.7], "lng": [-73.9]}
    assert svc.client.put("/v1/drivers/locations", json=batch, headers=tok("driver", "d1")).status_code == 403
    q = {"ride_id": "x", "pickup_lat": 40.7, "pickup_lng": -73.9, "ride_type": "uberx"}
    assert svc.client.post("/v1/dispatch/match", json=q, headers=tok("rider", "r1")).status_code == 403


def test_rider_sees_and_cancels_only_own_rides(svc):
    ride = svc.request("r1").json()
    assert svc.client.get(f"/v1/rides/{ride['ride_id']}", headers=tok("rider", "r2")).status_code == 403
    assert svc.client.post(f"/v1/rides/{ride['ride_id']}/cancel", headers=tok("rider", "r2")).status_code == 403
    got = svc.client.get(f"/v1/rides/{ride['ride_id']}", headers=tok("rider", "r1"))
    assert got.status_code == 200 and got.json()["status"] == "searching"
    assert svc.client.get("/v1/rides/nope", headers=tok("rider", "r1")).status_code == 404


def test_driver_answers_only_own_offers_and_rides(svc):
    svc.ping("d2", NYC[0] + 0.3, NYC[1])  # far away: never matched
    ride, offer = matched(svc)
    oid = offer["offer_id"]
    assert svc.client.post(f"/v1/offers/{oid}/accept", headers=tok("driver", "d2")).status_code == 403
    assert svc.status(ride["ride_id"], "d2", "arrived").status_code == 403
    assert svc.offer("d2").status_code == 204


def test_the_secret_never_appears_in_outputs(svc):
    ride, offer = matched(svc)
    svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
    svc.client.get("/metrics")
    svc.d.close()
    for f in svc.out.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_bytes(), f


# --- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "patch, field",
    [
        ({"pickup_lat": 91}, "pickup_lat"),
        ({"pickup_lng": -181}, "pickup_lng"),
        ({"destination_lat": "north"}, "destination_lat"),
        ({"ride_type": "helicopter"}, "ride_type"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_ride_request_is_422_with_the_field(svc, patch, field):
    r = svc.request("r1", **patch)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid"
    assert any(field in [str(x) for x in e["loc"]] for e in body["detail"]), body
    assert svc.d.counters["requests"] == 0


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(svc, token):
    raw = (
        '{"pickup_lat": ' + token + ', "pickup_lng": -73.98, "destination_lat": 40.7, "destination_lng": -73.9}'
    ).encode()
    h = {**tok("rider", "r1"), "Content-Type": "application/json"}
    r = svc.client.post("/v1/rides/request", content=raw, headers=h)
    assert r.status_code == 422, r.text
    r = svc.client.put(
        "/v1/drivers/location",
        content=b'{"lat": 40.7, "lng": %s}' % token.encode(),
        headers={**tok("driver", "d1"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_broken_json_is_422_and_the_service_goes_on(svc):
    h = {**tok("rider", "r1"), "Content-Type": "application/json"}
    assert svc.client.post("/v1/rides/request", content=b"{not json", headers=h).status_code == 422
    assert svc.request("r1").status_code == 200


def test_bad_location_fields_are_422(svc):
    h = tok("driver", "d1")
    for body in ({"lat": 40.7}, {"lat": 40.7, "lng": -73.9, "status": "sleeping"},
                 {"lat": 40.7, "lng": -73.9, "heading": 400}, {"lat": 40.7, "lng": -73.9, "speed_mps": -1}):  # fmt: skip
        assert svc.client.put("/v1/drivers/location", json=body, headers=h).status_code == 422, body
    assert svc.d.pings == 0


def test_bad_status_body_is_422(svc):
    ride, _ = matched(svc)
    assert svc.status(ride["ride_id"], "d1", "teleported").status_code == 422


# --- requests and idempotency ---------------------------------------------------------------
def test_request_answers_the_contract(svc):
    svc.ping("d1", NYC[0] + 0.005, NYC[1])
    svc.tick()
    r = svc.request("r1")
    assert r.status_code == 200
    b = r.json()
    assert b["status"] == "searching" and isinstance(b["ride_id"], str)
    assert b["eta_to_pickup_seconds"] > 0
    p = b["price_estimate"]
    assert p["low_cents"] < p["high_cents"] and p["surge_multiplier"] == 1.0


def test_request_event_is_journaled_before_the_answer(svc):
    r = svc.request("r1")
    lines = [json.loads(x) for x in (svc.out / "journal.jsonl").read_text().splitlines()]
    reqs = [x for x in lines if x.get("kind") == "request"]
    assert [x["request_id"] for x in reqs] == [r.json()["ride_id"]]


def test_idempotency_key_returns_the_same_ride(svc):
    a = svc.request("r1", key="k-1").json()
    b = svc.request("r1", key="k-1").json()
    c = svc.request("r1", key="k-2").json()
    d = svc.request("r2", key="k-1").json()  # keys are per rider
    assert a["ride_id"] == b["ride_id"]
    assert len({a["ride_id"], c["ride_id"], d["ride_id"]}) == 3
    assert svc.d.counters["requests"] == 3
    other = svc.request("r1", key="k-1", ride_type="black")
    assert other.status_code == 422


# --- the state machine ---------------------------------------------------------------------
def test_full_ride(svc):
    ride, offer = matched(svc)
    rid = ride["ride_id"]
    assert offer["ride_id"] == rid and offer["eta_seconds"] > 0
    assert (
        svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1")).json()["status"]
        == "accepted"
    )
    for st, want in (("en_route", "driver_en_route"), ("arrived", "arrived"), ("in_progress", "in_progress"),
                     ("completed", "completed")):  # fmt: skip
        r = svc.status(rid, "d1", st)
        assert r.status_code == 200 and r.json()["status"] == want, r.text
    assert svc.client.get(f"/v1/rides/{rid}", headers=tok("rider", "r1")).json()["status"] == "completed"
    summary = svc.d.close()
    assert summary["completed"] == 1 and summary["requests"] == 1
    assert audit.check_run(svc.out) == []


def test_arrived_straight_after_accept_passes_en_route(svc):
    ride, offer = matched(svc)
    svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
    assert svc.status(ride["ride_id"], "d1", "arrived").json()["status"] == "arrived"


@pytest.mark.parametrize(
    "steps, bad, state",
    [
        ([], "arrived", "matched"),  # not accepted yet
        (["accept"], "in_progress", "accepted"),  # must arrive first
        (["accept"], "completed", "accepted"),
        (["accept", "arrived"], "completed", "arrived"),
        (["accept", "arrived", "in_progress", "completed"], "arrived", "completed"),
    ],
)
def test_illegal_status_is_409_with_the_state(svc, steps, bad, state):
    ride, offer = matched(svc)
    for s in steps:
        if s == "accept":
            svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
        else:
            assert svc.status(ride["ride_id"], "d1", s).status_code == 200
    r = svc.status(ride["ride_id"], "d1", bad)
    assert r.status_code == 409 and r.json()["state"] == state, r.text


def test_repeated_reports_are_idempotent(svc):
    ride, offer = matched(svc)
    url = f"/v1/offers/{offer['offer_id']}/accept"
    assert svc.client.post(url, headers=tok("driver", "d1")).status_code == 200
    assert svc.client.post(url, headers=tok("driver", "d1")).status_code == 200
    assert svc.status(ride["ride_id"], "d1", "arrived").status_code == 200
    assert svc.status(ride["ride_id"], "d1", "arrived").status_code == 200
    assert svc.d.counters["accepts"] == 1


def test_decline_sends_the_ride_back_without_that_driver(svc):
    svc.ping("d2", NYC[0] + 0.004, NYC[1])  # second-best driver
    ride, offer = matched(svc)  # d1 is nearest
    r = svc.client.post(f"/v1/offers/{offer['offer_id']}/decline", headers=tok("driver", "d1"))
    assert r.status_code == 200
    assert svc.client.get(f"/v1/rides/{ride['ride_id']}", headers=tok("rider", "r1")).json()["status"] == "searching"
    again = svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
    assert again.status_code == 409 and again.json()["state"] == "searching"
    svc.tick()
    assert svc.offer("d1").status_code == 204
    o2 = svc.offer("d2")
    assert o2.status_code == 200 and o2.json()["ride_id"] == ride["ride_id"]


def test_offer_timeout_counts_as_decline(svc):
    ride, offer = matched(svc)
    svc.tick(dt=svc.cfg.offer_timeout_s + 1)
    assert svc.d.counters["timeouts"] == 1
    r = svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
    assert r.status_code == 409 and r.json()["state"] == "searching"


def test_rider_cancel_after_match_frees_the_driver(svc):
    ride, offer = matched(svc)
    r = svc.client.post(f"/v1/rides/{ride['ride_id']}/cancel", headers=tok("rider", "r1"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert svc.client.post(f"/v1/rides/{ride['ride_id']}/cancel", headers=tok("rider", "r1")).status_code == 200
    acc = svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
    assert acc.status_code == 409 and acc.json()["state"] == "cancelled"
    assert svc.status(ride["ride_id"], "d1", "arrived").status_code == 409
    # the driver is free for the next rider
    svc.request("r2")
    svc.tick()
    assert svc.offer("d1").status_code == 200


def test_cancel_of_a_completed_ride_is_409(svc):
    ride, offer = matched(svc)
    svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
    for s in ("arrived", "in_progress", "completed"):
        svc.status(ride["ride_id"], "d1", s)
    r = svc.client.post(f"/v1/rides/{ride['ride_id']}/cancel", headers=tok("rider", "r1"))
    assert r.status_code == 409 and r.json()["state"] == "completed"


def test_unmatched_ride_expires_after_patience(tmp_path):
    s = Service(tmp_path / "o", patience_s=10)
    ride = s.request("r1").json()
    s.tick(dt=11)
    assert s.client.get(f"/v1/rides/{ride['ride_id']}", headers=tok("rider", "r1")).json()["status"] == "expired"
    s.d.close()
    assert audit.check_run(s.out) == []


def test_driver_going_offline_mid_ride_cancels_it(svc):
    ride, offer = matched(svc)
    svc.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=tok("driver", "d1"))
    svc.ping("d1", NYC[0], NYC[1], status="offline")
    assert svc.client.get(f"/v1/rides/{ride['ride_id']}", headers=tok("rider", "r1")).json()["status"] == "cancelled"


def test_stale_driver_is_not_matched(svc):
    svc.ping("d1", NYC[0] + 0.001, NYC[1])
    svc.tick(dt=svc.d.match.gps_timeout_s + 5)
    svc.request("r1")
    svc.tick()
    assert svc.offer("d1").status_code == 204


def test_vehicle_type_decides_eligibility(svc):
    svc.ping("x1", NYC[0] + 0.001, NYC[1], vehicle="uberx")
    svc.ping("b1", NYC[0] + 0.003, NYC[1], vehicle="black")
    svc.request("r1", ride_type="black")
    svc.tick()
    assert svc.offer("x1").status_code == 204
    assert svc.offer("b1").status_code == 200


# --- pings -----------------------------------------------------------------------------------
def test_batched_json_pings_refuse_bad_rows_by_reason(svc):
    body = {
        "driver_id": ["a", "b", "c", "d"],
        "lat": [40.75, 95.0, 40.76, 40.77],
        "lng": [-73.98, -73.98, -73.97, -73.96],
        "status": ["available", "available", "sleeping", "on_trip"],
    }
    r = svc.client.put("/v1/drivers/locations", json=body, headers=tok("service", "gw"))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "refused": {"bad_coordinate": 1, "unknown_status": 1}}
    assert svc.d.pings == 2


def test_batched_pings_with_unequal_columns_are_422(svc):
    body = {"driver_id": ["a", "b"], "lat": [40.75], "lng": [-73.98, -73.9]}
    r = svc.client.put("/v1/drivers/locations", json=body, headers=tok("service", "gw"))
    assert r.status_code == 422


def test_batched_arrow_pings(svc):
    t = pa.table({"driver_id": ["a", "b"], "lat": [40.75, 40.76], "lng": [-73.98, -73.97],
                  "status": ["available", "available"]})  # fmt: skip
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    h = {**tok("service", "gw"), "Content-Type": "application/vnd.apache.arrow.stream"}
    r = svc.client.put("/v1/drivers/locations", content=sink.getvalue().to_pybytes(), headers=h)
    assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    bad = svc.client.put("/v1/drivers/locations", content=b"not arrow", headers=h)
    assert bad.status_code == 422


def test_pings_land_in_the_location_history(svc):
    svc.ping("d1", 40.75, -73.98)
    svc.client.put("/v1/drivers/locations", json={"driver_id": ["d2", "d3"], "lat": [40.7, 40.71], "lng": [-74, -74]},
                   headers=tok("service", "gw"))  # fmt: skip
    svc.d.close()
    import polars as pl

    loc = pl.read_parquet(svc.out / "locations" / "*.parquet")
    assert sorted(loc["driver_id"].to_list()) == ["d1", "d2", "d3"]


def test_a_flush_writes_the_locations_outside_the_pings_lock(svc):
    import threading

    import polars as pl

    svc.ping("d1", 40.75, -73.98)
    write = svc.d.logs._write_locations
    free_while_writing = []

    def try_lock() -> None:  # what a ping's handler does, from another thread
        got = svc.d.lock.acquire(timeout=0)
        free_while_writing.append(got)
        if got:
            svc.d.lock.release()

    def spy(taken):
        t = threading.Thread(target=try_lock)
        t.start()
        t.join()
        write(taken)

    svc.d.logs._write_locations = spy
    svc.d.flush()
    assert free_while_writing == [True]  # a ping could go on while 10 s of rows were written
    svc.ping("d2", 40.76, -73.98)  # after the taking: in the next part, not lost
    svc.d.close()
    loc = pl.read_parquet(svc.out / "locations" / "*.parquet")
    assert sorted(loc["driver_id"].to_list()) == ["d1", "d2"]


# --- candidates, metrics, health -------------------------------------------------------------
def test_dispatch_match_is_read_only(svc):
    for i in range(5):
        svc.ping(f"d{i}", NYC[0] + 0.001 * (i + 1), NYC[1], rating=4.5)
    svc.tick()
    q = {"ride_id": "q1", "pickup_lat": NYC[0], "pickup_lng": NYC[1], "ride_type": "uberx"}
    r = svc.client.post("/v1/dispatch/match", json=q, headers=tok("service", "int"))
    assert r.status_code == 200
    cands = r.json()["candidate_drivers"]
    assert [c["driver_id"] for c in cands] == [f"d{i}" for i in range(5)]
    assert all(c["rating"] == 4.5 and c["eta_seconds"] > 0 for c in cands)
    d = np.array([c["distance_meters"] for c in cands])
    assert (np.diff(d) > 0).all()
    assert svc.d.counters["matches"] == 0  # nothing was offered


def test_metrics_are_prometheus_text(svc):
    matched(svc)
    r = svc.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("matcher_tick_latency_ms", "matcher_pending_rides", "matcher_matched_total", "matcher_pings_total",
                 "matcher_offers_outstanding", "matcher_pings_per_second"):  # fmt: skip
        assert f"# TYPE {name}" in text
    assert "matcher_matched_total 1" in text
    assert svc.client.get("/healthz").json()["status"] == "ok"


# --- durability and recovery -------------------------------------------------------------------
def test_restart_recovers_open_rides(tmp_path):
    out = tmp_path / "live"
    clock = Clock()
    a = Service(out, clock)
    ride1, offer1 = matched(a, "d1", "r1")  # matched, not answered
    a.client.post(f"/v1/offers/{offer1['offer_id']}/accept", headers=tok("driver", "d1"))
    a.status(ride1["ride_id"], "d1", "arrived")
    r2 = a.request("r2", key="idem-2").json()  # searching
    r3 = a.request("r3").json()
    a.client.post(f"/v1/rides/{r3['ride_id']}/cancel", headers=tok("rider", "r3"))
    a.d.store.journal.sync()
    # "crash": no close(); a second dispatcher on the same folder
    a.d.store.journal.close()
    b = Service(out, clock)
    assert b.d.recovered_rides == 2
    get = b.client.get(f"/v1/rides/{ride1['ride_id']}", headers=tok("rider", "r1")).json()
    assert get["status"] == "arrived" and get["driver_id"] == "d1"
    assert b.client.get(f"/v1/rides/{r2['ride_id']}", headers=tok("rider", "r2")).json()["status"] == "searching"
    assert b.request("r2", key="idem-2").json()["ride_id"] == r2["ride_id"]  # the retry finds it
    # the recovered ride goes on
    assert b.status(ride1["ride_id"], "d1", "in_progress").status_code == 200
    assert b.status(ride1["ride_id"], "d1", "completed").status_code == 200
    b.ping("d1", NYC[0], NYC[1])
    b.tick()
    o = b.offer("d1")
    assert o.status_code == 200 and o.json()["ride_id"] == r2["ride_id"]
    b.client.post(f"/v1/offers/{o.json()['offer_id']}/decline", headers=tok("driver", "d1"))
    b.client.post(f"/v1/rides/{r2['ride_id']}/cancel", headers=tok("rider", "r2"))
    b.d.close()
    assert audit.check_run(out) == []
    import polars as pl

    ev = pl.read_parquet(out / "events" / "*.parquet")
    assert ev["seq"].n_unique() == ev.height
    assert ev.filter(pl.col("kind") == "request").height == 3


def test_torn_journal_tail_is_ignored(tmp_path):
    out = tmp_path / "live"
    a = Service(out)
    a.request("r1")
    a.d.store.journal.close()
    with open(out / "journal.jsonl", "ab") as f:
        f.write(b'{"t":"ev","seq":99,"ts":1,"ti')  # a line whose fsync never finished
    b = Service(out)
    assert len(b.d.rides) == 1 and b.d.store.torn_bytes > 0
    b.d.close()
    assert audit.check_log(__import__("matcher.analysis.metrics").analysis.metrics.read_events(out))[:1] != ["seq"]
