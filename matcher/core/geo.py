"""Vectorized geo helpers: geohash (str and integer forms), neighbours, distances.

Pure numpy; no Python loop runs over points (the only loops are over the <= 12
characters or the 8 neighbour directions, each vectorized across all points;
bit interleaving uses magic-number Morton spreading).

Shape rule, everywhere: outputs have the broadcast shape of the inputs, plus a
trailing axis where stated ((..., 8) for neighbours, (..., 3) for unit
vectors). Scalar inputs therefore give 0-d arrays (``encode(1.0, 2.0)[()]``
is a ``np.str_``); 1-d inputs give 1-d outputs.

Geohash conventions: base32 alphabet ``0123456789bcdefghjkmnpqrstuvwxyz``;
bits interleaved starting with longitude; a p-character hash is the integer
of its 5p bits (most significant = first longitude bit). For precision p,
latitude gets floor(5p/2) bits and longitude ceil(5p/2). Cell boundaries,
centres and bounds are dyadic rationals and are computed exactly in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from matcher.core.arrays import AnyArray, ArrayLike, BoolArray, F64Array, I64Array, U64Array

__all__ = [
    "ALPHABET",
    "EARTH_RADIUS_M",
    "MAX_PRECISION",
    "NEIGHBOR_ORDER",
    "NO_CELL",
    "bearing_deg",
    "bounds",
    "bounds_int",
    "cell_indices",
    "cell_size_m",
    "chord_for_distance",
    "decode",
    "decode_int",
    "encode",
    "encode_int",
    "haversine_m",
    "int_to_str",
    "interleave",
    "neighbors",
    "neighbors_int",
    "str_to_int",
    "to_unit_xyz",
    "valid_coords",
]

ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
EARTH_RADIUS_M = 6_371_008.8  # IUGG mean earth radius
MAX_PRECISION = 12  # 60 bits: fits a uint64 with room for the sentinel
#: Integer sentinel for "no cell" (beyond a pole; the "" hash). Never a valid
#: geohash integer, which has at most 60 bits.
NO_CELL = np.uint64(np.iinfo(np.uint64).max)
NEIGHBOR_ORDER = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")

# (d_lat_cells, d_lng_cells) per neighbour, in NEIGHBOR_ORDER.
_D_LAT = np.array([1, 1, 0, -1, -1, -1, 0, 1], dtype=np.int64)
_D_LNG = np.array([0, 1, 1, 1, 0, -1, -1, -1], dtype=np.int64)

# 5-bit value -> UCS4 code point, and code point (< 128) -> 5-bit value (255 = invalid).
_CHAR_CODES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8).astype(np.uint32)
_CHAR_VALUES = np.full(128, 255, dtype=np.uint8)
_CHAR_VALUES[_CHAR_CODES] = np.arange(32, dtype=np.uint8)
# 10-bit value -> two UCS4 chars packed in a uint64 (built through a uint32 view, so
# the byte order matches numpy's native '<U' layout on any platform).
_PAIR = np.empty((1024, 2), dtype=np.uint32)
_PAIR[:, 0] = _CHAR_CODES[np.arange(1024) >> 5]
_PAIR[:, 1] = _CHAR_CODES[np.arange(1024) & 31]
_PAIR_CODES = _PAIR.view(np.uint64).reshape(1024)
del _PAIR

_U64 = np.uint64
_M1 = _U64(0x5555555555555555)
_M2 = _U64(0x3333333333333333)
_M4 = _U64(0x0F0F0F0F0F0F0F0F)
_M8 = _U64(0x00FF00FF00FF00FF)
_M16 = _U64(0x0000FFFF0000FFFF)
_M32 = _U64(0x00000000FFFFFFFF)


# ---------------------------------------------------------------- validation


def _check_precision(precision: ArrayLike) -> int:
    """Scalar precision -> int in 1..12, else ValueError."""
    p = int(precision)  # type: ignore[arg-type]  # a scalar here; int() raises on anything else
    if p != precision or not 1 <= p <= MAX_PRECISION:
        raise ValueError(f"geohash precision must be an int in 1..{MAX_PRECISION}, got {precision!r}")
    return p


def _precision_arg(precision: ArrayLike) -> int | I64Array:
    """int (validated) or an int64 array with every element in 1..12."""
    if np.ndim(precision) == 0:
        return _check_precision(precision)
    p = np.asarray(precision)
    if p.dtype.kind not in "iu":
        raise ValueError("array precision must be integer-typed")
    p = p.astype(np.int64)
    if p.size and (p.min() < 1 or p.max() > MAX_PRECISION):
        raise ValueError(f"geohash precision must be in 1..{MAX_PRECISION}")
    return p


def valid_coords(lat: ArrayLike, lng: ArrayLike) -> BoolArray:
    """Bool mask: finite, |lat| <= 90 and |lng| <= 180 (NaN and inf are invalid).

    The one coordinate check of the project: traces, importers, driver pings and the
    sharding all call this, so a point is valid in one place iff it is valid in all.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    # NaN compares False, so finiteness comes for free.
    return np.asarray((np.abs(lat) <= 90.0) & (np.abs(lng) <= 180.0))


