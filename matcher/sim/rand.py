"""Counter-based random numbers: a uniform draw is a pure function of (seed, stream, ids).

The replay draws every random outcome (accept or decline, response time, rider
cancel, GPS dropouts) from a hash of what it is about, never from a shared
generator's position. So a run does not depend on the order things were
processed in (in-process and Ray runs agree), and two policies replayed with
the same seed see the same driver and rider behaviour for the same offer
(common random numbers: their comparison is not drowned in noise).
"""

from __future__ import annotations

import math

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# streams
ACCEPT, RESPONSE, CANCEL, CANCEL_AT, TRIP_LEN, TRIP_DIR, GPS_GAP, GPS_LEN, FAULT, FLEET, REPOSITION = range(11)


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform(seed: int, stream: int, *ids) -> np.ndarray:
    """Uniform [0, 1) draws, broadcasting over the id arrays."""
    with np.errstate(over="ignore"):
        h = _mix(np.atleast_1d(np.asarray(seed, np.uint64)) * _GOLDEN + np.uint64(stream))
        for i in ids:
            h = _mix(h ^ (np.asarray(i).astype(np.uint64) + _GOLDEN))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def exponential(mean, seed: int, stream: int, *ids) -> np.ndarray:
    return -np.asarray(mean, np.float64) * np.log1p(-uniform(seed, stream, *ids))


_MASK = (1 << 64) - 1
_G, _A, _B = int(_GOLDEN), int(_M1), int(_M2)


def _mix1(x: int) -> int:
    x = ((x ^ (x >> 30)) * _A) & _MASK
    x = ((x ^ (x >> 27)) * _B) & _MASK
    return x ^ (x >> 31)


def uniform1(seed: int, stream: int, *ids: int) -> float:
    """One draw, as a Python float: exactly ``uniform(seed, stream, *ids)[0]``, without numpy
    (the world draws one number per offer, and numpy costs ~20x more per scalar)."""
    h = _mix1((seed * _G + stream) & _MASK)
    for i in ids:
        h = _mix1(h ^ ((int(i) + _G) & _MASK))
    return (h >> 11) * (1.0 / (1 << 53))


def exponential1(mean: float, seed: int, stream: int, *ids: int) -> float:
    return -mean * math.log1p(-uniform1(seed, stream, *ids))
