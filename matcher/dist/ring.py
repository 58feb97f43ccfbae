"""Stable hashing, the consistent-hash ring and the shard-membership masks.

Pure numpy. `hash_keys` is a fixed splitmix64 chain, the same in every process
and on every machine (Python's ``hash()`` is salted per process and would
scatter regions between restarts); `HashRing` places keys on shards with
virtual nodes (adding a shard moves about 1/N of the keys); a membership mask
is one uint64 per driver, bit s set for every shard that holds it
(`popcount64`, `is_shared`, `members`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, SupportsIndex

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_SHARDS", "HashRing", "check_mask_id", "hash_keys", "is_shared", "members", "popcount64", "shard_id"]

#: Shard ids are 0..MAX_SHARDS-1: one bit each in a uint64 membership mask.
MAX_SHARDS = 64

_U64 = np.uint64
_GAMMA = _U64(0x9E3779B97F4A7C15)  # splitmix64 increment (golden ratio)
_C1 = _U64(0xBF58476D1CE4E5B9)
_C2 = _U64(0x94D049BB133111EB)
_STR_SEED = _U64(0x6A09E667F3BCC908)  # fractional bits of sqrt(2): arbitrary, fixed
_INT_SEED = _U64(0xBB67AE8584CAA73B)  # fractional bits of sqrt(3)

U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]


# ------------------------------------------------------------------- hashing


def _mix64(x: U64Array) -> U64Array:
    """splitmix64 output function of ``x + gamma`` (a bijection of uint64); 1-d in, new array out."""
    z = x + _GAMMA
    z ^= z >> _U64(30)
    z *= _C1
    z ^= z >> _U64(27)
    z *= _C2
    z ^= z >> _U64(31)
    return z


def hash_keys(keys: Any) -> U64Array:
    """Stable 64-bit hashes of keys, uint64 with the shape of `keys`.

    Strings (a list of str, or a numpy str/bytes array): ``h = seed``, then
    ``h = mix(h ^ code)`` per character code point (UCS-4; a bytes string
    hashes like the str of the same ASCII), then ``h = mix(h ^ length)``,
    where ``mix`` is splitmix64's output function of ``h + 0x9E3779B97F4A7C15``.
    The array's width does not matter ('ab' as '<U2' and as '<U9' hash
    alike). Integers: ``mix(int64 bits ^ seed)``.

    The same in every process, machine and Python version: it decides which
    shard owns what, so it is effectively a wire format (tests pin values).
    Vectorized: the Python loop runs over character positions, not keys.
    """
    a = np.asarray(keys)
    if a.dtype == object:
        if not all(isinstance(k, str) for k in a.flat):
            raise TypeError("hash_keys: keys must be all str or all integers")
        a = a.astype(str) if a.size else np.zeros(a.shape, dtype="<U1")
    shape = a.shape
    flat = np.ascontiguousarray(a.reshape(-1))
    n = flat.size
    if a.dtype.kind in "iub":
        x = flat.astype(np.int64).view(np.uint64) if a.dtype.kind != "u" else flat.astype(np.uint64)
        return _mix64(x ^ _INT_SEED).reshape(shape)
    if a.dtype.kind == "U":
        w = a.dtype.itemsize // 4
        codes: npt.NDArray[np.unsignedinteger[Any]] = (
            flat.view(np.uint32).reshape(n, w) if w else np.zeros((n, 0), np.uint32)
        )
    elif a.dtype.kind == "S":
        w = a.dtype.itemsize
        codes = flat.view(np.uint8).reshape(n, w) if w else np.zeros((n, 0), np.uint8)
    else:
        raise TypeError(f"hash_keys: expected str or integer keys, got dtype {a.dtype}")
    h = np.full(n, _STR_SEED, dtype=np.uint64)
    if w:
        nz = codes != 0
        # numpy strips trailing NULs: a string's length ends at its last non-NUL
        length = np.where(nz.any(axis=1), w - np.argmax(nz[:, ::-1], axis=1), 0)
    else:
        length = np.zeros(n, dtype=np.int64)
    for i in range(w):
        active = length > i
        step = _mix64(h ^ codes[:, i].astype(np.uint64))
        np.copyto(h, step, where=active)
    return _mix64(h ^ length.astype(np.uint64)).reshape(shape)


# ---------------------------------------------------------------- the ring


def shard_id(shard: SupportsIndex) -> int:
    """`shard` as a non-negative int (ValueError otherwise)."""
    s = operator.index(shard)
    if s < 0:
        raise ValueError(f"shard ids are non-negative integers, got {shard!r}")
    return s


class HashRing:
    """Consistent hashing of string keys onto integer shard ids, with virtual nodes.

    Shard ``s`` owns the ring points ``hash_keys(f"{s}#{i}")`` for i in
    ``range(vnodes)``; a key belongs to the shard of the first point at or
    after ``hash_keys(key)``, wrapping past 2**64 to the first point. The
    points of a shard do not depend on the other shards, so:

    - the owner of a key is a function of (key, shard set, vnodes) only:
      the order of construction, ``add`` and ``remove`` does not matter;
    - ``add(s)`` moves only keys whose new owner is ``s`` (about 1/(N+1) of
      them, the new shard's share of the ring);
    - ``remove(s)`` moves only the keys ``s`` owned, spread over the others.

    With 160 vnodes a shard's share of the ring is within a few percent of
    1/N (standard deviation about 1/sqrt(vnodes) ~ 8% relative); see `shares`.
    Ties between points (probability ~N^2 vnodes^2 / 2^65) go to the lower
    shard id, deterministically.
    """

    def __init__(self, shards: Iterable[int] = (), vnodes: int = 160) -> None:
        vnodes = operator.index(vnodes)
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {vnodes}")
        self._vnodes = vnodes
        ids = [shard_id(s) for s in shards]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate shard ids in {ids}")
        self._pos = np.empty(0, np.uint64)
        self._own = np.empty(0, np.int64)
        if ids:
            self._set(
                np.concatenate([self._points(s) for s in ids]),
                np.repeat(np.asarray(ids, dtype=np.int64), vnodes),
            )

    def _points(self, shard: int) -> U64Array:
        return hash_keys([f"{shard}#{i}" for i in range(self._vnodes)])

    def _set(self, pos: U64Array, own: I64Array) -> None:
        order = np.lexsort((own, pos))  # by position, ties by shard id
        self._pos, self._own = pos[order], own[order]

    @property
    def vnodes(self) -> int:
        return self._vnodes

    @property
    def shards(self) -> tuple[int, ...]:
        """The shard ids on the ring, ascending."""
        return tuple(int(s) for s in np.unique(self._own))

    def __len__(self) -> int:
        return self._own.size // self._vnodes

    def __contains__(self, shard: object) -> bool:
        if not isinstance(shard, SupportsIndex):
            return False
        return bool((self._own == operator.index(shard)).any())

    def add(self, shard: int) -> None:
        """Put `shard` on the ring (ValueError if it is already there)."""
        s = shard_id(shard)
        if s in self:
            raise ValueError(f"shard {s} is already on the ring")
        self._set(
            np.concatenate([self._pos, self._points(s)]),
            np.concatenate([self._own, np.full(self._vnodes, s, np.int64)]),
        )

    def remove(self, shard: int) -> None:
        """Take `shard` off the ring (ValueError if it is not there)."""
        s = shard_id(shard)
        keep = self._own != s
        if keep.all():
            raise ValueError(f"shard {s} is not on the ring")
        self._pos, self._own = self._pos[keep], self._own[keep]

    def owner_of_hashes(self, h: Any) -> I64Array:
        """Owner shard (int64, shape of `h`) of uint64 key hashes; one searchsorted."""
        if self._pos.size == 0:
            raise ValueError("the ring has no shards")
        hh = np.asarray(h, dtype=np.uint64)
        i = np.searchsorted(self._pos, hh.reshape(-1), side="left")
        i[i == self._pos.size] = 0  # past the last point: wrap to the first
        out: I64Array = self._own[i].reshape(hh.shape)
        return out

    def owner(self, keys: Any) -> I64Array:
        """Owner shard (int64 array, shape of `keys`) of str keys (list or numpy str array).

        Vectorized: `hash_keys` then one ``np.searchsorted`` on the sorted
        ring points. Integer keys are accepted too (hashed as integers).
        """
        return self.owner_of_hashes(hash_keys(keys))

    def shares(self) -> dict[int, float]:
        """Fraction of the hash space each shard owns (sums to 1)."""
        if self._pos.size == 0:
            return {}
        if self._pos.size == 1:
            return {int(self._own[0]): 1.0}
        arcs = (self._pos - np.roll(self._pos, 1)).astype(np.float64) / 2.0**64  # uint64: the first arc wraps
        ids, inv = np.unique(self._own, return_inverse=True)
        tot = np.bincount(inv, weights=arcs, minlength=ids.size)
        return {int(s): float(t) for s, t in zip(ids, tot / tot.sum())}

    def __repr__(self) -> str:
        return f"HashRing(shards={list(self.shards)}, vnodes={self._vnodes})"


# ------------------------------------------------------------ mask helpers


_P1 = _U64(0x5555555555555555)
_P2 = _U64(0x3333333333333333)
_P4 = _U64(0x0F0F0F0F0F0F0F0F)
_P8 = _U64(0x0101010101010101)


def popcount64(mask: Any) -> I64Array:
    """Number of set bits of each uint64 (int64 array of the same shape)."""
    m = np.asarray(mask, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        out: I64Array = np.bitwise_count(m).astype(np.int64)
        return out
    x = m - ((m >> _U64(1)) & _P1)
    x = (x & _P2) + ((x >> _U64(2)) & _P2)
    x = (x + (x >> _U64(4))) & _P4
    res: I64Array = ((x * _P8) >> _U64(56)).astype(np.int64)
    return res


def is_shared(mask: Any) -> npt.NDArray[np.bool_]:
    """Bool: the driver is visible on more than one shard (``popcount(mask) > 1``)."""
    m = np.asarray(mask, dtype=np.uint64)
    out: npt.NDArray[np.bool_] = (m & (m - _U64(1))) != 0  # clears the lowest bit; anything left -> 2+ bits
    return out


def members(mask: Any, shard: int) -> npt.NDArray[np.bool_]:
    """Bool: the drivers whose membership `mask` includes `shard`."""
    s = operator.index(shard)
    if not 0 <= s < MAX_SHARDS:
        raise ValueError(f"shard id must be in 0..{MAX_SHARDS - 1}, got {shard}")
    return ((np.asarray(mask, dtype=np.uint64) >> _U64(s)) & _U64(1)).astype(bool)


def check_mask_id(s: int) -> None:
    """ValueError unless `s` fits one bit of a uint64 mask (0..63)."""
    if not 0 <= s < MAX_SHARDS:
        raise ValueError(f"shard ids must be in 0..{MAX_SHARDS - 1} (one bit of a uint64 mask), got {s}")