# ------------------------------------------------------------ bit twiddling


def _spread(x: U64Array) -> U64Array:
    """Morton spread: bit i of a uint64 (< 2**32) moves to bit 2i. Works in place."""
    x &= _M32
    x |= x << _U64(16)
    x &= _M16
    x |= x << _U64(8)
    x &= _M8
    x |= x << _U64(4)
    x &= _M4
    x |= x << _U64(2)
    x &= _M2
    x |= x << _U64(1)
    x &= _M1
    return x


def _compact(x: U64Array) -> U64Array:
    """Inverse of _spread: even bits of a uint64 packed into the low 32 bits."""
    x = x & _M1
    x |= x >> _U64(1)
    x &= _M2
    x |= x >> _U64(2)
    x &= _M4
    x |= x >> _U64(4)
    x &= _M8
    x |= x >> _U64(8)
    x &= _M16
    x |= x >> _U64(16)
    x &= _M32
    return x


def _bits(precision: Any) -> tuple[Any, Any]:
    """(lat_bits, lng_bits) for an int or int array precision."""
    total = 5 * precision
    return total // 2, total - total // 2


def _quantize(x: F64Array, lo: float, span: float, nbits: int) -> U64Array:
    """Cell index of x on [lo, lo+span) cut into 2**nbits cells, as uint64.

    Identical to nbits steps of bisection with ``x >= mid -> upper half``:
    a first float estimate is off by at most one cell (relative error
    ~3e-16 on a value < 2**30), and is corrected against the exact cell
    boundary ``k*c + lo`` (dyadic, so exact in float64). Out-of-range values
    clamp to the edge cells, as bisection does.
    """
    n = 1 << nbits
    c = span / n  # exact: span * 2**-nbits
    k = x - lo
    k *= n / span
    np.floor(k, out=k)
    b = k * c
    b += lo  # exact lower boundary of cell k
    k -= x < b
    b += c  # exact upper boundary of cell k
    k += x >= b
    np.clip(k, 0.0, n - 1.0, out=k)
    return k.astype(np.uint64)


def _interleave(ilat: U64Array, ilng: U64Array, odd: int) -> U64Array:
    """Geohash integer from cell indices; `odd` = 5p is odd (then lng holds the LSB). In place."""
    a = _spread(ilat)
    g = _spread(ilng)
    if odd:
        a <<= _U64(1)
    else:
        g <<= _U64(1)
    a |= g
    return a


def _deinterleave(h: U64Array, odd: Any) -> tuple[U64Array, U64Array]:
    """(ilat, ilng) cell indices from geohash integers (inverse of _interleave)."""
    if np.ndim(odd) == 0:
        if odd:
            return _compact(h >> _U64(1)), _compact(h)
        return _compact(h), _compact(h >> _U64(1))
    s_lat = odd.astype(np.uint64)
    return _compact(h >> s_lat), _compact(h >> (_U64(1) - s_lat))


# ------------------------------------------------------------------ encoding


