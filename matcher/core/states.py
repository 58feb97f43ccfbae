"""Driver and ride state machines: enums plus one explicit transition table each.

Every state change in the project goes through :func:`check_ride` /
:func:`check_driver` (or their vectorised twins), so an illegal transition
raises here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

import numpy as np

from matcher.core.arrays import ArrayLike, BoolArray


class DriverStatus(IntEnum):
    AVAILABLE = 0  # idle, may be offered
    OFFERED = 1  # an offer is pending
    EN_ROUTE = 2  # driving to a pickup
    ON_TRIP = 3  # rider on board
    OFFLINE = 4  # off shift


class RideState(IntEnum):
    SEARCHING = 0
    MATCHED = 1
    ACCEPTED = 2
    DRIVER_EN_ROUTE = 3
    ARRIVED = 4
    IN_PROGRESS = 5
    COMPLETED = 6
    CANCELLED = 7
    EXPIRED = 8  # never matched within the rider's patience


D, R = DriverStatus, RideState

DRIVER_TRANSITIONS: dict[DriverStatus, frozenset[DriverStatus]] = {
    D.AVAILABLE: frozenset({D.OFFERED, D.OFFLINE}),
    # decline/timeout/rider cancel -> available; accept -> en_route
    D.OFFERED: frozenset({D.AVAILABLE, D.EN_ROUTE, D.OFFLINE}),
    # rider cancel -> available; pickup -> on_trip; goes offline mid-approach
    D.EN_ROUTE: frozenset({D.AVAILABLE, D.ON_TRIP, D.OFFLINE}),
    # dropoff -> available; a driver may go offline mid-trip (the ride ends there)
    D.ON_TRIP: frozenset({D.AVAILABLE, D.OFFLINE}),
    D.OFFLINE: frozenset({D.AVAILABLE}),
}

_TERMINAL_RIDE = frozenset({R.COMPLETED, R.CANCELLED, R.EXPIRED})

RIDE_TRANSITIONS: dict[RideState, frozenset[RideState]] = {
    # searching -> expired when the rider's patience runs out unmatched
    R.SEARCHING: frozenset({R.MATCHED, R.CANCELLED, R.EXPIRED}),
    # decline or offer timeout -> back to searching
    R.MATCHED: frozenset({R.ACCEPTED, R.SEARCHING, R.CANCELLED}),
    R.ACCEPTED: frozenset({R.DRIVER_EN_ROUTE, R.CANCELLED}),
    R.DRIVER_EN_ROUTE: frozenset({R.ARRIVED, R.CANCELLED}),
    R.ARRIVED: frozenset({R.IN_PROGRESS, R.CANCELLED}),
    R.IN_PROGRESS: frozenset({R.COMPLETED, R.CANCELLED}),
    R.COMPLETED: frozenset(),
    R.CANCELLED: frozenset(),
    R.EXPIRED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the transition table does not allow (a bug, never user input)."""


def check_driver(old: DriverStatus, new: DriverStatus) -> DriverStatus:
    if _DRIVER_OK[old, new]:  # the table as a matrix: no enum work on the hot path
        return new
    if new not in DRIVER_TRANSITIONS[DriverStatus(old)]:
        raise IllegalTransition(f"driver: {DriverStatus(old).name} -> {DriverStatus(new).name} is not allowed")
    return DriverStatus(new)


def check_ride(old: RideState, new: RideState) -> RideState:
    if _RIDE_OK[old, new]:
        return new
    if new not in RIDE_TRANSITIONS[RideState(old)]:
        raise IllegalTransition(f"ride: {RideState(old).name} -> {RideState(new).name} is not allowed")
    return RideState(new)


def is_terminal(state: RideState) -> bool:
    return RideState(state) in _TERMINAL_RIDE


def _matrix(
    table: Mapping[DriverStatus, frozenset[DriverStatus]] | Mapping[RideState, frozenset[RideState]], n: int
) -> BoolArray:
    m = np.zeros((n, n), dtype=bool)
    for a, bs in table.items():
        for b in bs:
            m[int(a), int(b)] = True
    return m


_DRIVER_OK = _matrix(DRIVER_TRANSITIONS, len(DriverStatus))
_RIDE_OK = _matrix(RIDE_TRANSITIONS, len(RideState))


def check_driver_many(old: ArrayLike, new: ArrayLike) -> None:
    """Vectorised :func:`check_driver`; a same-state "transition" is a no-op and allowed."""
    old = np.asarray(old, dtype=np.int8)
    new = np.asarray(new, dtype=np.int8)
    bad = (old != new) & ~_DRIVER_OK[old, new]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        check_driver(DriverStatus(int(old[i])), DriverStatus(int(new[i])))


def check_ride_many(old: ArrayLike, new: ArrayLike) -> None:
    """Vectorised :func:`check_ride`."""
    old = np.asarray(old, dtype=np.int8)
    new = np.asarray(new, dtype=np.int8)
    bad = ~_RIDE_OK[old, new]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        check_ride(RideState(int(old[i])), RideState(int(new[i])))
