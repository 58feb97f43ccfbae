"""Counter-based random numbers: a uniform draw is a pure function of (seed, stream, ids).

The replay draws every random outcome (accept or decline, response time, rider
cancel, GPS dropouts) from a hash of what it is about, never from a shared
generator's position. So a run does not depend on the order things were
processed in (in-process and Ray runs agree), and two policies replayed with
the same seed see the same driver and rider behaviour for the same offer
(common random numbers: their comparison is not drowned in noise).

Streams are named by :class:`RandStream`, whose values are fixed forever: the value
is part of every draw's key, so renumbering a stream (or inserting one before it)
would change every run. A new stream takes the next free value; the first outputs
of every stream are pinned by ``tests/test_rand.py``.
"""

from __future__ import annotations

import math
from enum import IntEnum, unique

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@unique
class RandStream(IntEnum):
    """What a draw is about. The values are keys of the draws: never change or reuse one."""

    ACCEPT = 0  # does the driver accept offer (request, attempt)
    RESPONSE = 1  # how long the driver takes to answer it
    CANCEL = 2  # does the rider cancel after match (request, attempt)
    CANCEL_AT = 3  # ... and when
    TRIP_LEN = 4  # dropoff of a request the trace has none for (another request's pickup)
    TRIP_DIR = 5  # the load generator's dropoff for a trip the trace has none for (not drawn by the replay)
    GPS_GAP = 6  # time to a driver's next GPS dropout (id -1: the driver's ping phase)
    GPS_LEN = 7  # length of that dropout
    FAULT = 8  # time to a driver's next network fault
    FLEET = 9  # synthesised fleet: position, vehicle, rating
    REPOSITION = 10  # which recent request an idle driver heads toward


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform(seed: int, stream: RandStream, *ids) -> np.ndarray:
    """Uniform [0, 1) draws, broadcasting over the id arrays."""
    with np.errstate(over="ignore"):
        h = _mix(np.atleast_1d(np.asarray(seed, np.uint64)) * _GOLDEN + np.uint64(stream))
        for i in ids:
            h = _mix(h ^ (np.asarray(i).astype(np.uint64) + _GOLDEN))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def exponential(mean, seed: int, stream: RandStream, *ids) -> np.ndarray:
    return -np.asarray(mean, np.float64) * np.log1p(-uniform(seed, stream, *ids))


_MASK = (1 << 64) - 1
_G, _A, _B = int(_GOLDEN), int(_M1), int(_M2)


def _mix1(x: int) -> int:
    x = ((x ^ (x >> 30)) * _A) & _MASK
    x = ((x ^ (x >> 27)) * _B) & _MASK
    return x ^ (x >> 31)


def uniform1(seed: int, stream: RandStream, *ids: int) -> float:
    """One draw, as a Python float: exactly ``uniform(seed, stream, *ids)[0]``, without numpy
    (the world draws one number per offer, and numpy costs ~20x more per scalar)."""
    h = _mix1((seed * _G + stream) & _MASK)
    for i in ids:
        h = _mix1(h ^ ((int(i) + _G) & _MASK))
    return (h >> 11) * (1.0 / (1 << 53))


def exponential1(mean: float, seed: int, stream: RandStream, *ids: int) -> float:
    return -mean * math.log1p(-uniform1(seed, stream, *ids))
