"""Scenarios: the world and run options of a replay, from a preset, a scenario file and the command line.

A scenario is the flat table of options that ``matcher replay`` and ``matcher compare``
accept (:data:`OPTIONS`; docs/models.md describes every behaviour model). It is
resolved in layers, each overriding the one before:

1. the defaults of :mod:`matcher.config` (the ``full`` world);
2. the world preset (``--world full|minimal``, or ``world = "..."`` in the file);
3. the scenario file (``--config FILE``: TOML, or the ``run.json`` of an earlier run);
4. the options given on the command line.

``speed`` is shorthand for both ``eta-speed`` and ``drive-speed``; within one layer
the specific option wins. Every run writes its resolved scenario (:func:`scenario_of`)
to ``run.json`` under ``"scenario"``: all options with their values, paths
absolute, so ``matcher replay TRACE --config OUT/run.json --out NEW`` replays the
same run event for event. :func:`describe` names the world (the preset and every
setting that differs from the defaults) for summary.json and the report.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from matcher.config import MatchConfig, Policy, RunConfig, SimConfig
from matcher.core.cost import ETA_MODELS
from matcher.errors import MatcherError
from matcher.io import bounds
from matcher.io.bounds import RANGES, Range


class ScenarioError(MatcherError):
    """A scenario file or value that cannot be used (a bad argument: the CLI exits 2)."""


@dataclass(frozen=True)
class Option:
    """One scenario option: its name (the CLI flag without ``--``), where it lives in RunConfig, its values."""

    name: str
    path: str  # "sim.accept_prob", "match.eta.turnaround_s", "shard.shards", "drivers", ...
    kind: str  # "float" | "int" | "bool" | "str" | "path"
    help: str
    choices: tuple[str, ...] = ()
    new_flag: bool = False  # the CLI flag is added by add_cli_options (the older ones live in cli.py)

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def range(self) -> Range:
        """A number's range: its row in :data:`matcher.io.bounds.RANGES` (the one table of option ranges)."""
        return RANGES[self.dest]

    def convert(self, value: Any, where: str) -> Any:
        """``value`` (CLI text or a TOML/JSON value) as this option's type, checked; ScenarioError naming ``where``."""
        if value is None and self.kind in ("path", "str") and self.name in _NULLABLE:
            return None
        if self.kind == "bool":
            return _bool(value, f"{where}: {self.name}")
        if self.kind in ("str", "path"):
            if not isinstance(value, str):
                raise ScenarioError(f"{where}: {self.name} must be a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise ScenarioError(f"{where}: {self.name} must be one of {', '.join(self.choices)}: {value!r}")
            return value
        v = _number(value, self.kind, f"{where}: {self.name}")
        try:
            return bounds.check(self.dest, v, repr(value))
        except bounds.BoundsError as e:
            raise ScenarioError(f"{where}: {self.name} {e}") from None

    def range_text(self) -> str:
        return self.range.text()


_NULLABLE = ("drivers", "address", "backend")
_DAY = 86_400.0


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ScenarioError(f"{where} must be on or off: {value!r}")


def _number(value: Any, kind: str, where: str) -> float | int:
    if isinstance(value, bool):
        raise ScenarioError(f"{where} must be a number, got {value!r}")
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ScenarioError(f"{where} must be an integer: {value!r}") from None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ScenarioError(f"{where} must be a number: {value!r}") from None
    if not math.isfinite(v):
        raise ScenarioError(f"{where} must be a finite number: {value!r}")
    return v


_S, _M = SimConfig(), MatchConfig()

#: Every scenario option, in the order of docs/models.md and of run.json's "scenario".
OPTIONS: tuple[Option, ...] = (
    # the run
    Option("drivers", "drivers", "path", "a driver file, or a number of drivers to synthesise"),
    Option("policy", "sim.policy", "str", "matching policy", choices=tuple(p.value for p in Policy)),
    Option("window", "sim.window_s", "float", "batch window, s"),
    Option("seed", "sim.seed", "int", "seeds every random outcome"),
    Option("shards", "shard.shards", "int", "number of geohash shards"),
    Option("backend", "shard.backend", "str", "where the shards run", choices=("inprocess", "ray")),
    Option("address", "shard.address", "str", "Ray address of an existing cluster"),
    Option("num-cpus", "shard.num_cpus", "float", "CPUs per shard actor"),
    Option(
        "placement",
        "shard.placement",
        "str",
        "regions: load = Hilbert-curve runs cut by measured load, rebalanced; hash = geohash regions on a "
        "consistent-hash ring",
        choices=("load", "hash"),
    ),
    Option("checkpoint-every", "checkpoint_every_s", "float", "simulated s between checkpoints"),
    Option("record-locations", "record_locations", "bool", "write the driver location history"),
    # matching
    Option("radius", "match.radius_m", "float", "candidate radius, m"),
    Option("k", "match.k", "int", "candidates kept per request"),
    Option("gps-timeout", "match.gps_timeout_s", "float", "a driver silent this long is stale, s"),
    Option(
        "eta-model",
        "match.eta.model",
        "str",
        "the pickup ETA model",
        choices=tuple(sorted(ETA_MODELS)),
        new_flag=True,
    ),
    Option("eta-speed", "match.eta.city_speed_mps", "float", "speed the ETA model assumes, m/s", new_flag=True),
    Option("detour", "match.eta.detour_factor", "float", "road distance / great-circle distance", new_flag=True),
    Option(
        "turnaround",
        "match.eta.turnaround_s",
        "float",
        "ETA penalty for a driver heading straight away from the pickup, s",
        new_flag=True,
    ),
    # riders
    Option("patience", "sim.patience_s", "float", "an unmatched rider expires after this, s"),
    Option("cancel-base", "sim.cancel_base", "float", "rider cancel probability after a match, base"),
    Option("cancel-per-min", "sim.cancel_per_min", "float", "... plus this per minute of pickup ETA"),
    # drivers
    Option("accept-prob", "sim.accept_prob", "float", "probability a driver accepts an offer"),
    Option("response-time", "sim.response_s", "float", "mean time a driver takes to answer, s", new_flag=True),
    Option("offer-timeout", "sim.offer_timeout_s", "float", "no answer by then is a decline, s"),
    Option("drive-speed", "sim.trip_speed_mps", "float", "speed drivers really drive at, m/s", new_flag=True),
    Option("boarding", "sim.dwell_s", "float", "boarding time at the pickup, s", new_flag=True),
    Option("reposition", "sim.reposition", "bool", "idle drivers head toward recent demand", new_flag=True),
    Option(
        "reposition-lookback",
        "sim.reposition_lookback",
        "int",
        "... toward one of the last this many requests",
        new_flag=True,
    ),
    # failures
    Option("gps-dropout-rate", "sim.gps_dropout_rate_per_h", "float", "GPS dropouts per driver-hour"),
    Option("gps-dropout-mean", "sim.gps_dropout_mean_s", "float", "mean GPS dropout length, s", new_flag=True),
    Option(
        "fault-rate",
        "sim.driver_fault_rate_per_h",
        "float",
        "driver network faults per driver-hour",
        new_flag=True,
    ),
    Option(
        "fault-downtime",
        "sim.fault_offline_s",
        "float",
        "a faulted driver is back after this, s",
        new_flag=True,
    ),
)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
_ALIASES = {"speed": ("eta-speed", "drive-speed")}  # one value for several options (the older --speed)
# not options but part of a scenario file / run.json
_RUN_KEYS = ("world", "trace", "out")

#: The world presets: option values over the defaults. ``full`` is matcher's own world (the
#: defaults); ``minimal`` is the model of the simple open-source simulators.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "minimal": {
        "accept-prob": 1.0,
        "response-time": 0.0,
        "cancel-base": 0.0,
        "cancel-per-min": 0.0,
        "gps-dropout-rate": 0.0,
        "fault-rate": 0.0,
        "reposition": False,
        "boarding": 0.0,
        "turnaround": 0.0,
    },
}


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set(cfg: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    if not rest:
        return replace(cfg, **{head: value})
    return replace(cfg, **{head: _set(getattr(cfg, head), rest, value)})


def defaults() -> dict[str, Any]:
    """The value of every option in the full world (matcher.config's defaults)."""
    base = RunConfig(trace="", out="")
    return {o.name: _get(base, o.path) for o in OPTIONS}


def _norm_key(key: str) -> str:
    return key.strip().replace("_", "-")


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The options of a scenario file: TOML (flat ``name = value``), or a run.json (its "scenario").

    Unknown keys and unreadable files raise ScenarioError (one line naming the file).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"--config {p}: cannot read it ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"--config {p}: not a text file (expected TOML or a run.json)") from None
    if p.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScenarioError(f"--config {p}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("scenario"), dict):
            raise ScenarioError(f'--config {p}: a JSON scenario is a run.json with a "scenario" object')
        doc = doc["scenario"]
    else:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError(f"--config {p}: not valid TOML ({e})") from None
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = _norm_key(key)
        if isinstance(value, dict):
            raise ScenarioError(f"--config {p}: tables are not used; write {key}'s options at the top level")
        if name not in BY_NAME and name not in _ALIASES and name not in _RUN_KEYS:
            raise ScenarioError(f"--config {p}: unknown option {key!r} (see matcher replay --help)")
        out[name] = value
    return out


def _layer(values: dict[str, Any], layer: Mapping[str, Any], where: str) -> None:
    """Apply one layer's options over ``values`` (the alias first, so that the specific options win)."""
    for alias, targets in _ALIASES.items():
        if alias in layer:
            v = BY_NAME[targets[0]].convert(layer[alias], where)
            for t in targets:
                values[t] = v
    for name, raw in layer.items():
        if name in BY_NAME:
            values[name] = BY_NAME[name].convert(raw, where)


def _drivers(value: Any, where: str) -> str | int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        if isinstance(value, int):
            try:
                bounds.check("drivers", value)
            except bounds.BoundsError as e:
                raise ScenarioError(f"{where}: drivers {e}") from None
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return _drivers(int(text), where)
        return text
    raise ScenarioError(f"{where}: drivers must be a file or a count: {value!r}")


def resolve(
    cli: Mapping[str, Any],
    *,
    config: str | None = None,
    world: str | None = None,
    trace: str | None = None,
    out: str | None = None,
) -> RunConfig:
    """The RunConfig of a scenario: defaults < preset < ``config`` file < ``cli`` options.

    ``cli`` maps option names (``"accept-prob"``, ``"speed"``...) to the values given on the
    command line (only the given ones). ``world``, ``trace`` and ``out`` from the command line
    win over the file's. Raises ScenarioError on a bad file or value.
    """
    file = load_file(config) if config else {}
    where_file = f"--config {config}"
    name = world or file.get("world") or "full"
    if name not in PRESETS:
        raise ScenarioError(f"unknown world {name!r} (expected {' or '.join(PRESETS)})")
    values = defaults()
    values["backend"] = None  # by default: inprocess for one shard, ray for more
    _layer(values, PRESETS[name], f"--world {name}")
    for layer, where in ((file, where_file), (cli, "option")):
        if "drivers" in layer:
            layer = dict(layer)
            values["drivers"] = _drivers(layer.pop("drivers"), where)
        _layer(values, layer, where)
    trace = trace if trace is not None else file.get("trace")
    out = out if out is not None else file.get("out")
    if not trace or not out:
        raise ScenarioError("replay needs TRACE and --out (or --resume OUT, or a --config file that names them)")
    cfg = RunConfig(trace=os.path.abspath(trace), out=os.fspath(out), world=name)
    for o in OPTIONS:
        v = values[o.name]
        if o.name == "drivers" and isinstance(v, str):
            v = os.path.abspath(v)
        elif o.name == "policy":
            v = Policy(v)
        cfg = _set(cfg, o.path, v)
    if cfg.shard.backend is None:
        cfg = _set(cfg, "shard.backend", "ray" if cfg.shard.shards > 1 else "inprocess")
    return _set(cfg, "match.k_search", max(MatchConfig.k_search, 2 * cfg.match.k))


def scenario_of(cfg: RunConfig) -> dict[str, Any]:
    """The complete scenario of a run, as ``--config`` reads it back (run.json's "scenario")."""
    d: dict[str, Any] = {"world": cfg.world, "trace": os.path.abspath(cfg.trace), "out": os.path.abspath(cfg.out)}
    for o in OPTIONS:
        v = _get(cfg, o.path)
        if o.name == "drivers" and isinstance(v, str):
            v = os.path.abspath(v)
        d[o.name] = v
    return d


def describe(cfg: RunConfig) -> dict[str, Any]:
    """What names the world of a run: ``world`` (the preset), ``settings`` (every option that differs
    from the full world's default, by name) and ``scenario`` (all of them, see :func:`scenario_of`)."""
    sc = scenario_of(cfg)
    base = defaults()
    settings = {o.name: sc[o.name] for o in OPTIONS if sc[o.name] != base[o.name] and o.name not in _NOT_WORLD}
    return {"world": cfg.world, "settings": settings, "scenario": sc}


# options that do not change what happens in the run (where it runs, what extra it writes)
_NOT_WORLD = ("shards", "backend", "address", "num-cpus", "placement", "checkpoint-every", "record-locations")


def to_toml(cfg: RunConfig) -> str:
    """The scenario of ``cfg`` as a TOML scenario file (None values left out: they are the defaults)."""
    import tomli_w

    return tomli_w.dumps({k: v for k, v in scenario_of(cfg).items() if v is not None})


# ------------------------------------------------------------------ the CLI side


def add_cli_options(group: Any) -> None:
    """Add ``--world``, ``--config``, ``--print-config`` and the behaviour options cli.py does not define itself."""
    group.add_argument(
        "--world",
        choices=tuple(PRESETS),
        default=None,
        help="world preset (default full): minimal = accept at once, no response delay, no cancels, "
        "no GPS dropouts, no faults, no repositioning, no boarding, no turnaround; options given override it",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="scenario file: TOML of any of these options (name = value), or the run.json of an earlier run; "
        "options given on the command line override it (default none)",
    )
    group.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved scenario as TOML (a --config file) and exit without running (default off)",
    )
    base = defaults()
    for o in OPTIONS:
        if not o.new_flag:
            continue
        shown = ("on" if base[o.name] else "off") if o.kind == "bool" else base[o.name]
        extra = f"; {o.range_text()}" if o.kind in ("float", "int") else ""
        metavar = {"bool": "on|off", "float": "X", "int": "N"}.get(o.kind)
        group.add_argument(
            f"--{o.name}",
            type=cli_converter(o),
            default=base[o.name],
            metavar=metavar,
            choices=o.choices or None,
            help=f"{o.help} (default {shown}{extra})",
        )


def cli_converter(o: Option) -> Callable[[str], Any]:
    """The argparse type of option ``o`` (a bad value: one line, exit 2)."""
    import argparse

    def conv(text: str) -> Any:
        try:
            return o.convert(text, f"--{o.name}")
        except ScenarioError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"--{o.name}: ")) from None

    conv.__name__ = o.name
    return conv


def given_options(parser: Any, argv: list[str]) -> set[str]:
    """The ``dest`` names of the options given explicitly in ``argv`` (not left at their default).

    Parses ``argv`` again with every default suppressed, so an option given with its default
    value still counts as given (and overrides a preset or a scenario file).
    """
    import argparse
    import copy

    quiet = copy.deepcopy(parser)
    stack = [quiet]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.dest != "help":
                action.default = argparse.SUPPRESS
    ns, _ = quiet.parse_known_args(argv)
    return set(vars(ns))


def from_namespace(args: Any, given: set[str]) -> dict[str, Any]:
    """The scenario options given on the command line, by option name, from the parsed namespace."""
    out = {}
    for name in [*BY_NAME, *_ALIASES]:
        dest = name.replace("-", "_")
        if dest in given and hasattr(args, dest):
            out[name] = getattr(args, dest)
    return out


__all__ = [
    "BY_NAME",
    "OPTIONS",
    "PRESETS",
    "Option",
    "ScenarioError",
    "add_cli_options",
    "cli_converter",
    "defaults",
    "describe",
    "from_namespace",
    "given_options",
    "load_file",
    "resolve",
    "scenario_of",
    "to_toml",
]
