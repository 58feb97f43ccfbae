"""Regions placed by measured load: K weighted runs of a Hilbert curve.

Pure numpy. The globe's cells are ordered along the Hilbert curve of
`matcher.dist.curve` (keys below 2**40, cells of about 38 x 19 m); shard i owns
the keys in ``[cut[i-1], cut[i])`` (``cut[-1] = 0``, ``cut[K-1] = 2**64``).
Placement puts the cuts at the weighted quantiles of the load: each shard gets
one run of about 1/K of the recent demand and supply.

Why runs of a curve (and not recursive bisection): a cut can fall anywhere
along the curve, down to one 38 m cell, so a hot cell (an airport, a
downtown) is split between shards as finely as its load needs without any
special case, and the whole map is K - 1 numbers; a rebalance slides cuts
along the curve, so the load that changes hands is exactly the load between
the old and the new cut, and it is bounded (`rebalance`: at most
``max_move`` of the total per call, 1/K by default). Hilbert runs are
connected, so a region's border stays short (bisection would give boxes, with
a similar border, but moving one of its cuts re-cuts the whole subtree below).

Guarantees (property-tested after any sequence of placements and
rebalances):
1. Partition: every key, so every point on the globe, has exactly one owner
   (the cuts are sorted; runs may be empty).
2. A rebalance moves at most ``max_move`` of the observed load (measured on
   the load it was given, to the resolution of one key cell).
3. Determinism: the cuts depend only on the loads given, in order.
4. A lost shard (`remove_shard`) owns nothing from then on: its run collapses
   to empty (its keys go to the next living run along the curve, or the
   previous one at the end) and later placements and rebalances give it none.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from matcher.dist.ring import MAX_SHARDS

__all__ = ["CurveRegions"]

_U64 = np.uint64
_ALL = _U64(0xFFFFFFFFFFFFFFFF)
U64Array = npt.NDArray[np.uint64]
I32Array = npt.NDArray[np.int32]
F64Array = npt.NDArray[np.float64]

# _PREFIX[i]: the lowest i bits set (i = 0..64)
_PREFIX = np.array([(1 << i) - 1 for i in range(MAX_SHARDS + 1)], dtype=np.uint64)


class CurveRegions:
    """K contiguous runs of the curve, run i on shard i (shards 0..K-1)."""

    def __init__(self, n_shards: int) -> None:
        if not 1 <= n_shards <= MAX_SHARDS:
            raise ValueError(f"need 1..{MAX_SHARDS} shards, got {n_shards}")
        self.k = n_shards
        # before any load is seen: equal runs of the key space (an arbitrary but valid partition)
        step = (1 << 40) // n_shards
        self.cuts: U64Array = np.array([step * (i + 1) for i in range(n_shards - 1)], dtype=np.uint64)
        self.version = 0
        self.dead: set[int] = set()

    def living(self) -> int:
        return self.k - len(self.dead)

    def remove_shard(self, shard: int) -> None:
        """Shard `shard` is lost: its run (and every dead run) becomes empty, its keys go to a living run."""
        if not 0 <= shard < self.k:
            raise ValueError(f"no shard {shard} (shards 0..{self.k - 1})")
        self.dead.add(shard)
        if not self.living():
            raise ValueError("every shard is lost")
        new = self._collapse(self.cuts)
        if not np.array_equal(new, self.cuts):
            self.cuts = new
            self.version += 1

    def _collapse(self, cuts: U64Array) -> U64Array:
        """`cuts` with every dead run empty (its keys to the next living run, or the last living one)."""
        if not self.dead:
            return cuts
        b = [_U64(0), *(_U64(c) for c in cuts.tolist()), _ALL]  # run i is [b[i], b[i + 1])
        top = max(i for i in range(self.k) if i not in self.dead)
        for i in range(top):  # a dead run below the last living one: its keys go up
            if i in self.dead:
                b[i + 1] = b[i]
        for i in range(self.k - 1, top, -1):  # dead runs above it: empty at the top
            b[i] = _ALL
        out: U64Array = np.maximum.accumulate(np.array(b[1:-1], dtype=np.uint64))
        return out

    def owners(self, keys: U64Array) -> I32Array:
        """Owner shard (int32) of each key (`curve.NO_KEY` lands on the last shard: callers mask it)."""
        return np.searchsorted(self.cuts, keys, side="right").astype(np.int32)

    def range_masks(self, lo: U64Array, hi: U64Array) -> U64Array:
        """Mask (uint64) of the shards owning some key of each range [lo, hi) (hi > lo)."""
        r0 = np.searchsorted(self.cuts, lo, side="right")
        r1 = np.searchsorted(self.cuts, hi - _U64(1), side="right")
        bounds = np.concatenate([[_U64(0)], self.cuts, [_ALL]])
        nonempty = bounds[1:] > bounds[:-1]  # an empty run (two equal cuts) owns nothing
        live = _U64(int(sum(1 << i for i in np.flatnonzero(nonempty))))
        out: U64Array = _PREFIX[r1 + 1] & ~_PREFIX[r0] & live
        return out

    def loads(self, keys: U64Array, weights: F64Array) -> F64Array:
        """Load of each shard: the sum of `weights` of the `keys` it owns."""
        out: F64Array = np.bincount(self.owners(keys), weights=weights, minlength=self.k)[: self.k].astype(np.float64)
        return out

    def _living_loads(self, keys: U64Array, weights: F64Array) -> F64Array:
        load = self.loads(keys, weights)
        return load[[i for i in range(self.k) if i not in self.dead]] if self.dead else load

    def imbalance(self, keys: U64Array, weights: F64Array) -> float:
        """max / mean of `loads` (1.0 is perfect; 1.0 also with no load)."""
        load = self._living_loads(keys, weights)
        mean = float(load.mean())
        return float(load.max()) / mean if mean > 0 else 1.0

    def excess(self, keys: U64Array, weights: F64Array) -> float:
        """max - mean of `loads`: the load a perfect balance would take off the busiest shard."""
        load = self._living_loads(keys, weights)
        return float(load.max() - load.mean())

    def _cut_at(self, sk: U64Array, cum: F64Array, positions: F64Array) -> U64Array:
        """Cut keys at cumulative-load `positions` of the sorted keys `sk` (cum = inclusive prefix sums).

        A cut at position p is the key of the first point whose inclusive
        prefix sum exceeds p: the points before it hold load <= p.
        """
        i = np.searchsorted(cum, positions, side="right")
        out = np.full(positions.shape, _ALL, dtype=np.uint64)
        inside = i < sk.size
        out[inside] = sk[i[inside]]
        return out

    def place(self, keys: U64Array, weights: F64Array) -> None:
        """Cut the curve into K runs of equal load (moves whatever it needs to). Bumps `version` if cuts move."""
        self._move(keys, weights, np.inf)

    def rebalance(self, keys: U64Array, weights: F64Array, max_move: float) -> float:
        """Slide the cuts toward equal load, moving at most `max_move` of the load; returns the share moved.

        In cumulative-load space, cut i sits at c_i and its target is
        t_i = i W / K; every cut moves the same fraction a of its way, with
        ``a = min(1, max_move W / sum |t_i - c_i|)``. Cuts never cross (c and
        t are both sorted), so the load that changes owner is at most
        ``a sum |t_i - c_i| <= max_move W`` (plus one key's load per cut: cuts
        snap to keys). The share returned is measured: the load of the given
        keys whose owner changed.
        """
        return self._move(keys, weights, max_move)

    def _move(self, keys: U64Array, weights: F64Array, max_move: float) -> float:
        if self.k == 1 or keys.size == 0:
            return 0.0
        order = np.argsort(keys, kind="stable")
        sk, w = keys[order], weights[order]
        cum = np.cumsum(w)
        total = float(cum[-1])
        if total <= 0:
            return 0.0
        # cumulative load before each current cut (load of the keys below it)
        j = np.searchsorted(sk, self.cuts, side="left")
        cur = np.where(j > 0, cum[np.maximum(j - 1, 0)], 0.0)
        # cut i ends run i: living runs get equal shares, dead runs none (they stay empty)
        alive = np.array([i not in self.dead for i in range(self.k)], dtype=np.float64)
        target = total * np.cumsum(alive)[:-1] / alive.sum()
        dist = float(np.abs(target - cur).sum())
        if dist <= 0:
            return 0.0
        a = min(1.0, max_move * total / dist)
        new = self._cut_at(sk, cum, target if a >= 1.0 else cur + a * (target - cur))
        new = self._collapse(np.maximum.accumulate(new))  # sorted, whatever rounding did; dead runs empty
        before = np.searchsorted(self.cuts, sk, side="right")
        after = np.searchsorted(new, sk, side="right")
        moved = float(w[before != after].sum())
        if not np.array_equal(new, self.cuts):
            self.cuts = new
            self.version += 1
        return moved / total
