"""The range of every numeric option, and the one parser every command uses for numbers.

An option value is a finite number of its kind (an integer where one is
expected: ``5.0`` is not a shard count) inside its documented range; ``nan``,
``inf``, ``1e400`` and values too large for their type are refused with one
line naming the option and the range. The defaults stay in
:mod:`matcher.config`; this table is what ``--help`` and docs/cli.md state as
the range of each option (the scenario options of :mod:`matcher.sim.scenario` take theirs
from here too). Add a row here for every new numeric option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RANGES", "BoundsError", "Range", "check", "parse"]


class BoundsError(ValueError):
    """A number outside its range, or not a number of its kind (the message is one line)."""


@dataclass(frozen=True)
class Range:
    kind: type  # int or float
    lo: float
    hi: float
    unit: str = ""
    zero: bool = False  # 0 is also accepted (and means "off"), below lo
    lo_open: bool = False  # lo itself is excluded

    def text(self) -> str:
        lo = f"{self.lo:g}" if self.kind is float else f"{int(self.lo):,}"
        hi = f"{self.hi:g}" if self.kind is float else f"{int(self.hi):,}"
        rng = f"> {lo} and <= {hi}" if self.lo_open else f"{lo}..{hi}"
        return ("0 or " if self.zero else "") + rng + (f" {self.unit}" if self.unit else "")


_DAY = 86_400.0
RANGES: dict[str, Range] = {
    # replay and compare
    "window": Range(float, 0.05, 3600.0, "s"),
    "shards": Range(int, 1, 256),
    "num_cpus": Range(float, 0.01, 1024.0),
    "seed": Range(int, 0, 2**63 - 1),
    "checkpoint_every": Range(float, 1.0, 1e9, "s", zero=True),
    "patience": Range(float, 1.0, 7 * _DAY, "s"),
    "accept_prob": Range(float, 0.0, 1.0),
    "offer_timeout": Range(float, 1.0, 3600.0, "s"),
    "cancel_base": Range(float, 0.0, 1.0),
    "cancel_per_min": Range(float, 0.0, 1.0),
    "gps_dropout_rate": Range(float, 0.0, 60.0, "per driver-hour"),
    "speed": Range(float, 0.5, 100.0, "m/s"),
    # the halo cells of the sharding (geohash precision 5, 4.9 km tall) must cover the radius
    "radius": Range(float, 10.0, 4500.0, "m"),
    "k": Range(int, 1, 1000),
    "gps_timeout": Range(float, 1.0, 3600.0, "s"),
    # the world's behaviour options (matcher.sim.scenario, docs/models.md)
    "eta_speed": Range(float, 0.5, 100.0, "m/s"),
    "detour": Range(float, 1.0, 10.0),
    "turnaround": Range(float, 0.0, 3600.0, "s"),
    "response_time": Range(float, 0.0, 3600.0, "s"),
    "drive_speed": Range(float, 0.5, 100.0, "m/s"),
    "boarding": Range(float, 0.0, 3600.0, "s"),
    "reposition_lookback": Range(int, 1, 10_000_000),
    "gps_dropout_mean": Range(float, 1.0, _DAY, "s"),
    "fault_rate": Range(float, 0.0, 60.0, "per driver-hour"),
    "fault_downtime": Range(float, 1.0, 7 * _DAY, "s"),
    "area_cpus": Range(float, 0.01, 1024.0),
    "drivers": Range(int, 1, 10_000_000),
    "wait_for_nodes": Range(float, 0.0, _DAY, "s"),
    # serve, token and loadgen (serve's --shards, --window, --num-cpus, --patience, --offer-timeout,
    # --gps-timeout and loadgen's --seed, --accept-prob use the rows above)
    "port": Range(int, 1, 65535),
    "max_drivers": Range(int, 1, 10_000_000),
    "ttl": Range(float, 1.0, 3650 * _DAY, "s"),
    "rating": Range(float, 1.0, 5.0),
    "loadgen_speed": Range(float, 0.01, 10_000.0, "trace s per wall s"),
    "duration": Range(float, 0.0, 366 * _DAY, "s", lo_open=True),
    "single_share": Range(float, 0.0, 1.0),
    "drain_timeout": Range(float, 0.0, 7 * _DAY, "s", lo_open=True),
    # synth
    "synth_drivers": Range(int, 1, 100_000_000),
    "requests_per_s": Range(float, 0.0, 100_000.0, "per s", lo_open=True),
    "hours": Range(float, 0.0, 24 * 366.0, "h", lo_open=True),
    "cities": Range(int, 1, 10_000),
}


def _number(kind: type, text: str) -> float | int:
    s = text.strip()
    if kind is int:
        try:
            return int(s)
        except ValueError:
            raise BoundsError(f"not an integer: {text!r}") from None
    try:
        v = float(s)
    except ValueError:
        raise BoundsError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise BoundsError(f"not a finite number: {text!r}")
    return v


def check(name: str, value: float | int, shown: str | None = None) -> float | int:
    """``value`` if it lies in the range of option ``name``, else BoundsError (one line)."""
    r = RANGES[name]
    shown = shown if shown is not None else repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise BoundsError(f"not a finite number: {shown}")
    if r.zero and value == 0:
        return value
    low = value <= r.lo if r.lo_open else value < r.lo
    if low or value > r.hi:
        raise BoundsError(f"must be {r.text()}: {shown}")
    return value


def parse(name: str, text: str) -> float | int:
    """The value of option ``name`` given as ``text``: a number of its kind inside its range."""
    r = RANGES[name]
    return check(name, _number(r.kind, text), repr(text))
