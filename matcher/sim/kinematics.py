"""Where a driver is along its segment: the one interpolation of positions in the world.

Every position the world reports (pings, the location history, where a driver
stops or answers an offer) comes from here, so all of them agree. A driver moves
from ``(lat0, lng0)`` at ``t0`` to ``(lat1, lng1)`` at ``t1``; at fraction ``a``
of the way:

- **City-scale segments** are interpolated linearly in latitude and longitude,
  with the longitude difference taken the short way round: a 1 km drive from
  179.995 to -179.995 crosses the antimeridian (not the whole planet) and the
  result is wrapped back into [-180, 180]. Off the antimeridian this is exactly
  the arithmetic of earlier releases (runs are unchanged).
- **Segments near a pole or very long ones** follow the great circle
  (spherical linear interpolation of unit vectors). Linear interpolation strays
  from the great circle by about ``D^2 tan(lat) / (8R)`` for a segment of length
  ``D``; the great circle is used whenever that bound exceeds 0.5% of ``D``
  (``D tan(lat) > 0.04 R``: for a 10 km drive, above latitude 87.8 degrees; for
  50 km, above 78.9 degrees). Across a pole the path goes over it, and the heading
  is the bearing toward the destination from where the driver is.

Guarantees (property-tested in tests/test_kinematics.py): the result is a valid
coordinate (|lat| <= 90, |lng| <= 180, finite); it lies within 0.5% of the
segment length (+1 cm) of the great-circle point at the same fraction, so its
distances to both ends add up to the segment's length; the scalar and vector
forms give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from matcher.core import geo

# great circle when D * tan(max |lat|) exceeds this (see the module docstring)
_GC_LIMIT_M = 0.04 * geo.EARTH_RADIUS_M


def _short_dlng(dlng):
    """Longitude difference taken the short way, in [-180, 180]."""
    return np.where(dlng > 180.0, dlng - 360.0, np.where(dlng < -180.0, dlng + 360.0, dlng))


def _wrap_lng(lng):
    return np.where(lng > 180.0, lng - 360.0, np.where(lng < -180.0, lng + 360.0, lng))


def _needs_gc(lat0, lat1, dist):
    phi = np.radians(np.maximum(np.abs(lat0), np.abs(lat1)))
    return dist * np.sin(phi) > _GC_LIMIT_M * np.cos(phi)


def _slerp(lat0, lng0, lat1, lng1, a):
    """Great-circle point at fraction a (and the bearing from it to the end), arrays."""
    p0, p1 = geo.to_unit_xyz(lat0, lng0), geo.to_unit_xyz(lat1, lng1)
    cross = np.linalg.norm(np.cross(p0, p1), axis=-1)
    dot = np.sum(p0 * p1, axis=-1)
    om = np.arctan2(cross, dot)
    s = np.sin(om)
    ok = s > 1e-12  # identical or antipodal ends: no unique great circle, stay linear
    safe = np.where(ok, s, 1.0)
    w0 = np.where(ok, np.sin((1.0 - a) * om) / safe, 1.0 - a)
    w1 = np.where(ok, np.sin(a * om) / safe, a)
    p = w0[..., None] * p0 + w1[..., None] * p1
    p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-300)
    lat = np.degrees(np.arctan2(p[..., 2], np.hypot(p[..., 0], p[..., 1])))
    lng = np.degrees(np.arctan2(p[..., 1], p[..., 0]))
    return lat, lng, geo.bearing_deg(lat, lng, lat1, lng1)


def interpolate(lat0, lng0, lat1, lng1, a, heading, dist=None):
    """(lat, lng, heading) at fraction ``a`` in [0, 1] of each segment, arrays (see the module docstring).

    ``heading`` is the segment's stored heading (kept on city-scale segments and at the end);
    ``dist`` its great-circle length if the caller has it.
    """
    lat0, lng0, lat1, lng1 = (np.asarray(x, np.float64) for x in (lat0, lng0, lat1, lng1))
    a = np.asarray(a, np.float64)
    lat = lat0 + (lat1 - lat0) * a
    lng = _wrap_lng(lng0 + _short_dlng(lng1 - lng0) * a)
    hd = np.asarray(heading)
    if dist is None:
        dist = geo.haversine_m(lat0, lng0, lat1, lng1)
    gc = _needs_gc(lat0, lat1, dist)
    if np.any(gc):
        glat, glng, gbrg = _slerp(lat0, lng0, lat1, lng1, a)
        lat, lng = np.where(gc, glat, lat), np.where(gc, glng, lng)
        hd = np.where(gc & (a < 1.0) & (dist > 0), gbrg.astype(hd.dtype), hd)
    return lat, lng, hd


def interpolate1(lat0: float, lng0: float, lat1: float, lng1: float, a: float, heading: float, dist: float):
    """:func:`interpolate` for one segment, in Python floats (the same numbers)."""
    phi = math.radians(max(abs(lat0), abs(lat1)))
    if dist * math.sin(phi) > _GC_LIMIT_M * math.cos(phi):
        lat, lng, hd = interpolate(lat0, lng0, lat1, lng1, a, np.float32(heading), dist)
        return float(lat), float(lng), float(hd)
    dlng = lng1 - lng0
    if dlng > 180.0:
        dlng -= 360.0
    elif dlng < -180.0:
        dlng += 360.0
    lng = lng0 + dlng * a
    if lng > 180.0:
        lng -= 360.0
    elif lng < -180.0:
        lng += 360.0
    return lat0 + (lat1 - lat0) * a, lng, heading
