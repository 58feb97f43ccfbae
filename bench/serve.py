"""The live service under load: one real ``matcher serve`` (Ray Serve on an embedded local Ray,
1 shard actor, 127.0.0.1) and the load generator, both on this machine.

Three phases against the same service, then the audit of its log:
1. batched pings: a 50,000-driver metro reporting every 4 s (12,500 pings/s offered, 10
   Arrow IPC batches of 1,250 per second, open loop) for 20 s;
2. single-driver ``PUT /v1/drivers/location``: 64 clients in a closed loop for 15 s;
3. rides: ``matcher.serve.loadgen`` on a generated trace of 55 requests/s of wall time for
   60 s (speed 10: 5.5 requests/s of trace time, 60 s trips, pickups within 6 x 6 km of
   midtown Manhattan) with 2,500 drivers in the same box; it waits for every ride to end.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from .common import Context, failed, figure, pct

FIGS = {
    "serve_batch_pings_per_s": ("pings/s", 12_500, "higher"),
    "serve_batch_put_ms_p99": ("ms", 50, "lower"),
    "serve_single_put_per_s": ("req/s", 1_000, "higher"),
    "serve_request_post_ms_p99": ("ms", 50, "lower"),
    "serve_request_to_offer_ms_p99": ("ms", 2_100, "lower"),
    "serve_audit_violations": ("violations", 0, "lower"),
}
WINDOW_S = 2.0
CENTER = (40.7527, -73.9772)  # midtown Manhattan


def _box(rng, n: int, half_km: float = 3.0):
    dlat = half_km / 111.0
    dlng = half_km / (111.0 * np.cos(np.radians(CENTER[0])))
    return CENTER[0] + rng.uniform(-dlat, dlat, n), CENTER[1] + rng.uniform(-dlng, dlng, n)


def _inputs(folder: Path, rate_wall: float, seconds: float, speed: float, drivers: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(16)
    n = int(rate_wall * seconds)
    t_ms = np.sort(rng.uniform(0, seconds * speed * 1000.0, n)).astype(np.int64) + 1_767_225_600_000
    plat, plng = _box(rng, n)
    dlat, dlng = plat + rng.uniform(-0.013, 0.013, n), plng + rng.uniform(-0.017, 0.017, n)
    trace = pa.table({
        "request_id": [f"b{i:06d}" for i in range(n)],
        "request_time": pa.array(t_ms, pa.timestamp("ms", tz="UTC")),
        "pickup_lat": plat, "pickup_lng": plng, "dropoff_lat": dlat, "dropoff_lng": dlng,
        "ride_type": ["uberx"] * n, "trip_duration_s": np.full(n, 60.0),
    })  # fmt: skip
    lat, lng = _box(rng, drivers)
    fleet = pa.table({"driver_id": [f"bd{i:05d}" for i in range(drivers)], "lat": lat, "lng": lng,
                      "vehicle_type": ["uberx"] * drivers, "rating": np.full(drivers, 4.8)})  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(trace, folder / "trace.parquet")
    pq.write_table(fleet, folder / "drivers.parquet")
    return folder / "trace.parquet", folder / "drivers.parquet"


async def _batch_flood(url: str, token: str, n_drivers: int, per_s: float, seconds: float) -> dict:
    import httpx
    import pyarrow as pa

    rng = np.random.default_rng(4)
    lat, lng = _box(rng, n_drivers, half_km=15.0)
    ids = pa.array([f"m{i:05d}" for i in range(n_drivers)], pa.string())
    per_batch = max(1, int(per_s / 10))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.arrow.stream"}
    ms: list[float] = []
    accepted = 0
    errors = 0

    def body(k: int) -> bytes:
        sel = (np.arange(per_batch) + k * per_batch) % n_drivers
        t = pa.table({"driver_id": ids.take(pa.array(sel)), "lat": lat[sel] + rng.normal(0, 1e-4, per_batch),
                      "lng": lng[sel] + rng.normal(0, 1e-4, per_batch), "heading": rng.uniform(0, 360, per_batch),
                      "speed_mps": rng.uniform(0, 12, per_batch)})  # fmt: skip
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        return sink.getvalue().to_pybytes()

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)) as c:
        sem = asyncio.Semaphore(32)

        async def one(k: int) -> None:
            nonlocal accepted, errors
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await c.put("/v1/drivers/locations", content=body(k), headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    return
                ms.append((time.perf_counter() - t0) * 1e3)
                if r.status_code == 200:
                    accepted += int(r.json()["accepted"])
                else:
                    errors += 1

        start = time.perf_counter()
        tasks = []
        k = 0
        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(one(k)))
            k += 1
            await asyncio.sleep(max(0.0, start + k * 0.1 - time.perf_counter()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    # the rate is over the window the batches were offered in (k batches, one per 0.1 s), once every
    # batch has been answered: the last answer's latency is in batch_put_ms, not in the rate
    return {"accepted": accepted, "elapsed": k * 0.1, "wall": elapsed, "ms": ms, "batches": k, "per_batch": per_batch,
            "errors": errors}  # fmt: skip


async def _single_flood(url: str, secret: bytes, clients: int, seconds: float) -> dict:
    """``clients`` driver apps in a closed loop, each PUT after the previous answer.

    The clients are aiohttp's, not httpx's: httpx spent about 1.2 ms of CPU per call, and
    at 703 calls/s its process was the one at 87% of a core, not the service; aiohttp's
    clients took 49% of a core at 1,820 calls/s, about 0.27 ms per call (both measured here)."""
    import aiohttp

    from matcher.serve.auth import issue

    tokens = [f"Bearer {issue(secret, 'driver', f's{i:04d}')}" for i in range(clients * 4)]
    rng = np.random.default_rng(5)
    ok = 0
    ms: list[float] = []
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients)) as session:
        start = time.perf_counter()

        async def worker(w: int) -> None:
            nonlocal ok
            i = 0
            while time.perf_counter() - start < seconds:
                lat, lng = _box(rng, 1)
                body = {"lat": float(lat[0]), "lng": float(lng[0]), "heading": 90.0, "speed_mps": 5.0,
                        "status": "available"}  # fmt: skip
                t0 = time.perf_counter()
                try:
                    async with session.put("/v1/drivers/location", json=body,
                                           headers={"Authorization": tokens[(w * 4 + i) % len(tokens)]}) as r:  # fmt: skip
                        await r.read()
                        status = r.status
                except aiohttp.ClientError:
                    continue
                ms.append((time.perf_counter() - t0) * 1e3)
                ok += status == 200
                i += 1

        await asyncio.gather(*[worker(w) for w in range(clients)])
        elapsed = time.perf_counter() - start
    return {"ok": ok, "elapsed": elapsed, "ms": ms}


def _journal_commit_ms(url: str, token: str) -> dict:
    """The service's own group-commit durations (write + fsync), from its /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30).text
    out = {}
    for line in text.splitlines():
        if line.startswith("matcher_journal_commit_ms{"):
            q, v = line.split('"')[1], float(line.rsplit(" ", 1)[1])
            out[f"p{round(float(q) * 100)}"] = v
    return out