def encode_int(lat: ArrayLike, lng: ArrayLike, precision: int = 6) -> U64Array:
    """Geohash integers (uint64, 5*precision significant bits) of points.

    Exactly equal to classic geohash bisection, including points on cell
    boundaries (they go to the upper/eastern cell) and lat=90 / lng=180
    (clipped into the last cell). Assumes finite, in-range inputs and does
    not check them (see `valid_coords`): finite out-of-range values clamp to
    the edge cells (longitude is not wrapped); NaN gives an unspecified cell.
    """
    p = _check_precision(precision)
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    if lat.shape != lng.shape:
        lat, lng = np.broadcast_arrays(lat, lng)
    shape = lat.shape
    ilat, ilng = cell_indices(lat.reshape(-1), lng.reshape(-1), p)
    return _interleave(ilat, ilng, (5 * p) & 1).reshape(shape)


def cell_indices(lat: F64Array, lng: F64Array, precision: int) -> tuple[U64Array, U64Array]:
    """(row, column) of points' geohash cells on the grid of `precision`, 1-d uint64.

    The row is the cell's latitude bits and the column its longitude bits: the
    two halves that `encode_int` interleaves (same clamping, same boundaries).
    """
    nlat, nlng = _bits(_check_precision(precision))
    return _quantize(lat, -90.0, 180.0, nlat), _quantize(lng, -180.0, 360.0, nlng)


def interleave(ilat: U64Array, ilng: U64Array, precision: int) -> U64Array:
    """Geohash integers of cells given as `cell_indices` (the inputs are left unchanged)."""
    return _interleave(ilat.copy(), ilng.copy(), (5 * _check_precision(precision)) & 1)


