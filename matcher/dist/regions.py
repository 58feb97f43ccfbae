"""The split tree of geohash regions and its cached ownership (placement by hash).

A region is a geohash prefix. The regions always partition the globe: a cell
belongs to its ``region_precision`` prefix unless that prefix is split, then to
its one-longer prefix unless that is split, and so on (never finer than
``halo_precision``). Only the split prefixes are stored; the set of splits is
closed upwards (a split prefix longer than ``region_precision`` has a split
parent), so the regions are exactly the unsplit prefixes whose ancestors down
to ``region_precision`` are all split: a prefix-free cover of the globe. A
region's owner is ``ring.owner(region string)`` (`matcher.dist.ring`).

Guarantees: every halo cell is in exactly one region (partition); owners depend
only on (shard set, vnodes, splits), so ``split`` then ``merge`` restores them
exactly; ``version`` increases by one on every change, and while it is
unchanged every answer is unchanged. Lookups are vectorized and cached per
region (sorted keys + searchsorted), the cache dropped on every change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from matcher.core import geo
from matcher.dist.ring import HashRing, check_mask_id, shard_id

__all__ = ["MAX_HALO_PRECISION", "RegionChange", "RegionTree"]

#: Finest halo precision: region keys pack (prefix << 4) | precision in a uint64.
MAX_HALO_PRECISION = 11

_U64 = np.uint64
_REGION_CACHE_MAX = 1 << 20  # entries; reset (not grown) past this
_ALPHABET_SET = frozenset(geo.ALPHABET)

U64Array = npt.NDArray[np.uint64]
I32Array = npt.NDArray[np.int32]
I64Array = npt.NDArray[np.int64]


class RegionChange(NamedTuple):
    """One change `RegionTree.rebalance` made."""

    op: str  # "split" | "merge"
    prefix: str  # the region split, or the split prefix merged back
    version: int  # version right after the change


class RegionTree:
    """Geohash regions (a split tree over ``region_precision`` prefixes) placed on shards by a `HashRing`.

    `shards` (ids 0..63), `region_precision` <= `halo_precision` (the finest
    region), `vnodes` per shard. Precisions are validated by the caller
    (`matcher.dist.sharding.RegionMap`).
    """

    def __init__(self, shards: Iterable[int], region_precision: int, halo_precision: int, vnodes: int) -> None:
        ids = [shard_id(s) for s in shards]
        if not ids:
            raise ValueError("a RegionMap needs at least one shard")
        for s in ids:
            check_mask_id(s)
        self._ring = HashRing(ids, vnodes)
        self._rp, self._hp = region_precision, halo_precision
        self._splits: set[str] = set()
        self._split_arrays: list[U64Array] = []  # sorted uint64 split prefixes per level rp, rp+1, ...
        self.version = 0
        self._clear_cache()

    @property
    def region_precision(self) -> int:
        return self._rp

    @property
    def halo_precision(self) -> int:
        return self._hp

    @property
    def shards(self) -> tuple[int, ...]:
        return self._ring.shards

    @property
    def ring(self) -> HashRing:
        """The ring (read it; change shards only through `add_shard` / `remove_shard`)."""
        return self._ring

    @property
    def splits(self) -> tuple[str, ...]:
        """The split prefixes, sorted."""
        return tuple(sorted(self._splits))

    def explicit_regions(self) -> tuple[str, ...]:
        """Regions finer than ``region_precision`` (children of splits that are not split), sorted."""
        return tuple(sorted(c for p in self._splits for c in (p + ch for ch in geo.ALPHABET) if c not in self._splits))

    def _clear_cache(self) -> None:
        self._rk: U64Array = np.empty(0, np.uint64)  # region keys (prefix << 4 | precision), sorted
        self._ro: I32Array = np.empty(0, np.int32)  # their owners

    # ---------------------------------------------------------- shards

    def add_shard(self, shard: int) -> None:
        """Add a shard: about 1/(N+1) of the regions move to it, no others move. Bumps `version`."""
        s = shard_id(shard)
        check_mask_id(s)
        self._ring.add(s)
        self.version += 1
        self._clear_cache()

    def remove_shard(self, shard: int) -> None:
        """Remove a shard: only its regions move (to the others). Bumps `version`."""
        if len(self._ring) == 1 and shard in self._ring:
            raise ValueError("cannot remove the last shard")
        self._ring.remove(shard)
        self.version += 1
        self._clear_cache()

    # ---------------------------------------------------------- regions

    def _check_prefix(self, prefix: object) -> str:
        if not isinstance(prefix, str):
            raise TypeError(f"a region prefix is a str, got {type(prefix).__name__}")
        if not prefix or not set(prefix) <= _ALPHABET_SET:
            raise ValueError(f"{prefix!r} is not a geohash (alphabet: {geo.ALPHABET})")
        return prefix

    def is_region(self, prefix: str) -> bool:
        """True if `prefix` is one of the current regions (a leaf of the split tree)."""
        p = self._check_prefix(prefix)
        if not self._rp <= len(p) <= self._hp or p in self._splits:
            return False
        return all(p[:q] in self._splits for q in range(self._rp, len(p)))

    def region_of(self, geohash: str) -> str:
        """The region containing a geohash of at least ``region_precision`` characters.

        ValueError if the geohash is shorter, or is itself split (it then
        covers several regions).
        """
        g = self._check_prefix(geohash)
        if len(g) < self._rp:
            raise ValueError(f"{g!r} is coarser than region_precision {self._rp}")
        r = g[: self._rp]
        while r in self._splits:
            if len(r) == len(g):
                raise ValueError(f"{g!r} is split: it covers several regions")
            r = g[: len(r) + 1]
        return r

    def region_owner(self, prefix: str) -> int:
        """The shard owning region `prefix` (ValueError if it is not a current region)."""
        if not self.is_region(prefix):
            raise ValueError(f"{prefix!r} is not a current region")
        return int(self._ring.owner([prefix])[0])

    def _rebuild_splits(self) -> None:
        levels: list[list[str]] = [[] for _ in range(self._rp, self._hp)]
        for p in self._splits:
            levels[len(p) - self._rp].append(p)
        arrays = [np.sort(geo.str_to_int(np.asarray(lv))) if lv else np.empty(0, np.uint64) for lv in levels]
        while arrays and arrays[-1].size == 0:
            arrays.pop()
        self._split_arrays = arrays

    def split(self, prefix: str) -> tuple[str, ...]:
        """Replace region `prefix` by its 32 children (one character longer); returns them.

        Each child is placed on the ring independently (a hot region spreads
        over ~min(32, N) shards). ValueError if `prefix` is not a current
        region or is already at ``halo_precision``. Bumps `version`.

        Cost to know: children at ``halo_precision`` (the default 4 -> 5)
        make every halo cell of the hot area its own region, so nearly all
        of its drivers become shared (visible to 2-9 shards) and its
        matching goes through the cross-shard path.
        """
        p = self._check_prefix(prefix)
        if len(p) >= self._hp:
            raise ValueError(f"cannot split {p!r}: regions never go finer than halo_precision {self._hp}")
        if not self.is_region(p):
            raise ValueError(f"cannot split {p!r}: not a current region (see region_of / splits)")
        self._splits.add(p)
        self._rebuild_splits()
        self.version += 1  # region keys cache their owners by name: nothing to drop
        return tuple(p + c for c in geo.ALPHABET)

    def merge(self, prefix: str) -> None:
        """Undo ``split(prefix)``: `prefix` is one region again (its split descendants too).

        Owners return exactly to what they were before the split (owners are
        a function of the region strings and the ring). ValueError if
        `prefix` is not split. Bumps `version`.
        """
        p = self._check_prefix(prefix)
        if p not in self._splits:
            raise ValueError(f"cannot merge {p!r}: it is not split")
        self._splits = {s for s in self._splits if not s.startswith(p)}
        self._rebuild_splits()
        self.version += 1

    def rebalance(self, load: Mapping[str, float], split_at: float, merge_below: float) -> list[RegionChange]:
        """Split hot regions and merge cold split families; returns the changes made.

        `load` maps geohash strings (normally regions, as `load_by_region`
        gives) to pending requests per tick. A key finer than its region
        counts for that region; a key that is itself split (a stale region
        name from before a split) counts only toward its family's total.

        - split: every current region with load >= `split_at` (> 0) and
          shorter than ``halo_precision``;
        - merge: every split prefix whose 32 children are all regions and
          whose total load (children plus the prefix's own key) is
          < `merge_below`.

        Hysteresis: ``merge_below < split_at / 2`` is required (ValueError),
        so a family just split (total >= split_at) merges only after its
        load has more than halved. `split_at` <= 0 disables splitting and
        `merge_below` <= 0 disables merging. Merges are decided on the map
        as it was before the call, so a region split here is never merged in
        the same call. Changes are applied merges first, then splits, each in
        sorted order, and each bumps `version`.
        """
        split_at, merge_below = float(split_at), float(merge_below)
        if split_at > 0 and merge_below > 0 and not merge_below < split_at / 2:
            raise ValueError(
                f"hysteresis needs merge_below < split_at / 2, got merge_below={merge_below}, split_at={split_at}"
            )
        region_load: dict[str, float] = defaultdict(float)
        family_load: dict[str, float] = defaultdict(float)
        for key, value in load.items():
            g = self._check_prefix(str(key))
            if len(g) < self._rp:
                raise ValueError(f"load key {g!r} is coarser than region_precision {self._rp}")
            if g in self._splits:
                family_load[g] += float(value)
            else:
                region_load[self.region_of(g)] += float(value)
        merges = []
        if merge_below > 0:
            for p in sorted(self._splits):
                kids = [p + c for c in geo.ALPHABET]
                if any(k in self._splits for k in kids):
                    continue
                total = family_load.get(p, 0.0) + sum(region_load.get(k, 0.0) for k in kids)
                if total < merge_below:
                    merges.append(p)
        splits = []
        if split_at > 0:
            merged = tuple(merges)
            splits = sorted(
                r
                for r, v in region_load.items()
                if v >= split_at and len(r) < self._hp and not (merged and r.startswith(merged))
            )
        changes = []
        for p in merges:
            self.merge(p)
            changes.append(RegionChange("merge", p, self.version))
        for r in splits:
            self.split(r)
            changes.append(RegionChange("split", r, self.version))
        return changes

    # ---------------------------------------------------------- cell lookups

    def _resolve(self, cells: U64Array) -> tuple[U64Array, I64Array]:
        """(region prefix uint64, region precision int64) of valid halo cells (1-d).

        The precision is region_precision plus the number of split levels
        the cell descends through: splits are closed upwards, so the levels
        at which a cell's prefix is split are exactly rp, rp+1, ... up to its
        region's parent.
        """
        hp, rp = self._hp, self._rp
        level = np.full(cells.shape, rp, dtype=np.int64)
        for j, S in enumerate(self._split_arrays):
            if S.size == 0:
                continue
            pre = cells >> _U64(5 * (hp - rp - j))
            i = np.searchsorted(S, pre)
            np.minimum(i, S.size - 1, out=i)
            level += S[i] == pre
        if self._split_arrays:
            prefix = cells >> ((hp - level) * 5).astype(np.uint64)
        else:
            prefix = cells >> _U64(5 * (hp - rp))
        return prefix, level

    def _region_owners(self, keys: U64Array) -> I32Array:
        """Owner (int32) of region keys ``prefix << 4 | precision``, through the sorted cache."""
        K = self._rk
        if K.size:
            i = np.searchsorted(K, keys)
            np.minimum(i, K.size - 1, out=i)
            hit = K[i] == keys
            if hit.all():
                return self._ro[i]
            miss = np.unique(keys[~hit])
        else:
            miss = np.unique(keys)
        if K.size + miss.size > _REGION_CACHE_MAX:  # start over with just this call's keys
            K, miss = K[:0], np.unique(keys)
        names = geo.int_to_str(miss >> _U64(4), (miss & _U64(15)).astype(np.int64))
        own = self._ring.owner(names).astype(np.int32)
        if K.size == 0:
            K, own_k = miss, own  # np.unique: already sorted
        else:
            K = np.concatenate([K, miss])
            own_k = np.concatenate([self._ro, own])
            order = np.argsort(K, kind="stable")
            K, own_k = K[order], own_k[order]
        self._rk, self._ro = K, own_k
        return own_k[np.searchsorted(K, keys)]

    def region_of_cells(self, cells: Any) -> tuple[U64Array, npt.NDArray[np.int8]]:
        """(prefix uint64, precision int8) of the region of each halo-precision cell.

        `NO_CELL` gives (`NO_CELL`, 0). ``geo.int_to_str(prefix, precision)``
        gives the region names.
        """
        c = np.asarray(cells, dtype=np.uint64)
        flat = c.reshape(-1)
        valid = flat != geo.NO_CELL
        prefix = np.full(flat.shape, geo.NO_CELL, dtype=np.uint64)
        level = np.zeros(flat.shape, dtype=np.int8)
        p, lv = self._resolve(flat[valid])
        prefix[valid], level[valid] = p, lv
        return prefix.reshape(c.shape), level.reshape(c.shape)

    def owner_of_cells(self, cells: Any) -> I32Array:
        """Owner shard (int32, shape of `cells`) of uint64 cells at ``halo_precision``.

        For each cell: its region (the deepest split level it descends to,
        prefixes by shifting ``5 * (halo_precision - p)`` bits), then the
        region's owner from a per-region cache (sorted keys + searchsorted).
        `NO_CELL` gives -1. Bits above ``5 * halo_precision`` must be zero
        (not checked).
        """
        c = np.asarray(cells, dtype=np.uint64)
        flat = c.reshape(-1)
        valid = flat != geo.NO_CELL
        if valid.all():
            prefix, level = self._resolve(flat)
            return self._region_owners((prefix << _U64(4)) | level.astype(np.uint64)).reshape(c.shape)
        out = np.full(flat.shape, -1, dtype=np.int32)
        if valid.any():
            prefix, level = self._resolve(flat[valid])
            out[valid] = self._region_owners((prefix << _U64(4)) | level.astype(np.uint64))
        return out.reshape(c.shape)

    def load_of_cells(self, cells: U64Array) -> dict[str, int]:
        """Count of valid halo cells per region (e.g. a tick's pending pickups): the `load` for `rebalance`."""
        cells = cells[cells != geo.NO_CELL]
        if cells.size == 0:
            return {}
        prefix, level = self._resolve(cells)
        keys, counts = np.unique((prefix << _U64(4)) | level.astype(np.uint64), return_counts=True)
        names = geo.int_to_str(keys >> _U64(4), (keys & _U64(15)).astype(np.int64))
        return {str(n): int(k) for n, k in zip(names, counts)}
