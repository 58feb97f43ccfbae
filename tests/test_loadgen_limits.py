"""The load generator against a service that does not answer: it never queues more calls than a
pool has connections, and drops (and counts) pings beyond its in-flight limit. httpx's
MockTransport stands in for the service: what is tested is the generator's own bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np

from matcher.serve import loadgen as lg

REPO = Path(__file__).resolve().parents[1]


def _gen(tmp_path, single_share: float) -> lg.Loadgen:
    secret = tmp_path / "secret"
    secret.write_text("test-secret-" + "x" * 40 + "\n")
    cfg = lg.LoadgenConfig(
        trace=str(REPO / "data" / "synth-small.parquet"),
        url="http://127.0.0.1:9",
        out=str(tmp_path / "lg"),
        drivers=400,
        secret_file=str(secret),
        single_share=single_share,
    )
    return lg.Loadgen(cfg)


class _Stuck:
    """A transport whose calls never answer; counts how many are inside it at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await asyncio.sleep(3600)
        finally:
            self.inside -= 1
        return httpx.Response(200)


def test_pings_beyond_the_in_flight_limit_are_dropped_and_counted(tmp_path):
    g = _gen(tmp_path, single_share=1.0)  # every driver pings alone: 20 calls per 0.2 s slot
    stuck = _Stuck()

    async def run():
        g.stop = asyncio.Event()
        g.start = 0.0
        async with httpx.AsyncClient(base_url="http://svc", transport=httpx.MockTransport(stuck.handler)) as c:
            task = asyncio.create_task(g.pinger(c))
            # stop and cancel half-way through a slot, as the pinger waits for the next one:
            # a pinger that swallowed this cancel (Python 3.11's wait_for does, when its inner
            # wait ends at the same step) went on to wait for its stuck calls for ever
            await asyncio.sleep(1.1)
            g.stop.set()
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5.0)

    asyncio.run(run())
    assert stuck.most == lg.MAX_PING_CALLS  # the limit is reached and never passed
    assert g.stats.pings_sent == lg.MAX_PING_CALLS
    assert g.stats.pings_dropped > 0
    # every single-ping driver of each slot the pinger went through was either sent or dropped
    per_slot = np.bincount(np.arange(len(g.driver_ids)) % lg.PING_SLOTS, weights=g.single, minlength=lg.PING_SLOTS)
    whole = np.cumsum(np.tile(per_slot, 10)).astype(int)
    assert g.stats.pings_sent + g.stats.pings_dropped in set(whole.tolist())


def test_calls_wait_for_a_free_connection_outside_httpcore(tmp_path):
    g = _gen(tmp_path, single_share=0.0)
    stuck = _Stuck()

    async def run():
        async with httpx.AsyncClient(base_url="http://svc", transport=httpx.MockTransport(stuck.handler)) as c:
            g._gates[id(c)] = asyncio.Semaphore(3)
            tasks = [asyncio.create_task(g.call(c, "x", "GET", "/healthz")) for _ in range(10)]
            await asyncio.sleep(0.3)
            assert stuck.most == 3 and stuck.inside == 3  # 7 wait on the gate, none in the pool
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def test_riders_process_acks_reach_the_drivers_side_and_its_failure_fails_the_run(tmp_path):
    import shutil

    import pytest

    from matcher.errors import MatcherError

    trace = tmp_path / "trace.parquet"
    shutil.copy(REPO / "data" / "synth-small.parquet", trace)
    g = _gen(tmp_path, single_share=0.0)
    g.cfg = lg.LoadgenConfig(**{**g.cfg.__dict__, "trace": str(trace)})
    g.rider_headers = {}

    async def acked() -> None:
        done = asyncio.get_running_loop().create_future()
        g._from_riders(["ack", 3, "r-3", 1.25, "Bearer x"], done)
        g._from_riders(["done", 2.0, {"request_post": {"200": 1}}, {"request_post": [4.0]}], done)
        await done

    asyncio.run(acked())
    assert (
        g.ride_row == {"r-3": 3} and g.sent_at == {3: 1.25} and g.rider_headers["r-3"] == {"Authorization": "Bearer x"}
    )
    assert g.stats.status["request_post"] == {"200": 1} and g.stats.ms["request_post"] == [4.0]

    # a riders' process that dies (here: its trace is gone when it starts) fails the run in one line
    trace.unlink()
    g.start = 0.0
    with pytest.raises(MatcherError, match="the riders' process failed"):
        asyncio.run(asyncio.wait_for(g.riders(), 60.0))
