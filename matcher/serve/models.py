"""Request bodies of the HTTP API (pydantic). Anything that fails here is a 422 with field
errors and never reaches the dispatcher: out-of-range coordinates, non-finite numbers
(JSON ``NaN``/``Infinity``), unknown ride types or statuses, unknown fields, wrong types.

The batched location body is validated for shape and types here (equal-length columns);
its rows are checked one by one, vectorised, by the dispatcher, which refuses bad rows
and counts them by reason (a gateway's batch is not rejected for one bad ping).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from matcher.config import RIDE_TYPES

Lat = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
Lng = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False)]
RideType = Literal["uberx", "pool", "xl", "black"]
DriverReported = Literal["available", "on_trip", "offline"]
DRIVER_REPORTED: tuple[str, ...] = ("available", "on_trip", "offline")
assert set(RideType.__args__) == set(RIDE_TYPES)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class RideRequest(_Strict):
    pickup_lat: Lat
    pickup_lng: Lng
    destination_lat: Lat
    destination_lng: Lng
    ride_type: RideType = "uberx"


class LocationUpdate(_Strict):
    lat: Lat
    lng: Lng
    heading: Annotated[float, Field(ge=0.0, le=360.0, allow_inf_nan=False)] = 0.0
    speed_mps: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] = 0.0
    status: DriverReported = "available"


class LocationBatch(_Strict):
    """Columnar: one list per field, all of one length (rows are checked by the dispatcher)."""

    driver_id: list[Annotated[str, Field(min_length=1, max_length=128)]]
    lat: list[float]
    lng: list[float]
    heading: list[float] | None = None
    speed_mps: list[float] | None = None
    status: list[str] | None = None
    vehicle: list[str] | None = None  # uberx | xl | black: used when a driver is first seen
    rating: list[float | None] | None = None

    @model_validator(mode="after")
    def _same_length(self) -> LocationBatch:
        n = len(self.driver_id)
        for name in ("lat", "lng", "heading", "speed_mps", "status", "vehicle", "rating"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"column {name} has {len(v)} values, driver_id has {n}")
        return self


class MatchQuery(_Strict):
    ride_id: Annotated[str, Field(min_length=1, max_length=128)]
    pickup_lat: Lat
    pickup_lng: Lng
    ride_type: RideType = "uberx"


class RideStatusUpdate(_Strict):
    status: Literal["en_route", "arrived", "in_progress", "completed"]