def _int_to_str_fixed(h: U64Array, p: int) -> AnyArray:
    """Geohash ints -> '<U{p}' array; no sentinel handling."""
    flat = h.reshape(-1)
    if p % 2 == 0:  # two characters per lookup
        pairs = np.empty((flat.size, p // 2), dtype=np.uint64)
        for j in range(p // 2):
            idx = flat >> _U64(10 * (p // 2 - 1 - j)) if j < p // 2 - 1 else flat.copy()
            idx &= _U64(1023)
            np.take(_PAIR_CODES, idx, out=pairs[:, j])
        return pairs.view(np.uint32).view(f"<U{p}").reshape(h.shape)
    codes = np.empty((flat.size, p), dtype=np.uint32)
    for i in range(p):
        idx = flat >> _U64(5 * (p - 1 - i)) if i < p - 1 else flat.copy()
        idx &= _U64(31)
        np.take(_CHAR_CODES, idx, out=codes[:, i])
    return codes.view(f"<U{p}").reshape(h.shape)


def encode(lat: ArrayLike, lng: ArrayLike, precision: int = 6) -> AnyArray:
    """Geohash strings, dtype '<U{precision}', shape = broadcast(lat, lng).

    Precision 1..12 (ValueError otherwise). Same guarantees and input
    assumptions as `encode_int` (exact bisection semantics; no validation).
    Scalars give a 0-d array.
    """
    p = _check_precision(precision)
    return _int_to_str_fixed(encode_int(lat, lng, p), p)


def int_to_str(h: ArrayLike, precision: ArrayLike) -> AnyArray:
    """Geohash integers -> strings; `NO_CELL` -> "".

    `precision` is an int (dtype '<U{precision}') or an int array broadcast
    with `h` (dtype '<U{max precision}', shorter hashes are shorter strings).
    Only the low 5*precision bits of `h` are read.
    """
    p = _precision_arg(precision)
    h = np.asarray(h, dtype=np.uint64)
    if isinstance(p, int):
        out = _int_to_str_fixed(h, p)
        none = h == NO_CELL
        if none.any():
            out[none] = ""  # `out` is a fresh array
        return out
    h, p = np.broadcast_arrays(h, p)
    pmax = int(p.max()) if p.size else 1
    flat, pf = h.reshape(-1), p.reshape(-1)
    none = flat == NO_CELL
    codes = np.zeros((flat.size, pmax), dtype=np.uint32)
    for i in range(pmax):
        shift = np.maximum(pf - 1 - i, 0).astype(np.uint64) * _U64(5)
        col = _CHAR_CODES[(flat >> shift) & _U64(31)]
        col[(pf <= i) | none] = 0
        codes[:, i] = col
    return codes.view(f"<U{pmax}").reshape(h.shape)


def _parse(s: ArrayLike) -> tuple[U64Array, I64Array]:
    """str/bytes array -> (h uint64, length int64), both shaped like the input.

    "" -> (NO_CELL, 0). ValueError on a bad character or length > 12.
    """
    arr = np.asarray(s)
    if arr.dtype.kind == "S":
        w = arr.dtype.itemsize
        codes = np.ascontiguousarray(arr).view(np.uint8).reshape(arr.size, w).astype(np.uint32)
    elif arr.dtype.kind == "U":
        w = arr.dtype.itemsize // 4
        codes = np.ascontiguousarray(arr).view(np.uint32).reshape(arr.size, w)
    else:
        raise TypeError(f"expected a str or bytes array, got dtype {arr.dtype}")
    if w == 0 or arr.size == 0:  # all empty, or no strings at all
        return np.full(arr.shape, NO_CELL, dtype=np.uint64), np.zeros(arr.shape, np.int64)
    nz = codes != 0
    # length = index after the last non-NUL char (numpy strips trailing NULs)
    length = np.where(nz.any(axis=1), w - np.argmax(nz[:, ::-1], axis=1), 0).astype(np.int64)
    if length.max() > MAX_PRECISION:
        raise ValueError(f"geohash longer than {MAX_PRECISION} characters")
    w = min(w, MAX_PRECISION)
    codes = codes[:, :w]
    vals = np.where(codes < 128, _CHAR_VALUES[np.minimum(codes, 127)], 255)
    inside = np.arange(w) < length[:, None]
    if (vals[inside] == 255).any():
        raise ValueError("invalid geohash character (alphabet: lowercase " + ALPHABET + ")")
    vals = np.where(inside, vals, 0).astype(np.uint64)
    h = np.zeros(arr.size, dtype=np.uint64)
    for i in range(w):
        h <<= _U64(5)
        h |= vals[:, i]
    # left-aligned to w chars; shift shorter hashes down to their own length
    h >>= ((w - length) * 5).astype(np.uint64)
    h[length == 0] = NO_CELL
    return h.reshape(arr.shape), length.reshape(arr.shape)


def str_to_int(s: ArrayLike) -> U64Array:
    """Geohash strings (str or bytes array) -> uint64 integers; "" -> `NO_CELL`.

    Mixed lengths are accepted, but the integer does not carry its
    precision: it is the string's length (keep it, or use the string
    functions, which handle mixed lengths). ValueError on a character
    outside the lowercase alphabet (uppercase is rejected) or a hash longer
    than 12.
    """
    return _parse(s)[0]


# ------------------------------------------------------------------ decoding


def _flat_cells(h: ArrayLike, precision: ArrayLike) -> tuple[U64Array, int | I64Array, tuple[int, ...]]:
    """(flat uint64 cells, precision as int or flat array broadcast with them, original shape)."""
    p = _precision_arg(precision)
    h = np.asarray(h, dtype=np.uint64)
    if not isinstance(p, int):
        h, p = np.broadcast_arrays(h, p)
        p = p.reshape(-1)
    return h.reshape(-1), p, h.shape


def bounds_int(h: ArrayLike, precision: ArrayLike) -> tuple[F64Array, F64Array, F64Array, F64Array]:
    """(lat_min, lat_max, lng_min, lng_max) float64 arrays of geohash integers.

    Exact (dyadic) cell edges; `NO_CELL` gives NaN. `precision` is an int or
    an int array broadcast with `h`. Bits above 5*precision must be zero
    (not checked).
    """
    h, p, shape = _flat_cells(h, precision)
    nlat, nlng = _bits(p)
    ilat, ilng = _deinterleave(h, (5 * p) & 1)
    clat = np.ldexp(180.0, -nlat)
    clng = np.ldexp(360.0, -nlng)
    lat0 = ilat.astype(np.float64) * clat - 90.0
    lng0 = ilng.astype(np.float64) * clng - 180.0
    lat1 = lat0 + clat
    lng1 = lng0 + clng
    none = h == NO_CELL
    if none.any():
        for a in (lat0, lat1, lng0, lng1):
            a[none] = np.nan
    return lat0.reshape(shape), lat1.reshape(shape), lng0.reshape(shape), lng1.reshape(shape)


def decode_int(h: ArrayLike, precision: ArrayLike) -> tuple[F64Array, F64Array]:
    """(lat, lng) float64 cell centres of geohash integers; `NO_CELL` -> NaN.

    Centres are exact and strictly inside the cell, so
    ``encode_int(*decode_int(h, p), p) == h``.
    """
    lat0, lat1, lng0, lng1 = bounds_int(h, precision)
    return np.asarray((lat0 + lat1) * 0.5), np.asarray((lng0 + lng1) * 0.5)


def decode(geohash: ArrayLike) -> tuple[F64Array, F64Array]:
    """(lat, lng) float64 cell centres of geohash strings (mixed lengths OK; "" -> NaN)."""
    h, length = _parse(geohash)
    return decode_int(h, np.maximum(length, 1))


def bounds(geohash: ArrayLike) -> tuple[F64Array, F64Array, F64Array, F64Array]:
    """(lat_min, lat_max, lng_min, lng_max) of geohash strings (mixed lengths OK; "" -> NaN).

    Every point that encodes to a cell satisfies lat_min <= lat < lat_max
    (<= at lat_max == 90) and likewise for longitude (<= at 180).
    """
    h, length = _parse(geohash)
    return bounds_int(h, np.maximum(length, 1))


# ---------------------------------------------------------------- neighbours


def neighbors_int(h: ArrayLike, precision: ArrayLike) -> U64Array:
    """The 8 neighbours of geohash integers, shape (..., 8) uint64.

    Order N, NE, E, SE, S, SW, W, NW. Longitude wraps across the
    antimeridian; a neighbour beyond a pole is `NO_CELL` (so a cell in the
    polar row has 3 `NO_CELL`s), and a `NO_CELL` input gives 8 `NO_CELL`s.
    Neighbours are mutual and (away from the poles) pairwise distinct.
    """
    h, p, shape = _flat_cells(h, precision)
    # Work on the dilated (Morton-spread) coordinates directly: x +/- 1 on a
    # dilated value needs only an add and masks, no compact/spread per neighbour.
    nlat, nlng = _bits(p)
    odd = np.asarray((5 * p) & 1).astype(np.uint64)  # 1: lng holds the LSB
    even = _U64(1) - odd
    m_lat = _spread(np.asarray((np.int64(1) << np.asarray(nlat, dtype=np.int64)) - 1).astype(np.uint64))
    m_lng = _spread(np.asarray((np.int64(1) << np.asarray(nlng, dtype=np.int64)) - 1).astype(np.uint64))
    a = (h >> odd) & m_lat  # dilated lat index, bits 0, 2, 4, ...
    g = (h >> even) & m_lng  # dilated lng index
    none = h == NO_CELL
    # lat rows: up / same / down, pre-shifted into place; beyond a pole (or a
    # NO_CELL input) becomes all ones, which stays NO_CELL after OR-ing a column in.
    up = np.where(none | (a == m_lat), NO_CELL, (((a | ~m_lat) + _U64(1)) & m_lat) << odd)
    mid = np.where(none, NO_CELL, a << odd)
    down = np.where(none | (a == 0), NO_CELL, ((a - _U64(1)) & m_lat) << odd)
    # lng columns wrap modulo 2**nlng through the lane mask
    east = (((g | ~m_lng) + _U64(1)) & m_lng) << even
    same = g << even
    west = ((g - _U64(1)) & m_lng) << even
    rows = {1: up, 0: mid, -1: down}
    cols = {1: east, 0: same, -1: west}
    out = np.empty((h.size, 8), dtype=np.uint64)
    for d in range(8):
        np.bitwise_or(rows[int(_D_LAT[d])], cols[int(_D_LNG[d])], out=out[:, d])
    return out.reshape(shape + (8,))


def neighbors(geohash: ArrayLike) -> AnyArray:
    """The 8 neighbours of geohash strings, shape (..., 8), order N, NE, E, SE, S, SW, W, NW.

    Same length as the input hash (mixed lengths OK). Longitude wraps across
    the antimeridian; beyond a pole the neighbour is "" (and "" in -> 8 "").
    """
    h, length = _parse(geohash)
    first = length.reshape(-1)[:1]
    if first.size and (length == first[0]).all():  # uniform length: fast path
        p = max(int(first[0]), 1)
        return int_to_str(neighbors_int(h, p), p)
    per = np.maximum(length, 1)
    return int_to_str(neighbors_int(h, per), per[..., None])


def cell_size_m(precision: int, lat: ArrayLike = 0.0) -> tuple[F64Array, F64Array]:
    """(height_m, width_m) of a geohash cell of `precision` at latitude `lat`.

    Height is the north-south extent (constant); width is the east-west
    extent along the parallel at `lat` (shrinks with cos(lat)). Spherical
    earth of radius `EARTH_RADIUS_M`. Note the order: at the equator, p6 is
    about (610 m, 1223 m).
    """
    p = _check_precision(precision)
    nlat, nlng = _bits(p)
    lat = np.asarray(lat, dtype=np.float64)
    height = np.full(lat.shape, EARTH_RADIUS_M * np.radians(180.0 / (1 << nlat)))
    width = EARTH_RADIUS_M * np.radians(360.0 / (1 << nlng)) * np.cos(np.radians(lat))
    return height, np.asarray(width)


# ----------------------------------------------------------------- distances


def haversine_m(lat1: ArrayLike, lng1: ArrayLike, lat2: ArrayLike, lng2: ArrayLike) -> F64Array:
    """Great-circle distance in metres (sphere of radius `EARTH_RADIUS_M`), broadcasting.

    Symmetric, exactly 0 for identical points, in [0, pi*R].
    """
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.subtract(lng2, lng1, dtype=np.float64))
    a = np.sin(dp * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl * 0.5) ** 2
    a = np.clip(a, 0.0, 1.0)
    return np.asarray((2.0 * EARTH_RADIUS_M) * np.arcsin(np.sqrt(a)))


def bearing_deg(lat1: ArrayLike, lng1: ArrayLike, lat2: ArrayLike, lng2: ArrayLike) -> F64Array:
    """Initial great-circle bearing from point 1 to point 2, degrees in [0, 360).

    0 = north, clockwise (90 = east). Identical points give 0. Broadcasting.
    """
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dl = np.radians(np.subtract(lng2, lng1, dtype=np.float64))
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    b = np.degrees(np.arctan2(y, x))
    b = np.mod(b, 360.0)
    # mod of a tiny negative rounds to exactly 360.0
    return np.asarray(np.where(b >= 360.0, 0.0, b))


def haversine1(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """:func:`haversine_m` for one pair of Python floats (no numpy overhead)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) * 0.5) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) * 0.5) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


def bearing1(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """:func:`bearing_deg` for one pair of Python floats."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lng2 - lng1)
    b = (
        math.degrees(
            math.atan2(
                math.sin(dl) * math.cos(p2), math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
            )
        )
        % 360.0
    )
    return 0.0 if b >= 360.0 else b


def to_unit_xyz(lat: ArrayLike, lng: ArrayLike) -> F64Array:
    """Unit-sphere Cartesian coordinates, shape broadcast(lat, lng) + (3,), float64.

    x toward (0, 0), y toward (0, 90E), z toward the north pole. Chord length
    between two such vectors is ``chord_for_distance(haversine_m(...))``.
    """
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lng, dtype=np.float64))
    c = np.cos(phi)
    return np.stack(np.broadcast_arrays(c * np.cos(lam), c * np.sin(lam), np.sin(phi)), axis=-1)


def chord_for_distance(m: ArrayLike) -> F64Array:
    """Unit-sphere chord length of a great-circle distance of `m` metres.

    ``2*sin(m / (2R))``, monotone on [0, pi*R]; `m` is clamped to that range
    (chord in [0, 2]). A KD-tree ball query on `to_unit_xyz` vectors with this
    radius selects exactly the points within `m` great-circle metres, up to
    float rounding (chord error ~1e-16 absolute, i.e. ~1e-9 m on the ground):
    inflate slightly if a point exactly at distance `m` must be included.
    """
    theta = np.clip(np.asarray(m, dtype=np.float64) / EARTH_RADIUS_M, 0.0, np.pi)
    return np.asarray(2.0 * np.sin(theta * 0.5))
