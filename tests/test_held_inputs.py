"""A shard is sent nothing on a tick it need not answer; what it was not sent goes with its next
answered tick (``Coordinator._input``). The oracle is the same coordinator sending every shard
every tick's reports (``per_tick``, what it did before inputs were held): tick by tick, the
same matches, the same shard of each, the same border work, and the shards sent an input hold
exactly the tables the oracle's shards hold. Drivers move across region borders, go on trips
and offline, regions are rebalanced, and some runs get a report a shard must refuse (then the
coordinator switches to ``per_tick`` and must still count exactly the oracle's refusals)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.config import MatchConfig, Policy, ShardConfig
from matcher.core.candidates import RequestBatch
from matcher.core.driver_table import Pings
from matcher.core.states import DriverStatus
from matcher.dist.backend import InProcessBackend
from matcher.dist.coordinator import Coordinator
from matcher.dist.routers import make_router

MATCH = MatchConfig(radius_m=1500.0)
WINDOW = 2.0
LAT0, LNG0 = 40.75, -73.98
STATUSES = [DriverStatus.AVAILABLE, DriverStatus.AVAILABLE, DriverStatus.ON_TRIP, DriverStatus.OFFLINE]
ODD = ("nan", "twice", "older")


@st.composite
def runs(draw):
    """(shards, drivers, per tick: (pings, requests), the tick of an odd report or None, its kind)."""
    k = draw(st.integers(1, 4))
    n = draw(st.integers(1, 14))
    n_ticks = draw(st.integers(1, 14))
    km = st.floats(-4.0, 4.0, allow_nan=False)
    pos = [(draw(km), draw(km)) for _ in range(n)]
    ticks, next_req = [], 0
    for t in range(n_ticks):
        now = WINDOW * (t + 1)
        who = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n)))
        rows = []
        for d in who:
            if draw(st.booleans()):  # moves (maybe across a region border)
                pos[d] = (pos[d][0] + draw(st.floats(-1.5, 1.5)), pos[d][1] + draw(st.floats(-1.5, 1.5)))
            rows.append((d, *pos[d], draw(st.sampled_from(STATUSES)), now - draw(st.floats(0.0, 1.0))))
        m = draw(st.integers(0, 4))
        reqs = [(next_req + i, draw(km), draw(km), draw(st.integers(0, 3))) for i in range(m)]
        next_req += m
        ticks.append((rows, reqs))
    odd_at = draw(st.none() | st.integers(0, n_ticks - 1))
    return k, n, ticks, odd_at, draw(st.sampled_from(ODD))


def _pings(rows, n_vehicles: int = 1) -> Pings:
    m = len(rows)
    key = np.array([r[0] for r in rows], np.int64)
    return Pings(
        key=key,
        lat=LAT0 + np.array([r[1] for r in rows], float).reshape(m) / 111.0,
        lng=LNG0 + np.array([r[2] for r in rows], float).reshape(m) / 84.0,
        heading=np.zeros(m, np.float32),
        speed=np.zeros(m, np.float32),
        status=np.array([int(r[3]) for r in rows], np.int8).reshape(m),
        vehicle=(key % n_vehicles).astype(np.int8),
        rating=np.full(m, 4.8, np.float32),
        ts=np.array([r[4] for r in rows], float).reshape(m),
        owned=np.ones(m, bool),
        shared=np.zeros(m, bool),
    )


def _requests(reqs, now: float) -> RequestBatch:
    m = len(reqs)
    idx = np.array([r[0] for r in reqs], np.int64)
    return RequestBatch(
        idx,
        LAT0 + np.array([r[1] for r in reqs], float).reshape(m) / 111.0,
        LNG0 + np.array([r[2] for r in reqs], float).reshape(m) / 84.0,
        np.zeros(m, np.int8),
        np.array([float(r[3]) for r in reqs]).reshape(m),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
    )


def _odd(p: Pings, kind: str) -> Pings:
    """One report a shard must refuse: a NaN position, a driver twice in the batch, or an older one."""
    if len(p) == 0:
        return p
    if kind == "nan":
        p.lat[0] = np.nan
        return p
    twice = p.take(np.array([0, 0]))
    if kind == "older":
        twice.ts[1] -= 100.0
    return Pings.concat([p, twice.take(np.array([1]))])


def _table(shard) -> dict[str, np.ndarray]:
    snap = shard.table.snapshot()
    order = np.argsort(snap["key"])
    return {c: v[order] for c, v in snap.items()}


class _Recording(InProcessBackend):
    """In-process shards that remember which shards each tick sent an input to."""

    def __init__(self, k: int, match: MatchConfig) -> None:
        super().__init__(k, match)
        self.sent: list[list[int]] = []

    def tick(self, inputs, answer, idle=None):
        self.sent.append([s for s, i in enumerate(inputs) if i is not None])
        return super().tick(inputs, answer, idle)


def _coordinator(k: int, n: int, per_tick: bool) -> tuple[Coordinator, _Recording]:
    shard = ShardConfig(
        shards=k, backend="inprocess", rebalance_ticks=2, rebalance_tolerance=1.0, rebalance_min_excess=0
    )
    backend = _Recording(k, MATCH)
    coord = Coordinator(backend, make_router(shard, MATCH), n, MATCH, shard)
    coord.per_tick = per_tick
    return coord, backend


@settings(max_examples=120, deadline=None)
@given(run=runs())
def test_held_inputs_give_the_per_tick_run(run):
    k, n, ticks, odd_at, kind = run
    held, held_b = _coordinator(k, n, per_tick=False)
    every, every_b = _coordinator(k, n, per_tick=True)
    odd = False  # an odd report was sent
    for t, (rows, reqs) in enumerate(ticks):
        now = WINDOW * (t + 1)
        odd |= t == odd_at and len(rows) > 0
        outs = []
        for coord in (held, every):
            p = _pings(rows)
            if t == odd_at:
                p = _odd(p, kind)
            outs.append(coord.tick(t + 1, now, p, _requests(reqs, now), Policy.BATCH))
        (m1, s1, st1), (m2, s2, st2) = outs
        for col in ("req", "key", "eta", "dist", "lat", "lng"):
            np.testing.assert_array_equal(getattr(m1, col), getattr(m2, col), err_msg=f"tick {t + 1}: {col}")
        np.testing.assert_array_equal(s1, s2)
        assert (st1.pending, st1.matched, st1.deferred, st1.round2) == (
            st2.pending,
            st2.matched,
            st2.deferred,
            st2.round2,
        )
        for s in held_b.sent[-1]:  # a shard sent an input holds the table of every tick's input
            a, b = _table(held_b.shards[s]), _table(every_b.shards[s])
            for c in a:
                np.testing.assert_array_equal(a[c], b[c], err_msg=f"tick {t + 1}, shard {s}: {c}")
        if odd:
            assert held.per_tick  # a report that may be refused: every shard is sent every tick's input
        for s in set(range(k)) - set(held_b.sent[-1]):
            assert not held.per_tick  # only a held run leaves shards out
    inputs_sent = sum(map(len, held_b.sent))
    held.sync(len(ticks), WINDOW * len(ticks))  # every shard catches up: each holds the oracle's table
    for s in range(k):
        a, b = _table(held_b.shards[s]), _table(every_b.shards[s])
        for c in a:
            np.testing.assert_array_equal(a[c], b[c], err_msg=f"after sync, shard {s}: {c}")
    held.finish()
    every.finish()
    assert held.refusals == every.refusals
    assert held.handoffs == every.handoffs
    if not odd:
        assert not held.per_tick
        assert inputs_sent <= sum(map(len, every_b.sent))