def _disk_fsync_ms(folder: Path, seconds: float = 10.0, per_s: float = 50.0) -> list[float]:
    """This disk alone: durations of fsync after a 200-byte append to a file in ``folder``, ``per_s``
    times a second (what one journal group commit asks of the disk), with nothing of ours running."""
    import os

    path = folder / "fsync-probe"
    ms: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.write(fd, b"x" * 199 + b"\n")
            t0 = time.perf_counter()
            os.fsync(fd)
            ms.append((time.perf_counter() - t0) * 1e3)
            time.sleep(1.0 / per_s)
    finally:
        os.close(fd)
        path.unlink()
    return ms


def _server_ms(ray_tmp: str | Path, method: str, route: str) -> list[float]:
    """The replica's own latencies of ``method route`` (Ray Serve's access log lines in the
    service's RAY_TMPDIR: ``... -- POST /v1/rides/request 200 9.6ms``); empty if none is found."""
    import re

    line = re.compile(rf" -- {method} {re.escape(route)} \d+ ([\d.]+)ms$")
    out: list[float] = []
    for f in Path(ray_tmp).glob("ray/session_*/logs/serve/replica_*.log"):
        for text in f.read_text(errors="replace").splitlines():
            m = line.search(text.rstrip())
            if m:
                out.append(float(m.group(1)))
    return out


