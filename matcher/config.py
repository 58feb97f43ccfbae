"""Every tunable of the project, as frozen dataclasses with their defaults.

Read once at the edge (the CLI or a job entrypoint) and passed down; nothing
below the edge reads the environment or argv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# Vehicle and ride types travel as small integer codes in every hot array.
VEHICLE_TYPES: tuple[str, ...] = ("uberx", "xl", "black")
RIDE_TYPES: tuple[str, ...] = ("uberx", "pool", "xl", "black")

# ride type -> vehicle types that may serve it (docs/trace.md)
DEFAULT_COMPAT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uberx", ("uberx", "xl")),
    ("pool", ("uberx", "xl")),
    ("xl", ("xl",)),
    ("black", ("black",)),
)


class Policy(StrEnum):
    """How each tick assigns drivers. The value is the spelling of the CLI (``--policy``,
    ``--policies``) and of the files (``summary.json``/``meta.json`` ``"policy"``); parse text
    with ``Policy(text)`` at the edge (ValueError on anything else). A StrEnum, so a value
    read back from a file compares equal to its member."""

    BATCH = "batch"  # min-cost assignment of the tick's whole batch (matcher.core.assignment.solve_batch)
    GREEDY = "greedy"  # first come, first served: each request takes its cheapest free driver


@dataclass(frozen=True)
class EtaConfig:
    """The pickup ETA model (matcher.core.cost): distance x detour / speed, plus a turnaround penalty."""

    model: str = "straight_line"  # a name of matcher.core.cost.ETA_MODELS
    city_speed_mps: float = 7.0  # ~25 km/h door-to-door average in a dense city
    detour_factor: float = 1.3  # road distance / great-circle distance
    turnaround_s: float = 60.0  # full U-turn cost for a driver heading straight away
    moving_mps: float = 1.0  # below this speed the heading means nothing


@dataclass(frozen=True)
class MatchConfig:
    radius_m: float = 2000.0
    k: int = 20  # candidates kept per request (the k cheapest by ETA)
    k_search: int = 40  # nearest drivers examined per request before keeping the k cheapest
    gps_timeout_s: float = 30.0  # a driver silent this long is stale and never matched
    unmatched_base_s: float = 900.0  # cost of "stay unmatched this tick" ...
    unmatched_per_wait: float = 1.0  # ... plus this many seconds per second already waited
    dense_max_cells: int = 40_000  # compact matrices up to this size go to dense LSA (measured faster)
    compat: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_COMPAT
    eta: EtaConfig = field(default_factory=EtaConfig)


@dataclass(frozen=True)
class SimConfig:
    """The world the matcher is replayed against (all times in seconds)."""

    policy: Policy = Policy.BATCH
    window_s: float = 2.0  # batch tick; greedy reacts every greedy_step_s
    greedy_step_s: float = 1.0
    patience_s: float = 300.0  # unmatched this long -> expire
    accept_prob: float = 0.9
    response_s: float = 6.0  # mean time a driver takes to answer an offer
    offer_timeout_s: float = 20.0  # no answer by then -> decline
    cancel_base: float = 0.02  # rider cancel after match: base probability ...
    cancel_per_min: float = 0.02  # ... plus this per minute of pickup ETA (capped at 0.5)
    ping_interval_s: float = 4.0
    gps_dropout_rate_per_h: float = 0.05  # per online driver-hour
    gps_dropout_mean_s: float = 120.0
    trip_speed_mps: float = 7.0  # in-trip speed when the trace has no duration
    dwell_s: float = 30.0  # boarding time at the pickup
    driver_fault_rate_per_h: float = 0.02  # a driver drops off the network (mid-ride: the ride is cancelled)
    fault_offline_s: float = 600.0  # ... and comes back this much later
    reposition: bool = True  # idle drivers head back toward recent demand
    reposition_lookback: int = 200  # ... the pickup of one of the last this many requests
    seed: int = 0

    @property
    def step_s(self) -> float:
        return self.window_s if self.policy == Policy.BATCH else self.greedy_step_s


@dataclass(frozen=True)
class ShardConfig:
    shards: int = 1
    backend: str = "inprocess"  # inprocess | ray
    address: str | None = None  # Ray address; None: RAY_ADDRESS, else an embedded local Ray (dist/runmode.py)
    num_cpus: float = 0.5  # per shard actor
    max_restarts: int = 3
    tick_timeout_s: float = 30.0
    placement_timeout_s: float = 60.0  # shards that fit the cluster but stay pending fail after this
    wait_for_nodes_s: float = 0.0  # > 0: an autoscaling cluster; no fit check, wait this long for nodes
    direct_calls: bool = True  # tick calls over a socket to each shard actor (dist/channel.py); False: Ray calls
    region_precision: int = 4  # regions are geohash prefixes of this length ...
    halo_precision: int = 5  # ... halo cells of this one (must be >= radius in both directions)
    vnodes: int = 160  # virtual nodes per shard on the consistent-hash ring
    hot_split_load: int = 0  # pending requests per region per tick that split it (0: never)
    solve_budget_ms: float = 1000.0  # a shard whose optimal solve takes longer falls back to greedy
    # regions (matcher.dist.loadmap): "load" = runs of a Hilbert curve cut by measured load, rebalanced;
    # "hash" = geohash regions on the consistent-hash ring (region_precision, halo_precision, vnodes above)
    placement: str = "load"
    load_halo_precision: int = 6  # halo cells of the load placement (even precision: 1.2 x 0.6 km)
    request_weight: float = 40.0  # load of one pending request, in drivers (about k_search)
    rebalance_ticks: int = 30  # ticks between rebalance checks ...
    rebalance_tolerance: float = 1.1  # ... which move load (at most 1/shards of it) past this max/mean
    rebalance_min_excess: float = 250.0  # ... and past this max - mean, in drivers (see loadmap)


@dataclass(frozen=True)
class AreaConfig:
    """Independent areas replayed separately (matcher/core/areas.py, matcher/sim/areas.py)."""

    mode: str = "auto"  # auto: split a trace into its independent areas; one: one world, as before areas
    precision: int = 4  # geohash precision of the coarse cells (~39 x 20 km at the equator)
    margin_m: float = 1000.0  # added to the candidate radius: GPS lag, driving during an offer, path shape
    num_cpus: float = 1.0  # CPUs asked per area task on Ray


@dataclass(frozen=True)
class RunConfig:
    trace: str
    out: str
    drivers: str | int | None = None  # FILE, a count, or None for the default fleet size
    sim: SimConfig = field(default_factory=SimConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    record_locations: bool = False
    quiet: bool = False
    label: str | None = None
    checkpoint_every_s: float = 3600.0  # simulated seconds between checkpoints (0: none)
    areas: AreaConfig = field(default_factory=AreaConfig)
    world: str = "full"  # the preset the scenario started from (matcher.sim.scenario.PRESETS)


@dataclass(frozen=True)
class SurgeConfig:
    """Per-cell surge (matcher.core.surge): demand/supply over a sliding window, smoothed, capped,
    with hysteresis. Cells are geohashes of ``precision`` characters (5: about 4.9 x 4.9 km at the
    equator, 3.7 x 4.9 km in New York; see the module docstring for why)."""

    precision: int = 5
    tau_s: float = 120.0  # time constant of the EWMA of demand and supply (the sliding window)
    threshold: float = 1.0  # no surge while smoothed demand/supply stays at or below this
    gain: float = 0.5  # multiplier slope above the threshold, per unit of ratio
    cap: float = 3.0
    step: float = 0.1  # multipliers are multiples of this (riders see 1.3x, not 1.2871x)
    band: float = 0.2  # hysteresis: the multiplier moves only when its target is this far away
    min_supply: float = 1.0  # smoothed supply below this counts as this (no division by zero)


@dataclass(frozen=True)
class ServeConfig:
    """The live service (matcher serve): HTTP, the wall-clock tick loop, durability."""

    out: str = "runs/live"
    host: str = "127.0.0.1"
    port: int = 8000
    window_s: float = 2.0  # tick period on the wall clock
    shards: int = 1
    address: str | None = None  # Ray cluster; None: an embedded local Ray
    num_cpus: float = 0.5  # per shard actor
    drivers: str | None = None  # driver file: only these drivers may connect (vehicle, rating from it)
    secret_file: str | None = None  # None: ~/.config/matcher/secret (created on first use)
    patience_s: float = 300.0  # a ride still searching after this many seconds expires
    offer_timeout_s: float = 20.0  # an offer with no answer by then counts as a decline
    max_drivers: int = 100_000  # driver keys the coordinator's tables are sized for
    commit_interval_s: float = 0.0  # group commit: at least this long between two fsyncs (0: back to back)
    flush_s: float = 10.0  # journal -> Parquet event parts, locations, ticks, cells this often
    record_locations: bool = True  # OUT/locations/ from the pings
    long_poll_s: float = 25.0  # the longest GET /v1/drivers/offer may wait
    base_cents: tuple[tuple[str, int, int, int], ...] = (  # ride type, base, per km, per minute (cents)
        ("uberx", 250, 110, 25),
        ("pool", 200, 80, 20),
        ("xl", 400, 180, 35),
        ("black", 700, 300, 60),
    )
    price_spread: float = 0.15  # the estimate is price x (1 -/+ this)
