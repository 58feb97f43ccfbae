"""Surge pricing as a pure function of per-cell demand and supply. Plain numpy.

Each tick, for every geohash cell: demand is the number of open (searching) ride
requests whose pickup lies in the cell, supply the number of available drivers
in it. Both are smoothed over time with an exponential moving average whose
time constant ``tau_s`` is the sliding window (a tick of ``dt`` seconds weighs
``1 - exp(-dt / tau_s)``, so live ticks of uneven length and replay ticks of
one window smooth alike). The smoothed ratio demand / max(supply, min_supply)
sets a target multiplier ``1 + gain * (ratio - threshold)``, rounded to a
multiple of ``step`` and clipped to ``[1, cap]``.

Hysteresis: the multiplier moves to its target only when the target is at least
``band`` away from the current value, and falls back to 1 as soon as the
smoothed ratio is at or below ``threshold`` (no excess demand at all). So a
cell leaves 1.0 only at a ratio of about ``threshold + band / gain`` (1.4 with
the defaults) and returns to it only at ``threshold``: small oscillations of
demand around a level never flip the price a rider sees.

Why geohash precision 5 (``SurgeConfig.precision``): a precision-5 cell is
about 4.9 x 4.9 km at the equator and 3.7 x 4.9 km at New York's latitude,
18 km^2, close to the 12.6 km^2 disc of the 2 km candidate radius. The drivers
counted as a cell's supply are then roughly the drivers that could serve a
request made in it. Precision 6 (1.2 x 0.6 km) holds about two drivers per
cell in a 50,000-driver metro of 800 km^2, so its ratio would jump by whole
units whenever one driver moves; precision 4 (39 x 20 km) would put a whole
city in one cell and hide local shortages. Counts are float64 (exact for
integers far beyond any fleet); the multiplier is computed in whole steps, so
it is exactly representable as ``steps * step`` up to rounding of the last
digit (rounded to 10 decimals).

Guarantees (tested with hypothesis): multipliers stay within ``[1, cap]`` and
are multiples of ``step``; with no demand anywhere every multiplier decays to 1;
more demand (or less supply) in a cell never lowers its target; the result is
independent of the order of the input points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from matcher.config import SurgeConfig
from matcher.core import geo

_EPS = 1e-3  # a cell whose smoothed counts fell below this (and is not surging) is forgotten


@dataclass
class SurgeState:
    """Per-cell smoothed demand and supply and the current multiplier; cells sorted ascending."""

    cells: np.ndarray  # uint64 geohash integers
    demand: np.ndarray  # float64, EWMA of open requests
    supply: np.ndarray  # float64, EWMA of available drivers
    multiplier: np.ndarray  # float64

    @staticmethod
    def empty() -> SurgeState:
        f = np.empty(0)
        return SurgeState(np.empty(0, np.uint64), f, f.copy(), f.copy())

    def __len__(self) -> int:
        return len(self.cells)


@dataclass
class CellTick:
    """One tick's figures for every cell still tracked (the rows of OUT/cells.parquet)."""

    cells: np.ndarray  # uint64
    demand_now: np.ndarray  # int64: open requests in the cell at this tick
    supply_now: np.ndarray  # int64: available drivers in the cell at this tick
    demand: np.ndarray  # float64 smoothed
    supply: np.ndarray  # float64 smoothed
    ratio: np.ndarray  # float64 smoothed demand / max(smoothed supply, min_supply)
    multiplier: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.cells)


def cells_of(lat: np.ndarray, lng: np.ndarray, cfg: SurgeConfig) -> np.ndarray:
    """Surge cells (uint64 geohash integers) of points; invalid coordinates are left out."""
    lat, lng = np.asarray(lat, np.float64), np.asarray(lng, np.float64)
    ok = geo.valid_coords(lat, lng)
    return np.asarray(geo.encode_int(lat[ok], lng[ok], cfg.precision), np.uint64)


def _counts(universe: np.ndarray, cells: np.ndarray) -> np.ndarray:
    out = np.zeros(len(universe), np.int64)
    if len(cells):
        u, c = np.unique(cells, return_counts=True)
        out[np.searchsorted(universe, u)] = c
    return out


def target_multiplier(ratio: np.ndarray, cfg: SurgeConfig) -> np.ndarray:
    """Multiplier a smoothed ratio asks for, before hysteresis: whole steps within [1, cap]."""
    raw = 1.0 + cfg.gain * (np.asarray(ratio, np.float64) - cfg.threshold)
    steps = np.round(raw / cfg.step)
    lo, hi = math.ceil(1.0 / cfg.step - 1e-9), math.floor(cfg.cap / cfg.step + 1e-9)
    return np.round(np.clip(steps, lo, hi) * cfg.step, 10)


def step(
    state: SurgeState, req_cells: np.ndarray, drv_cells: np.ndarray, dt: float, cfg: SurgeConfig
) -> tuple[SurgeState, CellTick]:
    """Advance the surge state by one tick of ``dt`` seconds.

    ``req_cells``: the cell of every open request now; ``drv_cells``: the cell of every
    available driver now (see :func:`cells_of`). Returns the new state and the tick's figures.
    """
    req_cells = np.asarray(req_cells, np.uint64)
    drv_cells = np.asarray(drv_cells, np.uint64)
    universe = np.union1d(np.union1d(state.cells, req_cells), drv_cells).astype(np.uint64)
    pos = np.searchsorted(universe, state.cells)
    d_prev, s_prev = np.zeros(len(universe)), np.zeros(len(universe))
    m_prev = np.ones(len(universe))
    d_prev[pos], s_prev[pos], m_prev[pos] = state.demand, state.supply, state.multiplier
    d_now, s_now = _counts(universe, req_cells), _counts(universe, drv_cells)
    alpha = 1.0 if not math.isfinite(dt) else 1.0 - math.exp(-max(dt, 0.0) / cfg.tau_s)
    d = (1.0 - alpha) * d_prev + alpha * d_now
    s = (1.0 - alpha) * s_prev + alpha * s_now
    ratio = d / np.maximum(s, cfg.min_supply)
    target = target_multiplier(ratio, cfg)
    move = np.abs(target - m_prev) >= cfg.band - 1e-9
    m = np.where(move, target, m_prev)
    m = np.where(ratio <= cfg.threshold, 1.0, m)
    keep = (d >= _EPS) | (s >= _EPS) | (m > 1.0) | (d_now > 0) | (s_now > 0)
    new = SurgeState(universe[keep], d[keep], s[keep], m[keep])
    tick = CellTick(universe[keep], d_now[keep], s_now[keep], d[keep], s[keep], ratio[keep], m[keep])
    return new, tick


def multiplier_at(state: SurgeState, cells: np.ndarray) -> np.ndarray:
    """Current multiplier of each cell (1 for a cell not tracked)."""
    cells = np.asarray(cells, np.uint64)
    out = np.ones(len(cells))
    if len(state.cells) and len(cells):
        i = np.minimum(np.searchsorted(state.cells, cells), len(state.cells) - 1)
        hit = state.cells[i] == cells
        out[hit] = state.multiplier[i[hit]]
    return out