def serve_live(ctx: Context) -> dict:
    if ctx.quick:
        return {f: failed(*spec, "skipped with --quick (starts Ray Serve)") for f, spec in FIGS.items()}
    import shutil

    from matcher.analysis.audit import check_run
    from matcher.serve.auth import issue
    from matcher.serve.loadgen import LoadgenConfig, run_loadgen
    from matcher.serve.process import ServiceProcess

    root = ctx.path("serve", "x").parent
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    secret = b"bench-secret-" + bytes(np.random.default_rng(1).integers(97, 123, 40, dtype=np.uint8))
    (root / "secret").write_bytes(secret + b"\n")
    speed, rate, seconds, n_drivers = 10.0, 55.0, 60.0, 2_500
    trace, drivers = _inputs(root / "inputs", rate, seconds, speed, n_drivers)
    out = root / "live"
    fsync = _disk_fsync_ms(root)  # before the service starts: the disk's own fsync latency
    load0 = time.perf_counter()
    svc = ServiceProcess(out, root / "secret", "--window", str(WINDOW_S), "--patience", "120")
    try:
        ctx.log(f"  service up in {time.perf_counter() - load0:.0f} s at {svc.url}")
        batch = asyncio.run(_batch_flood(svc.url, issue(secret, "service", "bench"), 50_000, 12_500.0, 20.0))
        ctx.log(f"  batched pings: {batch['accepted'] / batch['elapsed']:.0f}/s, p99 {pct(batch['ms'], 99):.1f} ms")
        single = asyncio.run(_single_flood(svc.url, secret, 64, 15.0))
        ctx.log(f"  single PUTs: {single['ok'] / single['elapsed']:.0f}/s")
        lg_cfg = LoadgenConfig(trace=str(trace), url=svc.url, out=str(root / "lg"), drivers=str(drivers), speed=speed,
                               secret_file=str(root / "secret"), drain_timeout_s=300.0, single_share=0.0)  # fmt: skip
        lg = run_loadgen(lg_cfg)  # as `matcher loadgen` runs it (writes lg/loadgen.json)
        commit = _journal_commit_ms(svc.url, issue(secret, "service", "bench"))
        ctx.log(f"  rides: {lg['requests_per_s']:.1f} req/s, POST p99 {lg['request_post_ms']['p99']:.1f} ms, "
                f"request->offer p99 {lg['request_to_offer_ms']['p99']:.0f} ms, open {lg['rides_open']}")  # fmt: skip
    finally:
        rc = svc.stop()
    problems = check_run(out) if rc == 0 else [f"matcher serve exited with {rc}"]
    server = _server_ms(svc.tmp, "POST", "/v1/rides/request")
    server_note = (
        f"; in the replica (Serve's access log): p50 {pct(server, 50):.1f} ms, p99 {pct(server, 99):.1f} ms"
        if server
        else "; the replica's access log was not found"
    )
    slow = sum(m > 50 for m in fsync)
    disk_note = (
        f"; this disk alone, before the service started (a 200-byte append + fsync, {len(fsync)} times at 50/s): "
        f"p50 {pct(fsync, 50):.2f} ms, p99 {pct(fsync, 99):.1f} ms, max {max(fsync):.0f} ms, {slow} over 50 ms"
    )
    load = "the load generator runs on the same 2 cores as the service"
    n_b = batch["batches"] * batch["per_batch"]
    return {
        "serve_batch_pings_per_s": figure(
            batch["accepted"] / batch["elapsed"],
            *FIGS["serve_batch_pings_per_s"],
            note=f"{n_b:,} pings offered at 12,500/s in {batch['batches']} Arrow batches of {batch['per_batch']} over "
            f"{batch['elapsed']:.0f} s; pings accepted per second of that window ({batch['errors']} failed batches; "
            f"the last answer came {batch['wall'] - batch['elapsed']:.2f} s after it closed); {load}",
        ),
        "serve_batch_put_ms_p99": figure(
            pct(batch["ms"], 99),
            *FIGS["serve_batch_put_ms_p99"],
            note=f"PUT /v1/drivers/locations of 1,250 pings, client-side; p50 {pct(batch['ms'], 50):.1f} ms",
        ),
        "serve_single_put_per_s": figure(
            single["ok"] / single["elapsed"],
            *FIGS["serve_single_put_per_s"],
            note=f"PUT /v1/drivers/location, 64 clients in a closed loop for {single['elapsed']:.0f} s; "
            f"p50 {pct(single['ms'], 50):.1f} ms, p99 {pct(single['ms'], 99):.1f} ms; {load}",
        ),
        "serve_request_post_ms_p99": figure(
            lg["request_post_ms"]["p99"],
            *FIGS["serve_request_post_ms_p99"],
            note=f"POST /v1/rides/request at {lg['requests_per_s']:.1f} requests/s for {seconds:.0f} s "
            f"({lg['requests_posted']} rides, {n_drivers} drivers), fsync'd journal before each 200 "
            f"(the service's group commits: p50 {commit.get('p50', float('nan')):.1f} ms, "
            f"p99 {commit.get('p99', float('nan')):.1f} ms); client-side p50 {lg['request_post_ms']['p50']:.1f} ms"
            + server_note
            + disk_note,
        ),
        "serve_request_to_offer_ms_p99": figure(
            lg["request_to_offer_ms"]["p99"],
            *FIGS["serve_request_to_offer_ms_p99"],
            note=f"request sent -> first offer at a driver's long-poll; target window {WINDOW_S:.0f} s + 100 ms; "
            f"p50 {lg['request_to_offer_ms']['p50']:.0f} ms; outcomes {lg['outcomes']}",
        ),
        "serve_audit_violations": figure(
            len(problems),
            *FIGS["serve_audit_violations"],
            note="matcher.analysis.audit.check_run of the live run folder after the drain (rule 2 = no double "
            f"dispatch); {lg['rides_open']} rides left open" + (f"; first: {problems[0]}" if problems else ""),
            ok=len(problems) == 0,
        ),
    }
