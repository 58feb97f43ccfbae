"""The coordinator waits only for the shards ``needs_answer`` names: it must name every
shard whose real answer (a ShardState tick on the same drivers and requests) holds a
match or a deferred edge. Hypothesis draws small cities, shards and statuses; the oracle
is the shard code itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.config import RIDE_TYPES, VEHICLE_TYPES, MatchConfig
from matcher.core.candidates import RequestBatch, compat_matrix
from matcher.core.driver_table import Pings
from matcher.core.shard import ShardState, TickInput
from matcher.core.states import DriverStatus
from matcher.dist import answer
from matcher.dist.answer import doubtful_reports, needs_answer, needs_answer_routed

NOW = 1_000.0

MATCH = MatchConfig(radius_m=800.0)


@st.composite
def cities(draw):
    k = draw(st.integers(1, 4))
    n = draw(st.integers(0, 12))
    m = draw(st.integers(0, 8))
    coord = st.floats(-0.02, 0.02)  # a ~4 km square: some pairs within the radius, some not
    lat = np.array([40.75 + draw(coord) for _ in range(n)])
    lng = np.array([-73.98 + draw(coord) for _ in range(n)])
    status = np.array([draw(st.sampled_from(list(DriverStatus))) for _ in range(n)], np.int8)
    vehicle = np.array([draw(st.integers(0, len(VEHICLE_TYPES) - 1)) for _ in range(n)], np.int8)
    age = np.array([draw(st.sampled_from([0.0, 5.0, 29.0, 31.0, 300.0])) for _ in range(n)])
    member = np.array([draw(st.integers(1, 2**k - 1)) for _ in range(n)], np.uint64)  # owner + halo copies
    pings = Pings(
        key=np.arange(n, dtype=np.int64),
        lat=lat,
        lng=lng,
        heading=np.zeros(n, np.float32),
        speed=np.zeros(n, np.float32),
        status=status,
        vehicle=vehicle,
        rating=np.full(n, 4.8, np.float32),
        ts=NOW - age,
        owned=np.ones(n, bool),
        shared=np.zeros(n, bool),
    )
    rlat = np.array([40.75 + draw(coord) for _ in range(m)])
    rlng = np.array([-73.98 + draw(coord) for _ in range(m)])
    rtype = np.array([draw(st.integers(0, len(RIDE_TYPES) - 1)) for _ in range(m)], np.int8)
    shard_of = np.array([draw(st.integers(0, k - 1)) for _ in range(m)])
    # declines: (request, driver) pairs the shard must never offer again
    pairs = draw(st.lists(st.tuples(st.integers(0, max(m - 1, 0)), st.integers(0, max(n - 1, 0))), unique=True))
    pairs = [(r, d) for r, d in pairs if r < m and d < n]
    barred_req = np.array([r for r, _ in pairs], np.int64)
    barred_key = np.array([d for _, d in pairs], np.int64)
    ids = np.array(draw(st.permutations(range(100, 100 + m))), np.int64)  # request idx need not be sorted
    reqs = RequestBatch(ids, rlat, rlng, rtype, np.full(m, 10.0), ids[barred_req], barred_key)
    return k, pings, member, reqs, shard_of


@pytest.mark.parametrize("brute_force_pairs", [answer.BRUTE_FORCE_PAIRS, 0], ids=["pairs", "kdtree"])
@settings(max_examples=150, deadline=None)
@given(city=cities())
def test_every_shard_whose_answer_holds_an_edge_is_asked(city, brute_force_pairs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(answer, "BRUTE_FORCE_PAIRS", brute_force_pairs)
        _check_asked(city)


@pytest.mark.parametrize("brute_force_pairs", [answer.BRUTE_FORCE_PAIRS, 0], ids=["pairs", "kdtree"])
@settings(max_examples=150, deadline=None)
@given(city=cities(), doubt=st.lists(st.booleans(), max_size=12), unrouted=st.lists(st.booleans(), max_size=8))
def test_the_one_pass_over_all_shards_answers_as_the_pass_per_shard(city, doubt, unrouted, brute_force_pairs):
    """needs_answer_routed (the coordinator's) against needs_answer of the split batches (the oracle)."""
    k, pings, member, reqs, shard_of = city
    n, m = len(pings), len(reqs)
    doubtful = np.array((doubt + [False] * n)[:n], bool)
    shard_of = np.where(np.array((unrouted + [False] * m)[:m], bool), -1, shard_of).astype(np.int32)
    known = np.ones(n, bool)
    args = (NOW, pings, known, doubtful, member, compat_matrix(MATCH.compat), MATCH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(answer, "BRUTE_FORCE_PAIRS", brute_force_pairs)
        split = [reqs.take(np.flatnonzero(shard_of == s)) for s in range(k)]
        assert needs_answer_routed(reqs, shard_of, k, *args) == needs_answer(split, *args)


def _check_asked(city):
    k, pings, member, reqs, shard_of = city
    shared = np.array([bin(int(b)).count("1") > 1 for b in member], bool)
    inputs, truth = [], []
    for s in range(k):
        held = np.flatnonzero((member & np.uint64(1 << s)) != 0)
        p = pings.take(held)
        p.shared = shared[held]
        inp = TickInput(1, NOW, p, np.empty(0, np.int64), reqs.take(np.flatnonzero(shard_of == s)))
        out = ShardState(s, MATCH).tick(inp)
        truth.append(len(out.matches) + len(out.deferred) > 0)
        inputs.append(inp)
    known = np.ones(len(pings), bool)
    doubtful = np.zeros(len(pings), bool)
    got = needs_answer(
        [i.requests for i in inputs], NOW, pings, known, doubtful, member, compat_matrix(MATCH.compat), MATCH
    )
    for s in range(k):
        if truth[s]:
            assert got[s], f"shard {s} has an edge but was not asked"
        if len(inputs[s].requests) == 0:
            assert not got[s], "a shard with no request never needs to answer"


def test_a_far_or_busy_fleet_needs_no_answer_and_a_near_free_driver_does():
    reqs = RequestBatch(
        np.array([0]), np.array([40.75]), np.array([-73.98]), np.array([0], np.int8), np.array([1.0]),
        np.empty(0, np.int64), np.empty(0, np.int64),
    )  # fmt: skip
    near_busy = Pings(
        key=np.array([0, 1]), lat=np.array([40.7501, 40.80]), lng=np.array([-73.98, -73.98]),
        heading=np.zeros(2, np.float32), speed=np.zeros(2, np.float32),
        status=np.array([DriverStatus.ON_TRIP, DriverStatus.AVAILABLE], np.int8), vehicle=np.zeros(2, np.int8),
        rating=np.full(2, 5.0, np.float32), ts=np.full(2, NOW), owned=np.ones(2, bool), shared=np.zeros(2, bool),
    )  # fmt: skip
    inp = [reqs]
    member = np.ones(2, np.uint64)
    args = (np.ones(2, bool), np.zeros(2, bool), member, compat_matrix(MATCH.compat), MATCH)
    assert needs_answer(inp, NOW, near_busy, *args) == [False]  # the near one is busy, the free one 5.5 km away
    near_busy.status[0] = DriverStatus.AVAILABLE
    assert needs_answer(inp, NOW, near_busy, *args) == [True]
    near_busy.ts[0] = NOW - 31  # stale: never matched
    assert needs_answer(inp, NOW, near_busy, *args) == [False]
    doubt = np.array([True, False])  # a report of driver 0 may have been refused: it counts as anywhere
    assert needs_answer(inp, NOW, near_busy, args[0], doubt, *args[2:]) == [True]


@pytest.mark.parametrize("brute_force_pairs", [answer.BRUTE_FORCE_PAIRS, 0], ids=["pairs", "kdtree"])
def test_a_driver_who_declined_the_only_request_near_him_needs_no_answer(brute_force_pairs, monkeypatch):
    monkeypatch.setattr(answer, "BRUTE_FORCE_PAIRS", brute_force_pairs)
    near = Pings(
        key=np.array([0, 1]), lat=np.array([40.7501, 40.7502]), lng=np.array([-73.98, -73.98]),
        heading=np.zeros(2, np.float32), speed=np.zeros(2, np.float32),
        status=np.full(2, DriverStatus.AVAILABLE, np.int8), vehicle=np.zeros(2, np.int8),
        rating=np.full(2, 5.0, np.float32), ts=np.full(2, NOW), owned=np.ones(2, bool), shared=np.zeros(2, bool),
    )  # fmt: skip
    args = (np.ones(2, bool), np.zeros(2, bool), np.ones(2, np.uint64), compat_matrix(MATCH.compat), MATCH)

    def ask(barred_keys: list[int]) -> list[bool]:
        reqs = RequestBatch(
            np.array([7]), np.array([40.75]), np.array([-73.98]), np.array([0], np.int8), np.array([1.0]),
            np.full(len(barred_keys), 7, np.int64), np.array(barred_keys, np.int64),
        )  # fmt: skip
        return needs_answer([reqs], NOW, near, *args)

    assert ask([]) == [True]
    assert ask([0]) == [True]  # driver 1 is still free and near
    assert ask([0, 1]) == [False]  # both declined: the shard's answer is empty, nobody waits


def test_reports_a_shard_may_refuse_are_doubtful():
    n = 5
    p = Pings(
        key=np.array([0, 1, 2, 3, 3]), lat=np.array([40.0, np.nan, 40.0, 40.0, 40.0]), lng=np.full(n, -73.0),
        heading=np.zeros(n, np.float32), speed=np.zeros(n, np.float32),
        status=np.array([0, 0, 9, 0, 0], np.int8), vehicle=np.zeros(n, np.int8), rating=np.ones(n, np.float32),
        ts=np.array([10.0, 10.0, 10.0, 10.0, 10.0]), owned=np.ones(n, bool), shared=np.zeros(n, bool),
    )  # fmt: skip
    latest_ts = np.array([11.0, -np.inf, -np.inf, -np.inf])
    # 0: older than its latest report; 1: bad coordinate; 2: unknown status; 3: twice in the batch
    assert doubtful_reports(p, latest_ts).tolist() == [True, True, True, True, True]
    latest_ts[0] = 9.0
    p.lat[1], p.status[2] = 40.0, 1
    p.key[4] = 2
    assert doubtful_reports(p, latest_ts).tolist() == [False, False, True, False, True]  # 2 is twice now
