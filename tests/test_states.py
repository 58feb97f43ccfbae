"""Tests for matcher.core.states: transition tables, scalar and vectorised checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.core.states import (
    DRIVER_TRANSITIONS,
    RIDE_TRANSITIONS,
    DriverStatus,
    IllegalTransition,
    RideState,
    check_driver,
    check_driver_many,
    check_ride,
    check_ride_many,
    is_terminal,
)

D, R = DriverStatus, RideState
DRIVER_PAIRS = list(itertools.product(DriverStatus, repeat=2))
RIDE_PAIRS = list(itertools.product(RideState, repeat=2))
TERMINAL = {R.COMPLETED, R.CANCELLED, R.EXPIRED}

# The tables written out independently of the module, so a silent edit to
# states.py is caught here.
EXPECTED_DRIVER = {
    (D.AVAILABLE, D.OFFERED),
    (D.AVAILABLE, D.OFFLINE),
    (D.OFFERED, D.AVAILABLE),
    (D.OFFERED, D.EN_ROUTE),
    (D.OFFERED, D.OFFLINE),
    (D.EN_ROUTE, D.AVAILABLE),
    (D.EN_ROUTE, D.ON_TRIP),
    (D.EN_ROUTE, D.OFFLINE),
    (D.ON_TRIP, D.AVAILABLE),
    (D.ON_TRIP, D.OFFLINE),
    (D.OFFLINE, D.AVAILABLE),
}
EXPECTED_RIDE = {
    (R.SEARCHING, R.MATCHED),
    (R.SEARCHING, R.CANCELLED),
    (R.SEARCHING, R.EXPIRED),
    (R.MATCHED, R.ACCEPTED),
    (R.MATCHED, R.SEARCHING),
    (R.MATCHED, R.CANCELLED),
    (R.ACCEPTED, R.DRIVER_EN_ROUTE),
    (R.ACCEPTED, R.CANCELLED),
    (R.DRIVER_EN_ROUTE, R.ARRIVED),
    (R.DRIVER_EN_ROUTE, R.CANCELLED),
    (R.ARRIVED, R.IN_PROGRESS),
    (R.ARRIVED, R.CANCELLED),
    (R.IN_PROGRESS, R.COMPLETED),
    (R.IN_PROGRESS, R.CANCELLED),
}


def test_tables_cover_every_state():
    assert set(DRIVER_TRANSITIONS) == set(DriverStatus)
    assert set(RIDE_TRANSITIONS) == set(RideState)


def test_tables_match_the_spec():
    assert {(a, b) for a, bs in DRIVER_TRANSITIONS.items() for b in bs} == EXPECTED_DRIVER
    assert {(a, b) for a, bs in RIDE_TRANSITIONS.items() for b in bs} == EXPECTED_RIDE


@pytest.mark.parametrize("old,new", DRIVER_PAIRS, ids=lambda s: s.name)
def test_driver_full_product(old, new):
    if new in DRIVER_TRANSITIONS[old]:
        assert check_driver(old, new) is new
        # plain ints work too
        assert check_driver(int(old), int(new)) == new
    else:
        with pytest.raises(IllegalTransition, match=f"{old.name} -> {new.name}"):
            check_driver(old, new)


@pytest.mark.parametrize("old,new", RIDE_PAIRS, ids=lambda s: s.name)
def test_ride_full_product(old, new):
    if new in RIDE_TRANSITIONS[old]:
        assert check_ride(old, new) is new
        assert check_ride(int(old), int(new)) == new
    else:
        with pytest.raises(IllegalTransition, match=f"{old.name} -> {new.name}"):
            check_ride(old, new)


def test_no_self_loops_in_tables():
    assert all(s not in DRIVER_TRANSITIONS[s] for s in DriverStatus)
    assert all(s not in RIDE_TRANSITIONS[s] for s in RideState)


def test_happy_path():
    path = [R.SEARCHING, R.MATCHED, R.ACCEPTED, R.DRIVER_EN_ROUTE, R.ARRIVED, R.IN_PROGRESS, R.COMPLETED]
    s = path[0]
    for nxt in path[1:]:
        s = check_ride(s, nxt)
    assert s is R.COMPLETED and is_terminal(s)
    check_ride_many(np.array(path[:-1]), np.array(path[1:]))


def test_decline_returns_to_searching():
    assert check_ride(R.MATCHED, R.SEARCHING) is R.SEARCHING
    assert check_ride(R.SEARCHING, R.MATCHED) is R.MATCHED  # and can be matched again


@pytest.mark.parametrize("s", [s for s in RideState if s not in TERMINAL], ids=lambda s: s.name)
def test_any_non_terminal_can_cancel(s):
    assert not is_terminal(s)
    assert check_ride(s, R.CANCELLED) is R.CANCELLED


@pytest.mark.parametrize("s", sorted(TERMINAL), ids=lambda s: s.name)
def test_terminal_has_no_way_out(s):
    assert is_terminal(s)
    assert RIDE_TRANSITIONS[s] == frozenset()
    for t in RideState:
        with pytest.raises(IllegalTransition):
            check_ride(s, t)


def test_only_searching_expires():
    assert [s for s in RideState if R.EXPIRED in RIDE_TRANSITIONS[s]] == [R.SEARCHING]


def test_every_state_reachable_and_every_ride_can_end():
    def reach(table, start):
        seen, todo = {start}, [start]
        while todo:
            for b in table[todo.pop()]:
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    assert reach(RIDE_TRANSITIONS, R.SEARCHING) == set(RideState)
    for s in RideState:
        assert reach(RIDE_TRANSITIONS, s) & TERMINAL
    for s in DriverStatus:
        assert reach(DRIVER_TRANSITIONS, s) == set(DriverStatus)


# ------------------------------------------------------------- vectorised


def _scalar_ok(check, old, new) -> bool:
    try:
        check(old, new)
        return True
    except IllegalTransition:
        return False


def test_vectorised_full_product_elementwise():
    for pairs, check, many in (
        (DRIVER_PAIRS, check_driver, check_driver_many),
        (RIDE_PAIRS, check_ride, check_ride_many),
    ):
        for a, b in pairs:
            vec_ok = _scalar_ok(many, np.array([a]), np.array([b]))
            if many is check_driver_many and a == b:
                assert vec_ok  # documented: a same-state driver "transition" is a no-op
            else:
                assert vec_ok == _scalar_ok(check, a, b), (a, b)


def test_vectorised_empty_is_fine():
    check_driver_many(np.array([], np.int8), np.array([], np.int8))
    check_ride_many(np.array([], np.int8), np.array([], np.int8))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(RideState)), st.sampled_from(list(RideState))), max_size=30))
def test_ride_many_agrees_with_scalar(pairs):
    old = np.array([int(a) for a, _ in pairs], np.int8)
    new = np.array([int(b) for _, b in pairs], np.int8)
    first_bad = next(((a, b) for a, b in pairs if not _scalar_ok(check_ride, a, b)), None)
    if first_bad is None:
        check_ride_many(old, new)
    else:
        # raises, naming the first offending pair
        with pytest.raises(IllegalTransition, match=f"{first_bad[0].name} -> {first_bad[1].name}"):
            check_ride_many(old, new)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(DriverStatus)), st.sampled_from(list(DriverStatus))), max_size=30))
def test_driver_many_agrees_with_scalar(pairs):
    old = np.array([int(a) for a, _ in pairs], np.int8)
    new = np.array([int(b) for _, b in pairs], np.int8)
    first_bad = next(((a, b) for a, b in pairs if a != b and not _scalar_ok(check_driver, a, b)), None)
    if first_bad is None:
        check_driver_many(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"{first_bad[0].name} -> {first_bad[1].name}"):
            check_driver_many(old, new)
