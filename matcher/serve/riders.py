"""The riders' process of ``matcher loadgen`` (:class:`Riders`): ``python -m matcher.serve.riders FD START``
with the :class:`~matcher.serve.loadgen.LoadgenConfig` as JSON on stdin; it writes one JSON line per
message to file descriptor ``FD``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

import httpx

from matcher.config import RIDE_TYPES
from matcher.serve.auth import issue, load_secret
from matcher.serve.loadgen import CONNS_PER_POOL, RIDER_POOLS, WARMUP_S, ApiCaller, LoadgenConfig, read_rides


class Riders(ApiCaller):
    """The riders: they post the trace's requests at their times, in a process of their own.

    The drivers' side of the generator is thousands of coroutines; each tick's offers reach
    many of them at once and keep its event loop busy for tens of milliseconds (measured:
    35-55 ms per tick with 2,500 drivers). A ride request measured from that loop would
    include that wait, which is the generator's and not the service's. Real riders are other
    devices than drivers, so here they have their own interpreter and loop; times are
    ``time.perf_counter`` (system-wide monotonic on Linux and macOS) after the same start.
    Each acknowledged ride goes back to the drivers' side at once, ``["ack", row, ride_id,
    sent_at, authorization]``; at the end ``["done", posting_s, status_counts, ms]``, or
    ``["error", text]`` if posting failed.
    """

    def __init__(self, cfg: LoadgenConfig, start: float, out: TextIO) -> None:
        super().__init__(cfg)
        self.rides, _, _ = read_rides(cfg)
        self.start, self.out = start, out
        self._secret = load_secret(cfg.secret_file)

    def now(self) -> float:
        return time.perf_counter() - self.start

    async def main(self) -> float:
        """Post every request at its time; returns the seconds of posting."""
        pools = [self.pool(CONNS_PER_POOL) for _ in range(RIDER_POOLS)]
        try:
            tasks = []
            for i in range(len(self.rides.ids)):
                wait = WARMUP_S + self.rides.t[i] - self.now()
                if wait > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(self.post(pools[i % len(pools)], i)))
            await asyncio.gather(*tasks)
        finally:
            for c in pools:
                await c.aclose()
        return self.now() - WARMUP_S

    async def post(self, client: httpx.AsyncClient, i: int) -> None:
        rd = self.rides
        auth = f"Bearer {issue(self._secret, 'rider', f'rider-{rd.ids[i]}')}"
        body = {"pickup_lat": float(rd.plat[i]), "pickup_lng": float(rd.plng[i]),
                "destination_lat": float(rd.dlat[i]), "destination_lng": float(rd.dlng[i]),
                "ride_type": rd.ride_type[i] if rd.ride_type[i] in RIDE_TYPES else "uberx"}  # fmt: skip
        sent_at = self.now()
        t0 = time.perf_counter()
        r = await self.call(client, "request_post", "POST", "/v1/rides/request", json=body,
                            headers={"Authorization": auth, "Idempotency-Key": rd.ids[i]})  # fmt: skip
        if r is not None and r.status_code == 200:
            self.stats.ms["request_post_ms_ok"].append((time.perf_counter() - t0) * 1e3)
            self.send(["ack", i, r.json()["ride_id"], sent_at, auth])

    def send(self, msg: list) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()


def main(argv: list[str]) -> int:
    fd, start = int(argv[0]), float(argv[1])
    cfg = LoadgenConfig(**json.loads(sys.stdin.read()))
    with open(fd, "w") as out:
        r = Riders(cfg, start, out)
        try:
            posting_s = asyncio.run(r.main())
        except Exception as e:  # noqa: BLE001 - reported to the drivers' side, which fails the run
            r.send(["error", f"{type(e).__name__}: {e}"])
            return 1
        r.send(["done", posting_s, {k: dict(v) for k, v in r.stats.status.items()}, dict(r.stats.ms)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
