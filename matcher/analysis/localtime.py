"""The local time zone of a trace, for the report's time axes and hourly tables.

A run's timestamps are UTC (docs/run-output.md). The report shows them in the local
time of the trace's place: the IANA zone at the median pickup point, looked up offline
with ``timezonefinder`` (its polygons come from the timezone-boundary-builder project),
or the zone given with ``--tz``. Far out at sea the lookup answers an ``Etc/GMT±N``
nautical zone; with no valid point at all the report stays in UTC and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import numpy as np

from matcher.core import geo
from matcher.errors import MatcherError


@dataclass(frozen=True)
class LocalTime:
    """The zone every time axis of a report is drawn in, and how it was found."""

    name: str  # IANA name, e.g. "America/New_York"
    source: str  # "--tz", "trace coordinates" or "no coordinates: UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.name)

    def axis_label(self, what: str = "time") -> str:
        """E.g. ``"request time (America/New_York)"``: the zone is said on every axis."""
        return f"{what} ({self.name})"


def check_tz(name: str) -> str:
    """``name`` if it is a known IANA zone (``UTC``, ``Europe/Paris``...); else MatcherError (one line)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        hint = "e.g. America/New_York, Europe/London or UTC"
        raise MatcherError(f"--tz: unknown time zone {name!r} ({hint})") from None
    if name not in available_timezones() and name != "UTC":  # paths such as "../x" load nothing useful
        raise MatcherError(f"--tz: unknown time zone {name!r} (e.g. America/New_York, Europe/London or UTC)")
    return name


def zone_at(lat, lng) -> str | None:
    """The IANA zone at the median of the valid points, or None without any."""
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    ok = geo.valid_coords(lat, lng)
    if not ok.any():
        return None
    from timezonefinder import TimezoneFinder

    mlat, mlng = float(np.median(lat[ok])), float(np.median(lng[ok]))
    return TimezoneFinder().timezone_at(lng=mlng, lat=mlat)


def resolve(tz: str | None, lat, lng) -> LocalTime:
    """The zone of a report: ``tz`` when given (checked), else the zone of the points."""
    if tz:
        return LocalTime(check_tz(tz), "--tz")
    found = zone_at(lat, lng)
    if found is None:
        return LocalTime("UTC", "no coordinates: UTC")
    return LocalTime(found, "trace coordinates")
