"""The `matcher` command line (docs/cli.md). Parses arguments and calls the library.

Exit codes: 0 ok, 1 failure (one line, no traceback unless --debug), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from dataclasses import replace

from matcher.config import AreaConfig, MatchConfig, Policy, RunConfig, ShardConfig, SimConfig
from matcher.errors import MatcherError, UsageError
from matcher.io.bounds import RANGES, BoundsError, parse
from matcher.sim import scenario


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bounded(name: str):
    """The argparse type of numeric option ``name``: its kind and range from matcher.io.bounds (one place)."""

    def conv(text: str):
        try:
            return parse(name, text)
        except BoundsError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    conv.__name__ = name
    return conv


def _range(name: str) -> str:
    return RANGES[name].text()


def _drivers(text: str):
    if text.strip().lstrip("+-").isdigit():  # a count (a wrong one is a bad argument: exit 2, not 1)
        return _bounded("drivers")(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a driver file or a count, got ''")
    with contextlib.suppress(ValueError):
        float(text)  # nan, inf, 2.5, 1e400: meant as a count, not a file name
        if not os.path.exists(text):
            raise argparse.ArgumentTypeError(f"a count of drivers must be a whole number {_range('drivers')}: {text!r}")
    return text


def _tz(text: str) -> str:
    from matcher.analysis.localtime import check_tz

    try:
        return check_tz(text)
    except MatcherError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--tz: ")) from None


def _tz_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tz",
        type=_tz,
        default=None,
        metavar="ZONE",
        help="time zone of the report's time axes and hourly table, an IANA name such as America/New_York "
        "(default: the zone of the trace's pickup points)",
    )


def _policies(text: str):
    from matcher.sim.compare import parse_policies

    try:
        return parse_policies(text)
    except MatcherError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--policies: ")) from None


def _day(text: str) -> str:
    from datetime import date

    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD: {text!r}") from None


def _run_options(p: argparse.ArgumentParser, resumable: bool = False) -> None:
    s, m = SimConfig(), MatchConfig()

    def num(flag: str, name: str, default, text: str, group=p) -> None:
        group.add_argument(
            flag, type=_bounded(name), default=default, help=f"{text} (default %(default)s; {_range(name)})"
        )

    p.add_argument(
        "trace",
        nargs="?" if resumable else None,
        help="trace: a Parquet file or a folder of Parquet files (docs/trace.md; required"
        + (" unless --resume)" if resumable else ")"),
    )
    p.add_argument(
        "--out",
        required=not resumable,
        help="output folder: new or empty, or see --overwrite (required" + (" unless --resume)" if resumable else ")"),
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the matcher run already in --out, removed whole; a folder that is not a run is never "
        "deleted (default off)",
    )
    p.add_argument(
        "--drivers",
        type=_drivers,
        default=None,
        help="a driver file (Parquet) or a count to synthesise "
        f"(default: one per 10 requests of the busiest hour; a count is {_range('drivers')})",
    )
    num("--window", "window", s.window_s, "batch window in seconds")
    num("--shards", "shards", 1, "number of geohash shards")
    p.add_argument(
        "--backend",
        choices=("inprocess", "ray"),
        default=None,
        help="shard backend (default: inprocess for 1 shard, ray for more)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster HOST:PORT, auto or ray://HOST:PORT (default: RAY_ADDRESS if set, as in a Ray job; "
        "else a private embedded Ray)",
    )
    p.add_argument(
        "--wait-for-nodes",
        type=_bounded("wait_for_nodes"),
        default=ShardConfig.wait_for_nodes_s,
        metavar="S",
        help="an autoscaling cluster: wait up to S seconds for nodes to fit the shards "
        f"(default 0: shards that do not fit the cluster fail at once; {_range('wait_for_nodes')})",
    )
    num("--num-cpus", "num_cpus", ShardConfig.num_cpus, "CPUs per shard actor")
    p.add_argument(
        "--shard-calls",
        choices=("direct", "ray"),
        default="direct" if ShardConfig.direct_calls else "ray",
        help="how the coordinator calls the shard actors: direct = over a TCP channel to each actor, opened "
        "through Ray (a shard that cannot be reached that way falls back to Ray calls); ray = as Ray actor "
        "calls (default %(default)s)",
    )
    num("--seed", "seed", 0, "random seed")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar, no printed summary and no Ray banners; the output folder is still printed (default off)",
    )
    p.add_argument(
        "--record-locations",
        action="store_true",
        help="write driver location history to OUT/locations/ (default off)",
    )
    p.add_argument(
        "--placement",
        choices=("load", "hash"),
        default=ShardConfig.placement,
        help="regions: load = Hilbert-curve runs cut by measured load, rebalanced; hash = geohash regions on a "
        "consistent-hash ring (default %(default)s)",
    )
    ar = AreaConfig()
    p.add_argument(
        "--areas",
        choices=("auto", "one"),
        default=ar.mode,
        help="auto: replay each independent area of the trace on its own (on Ray with --backend ray); "
        "one: the whole trace in one world (default %(default)s)",
    )
    p.add_argument(
        "--area-cpus",
        type=_bounded("area_cpus"),
        default=ar.num_cpus,
        help=f"CPUs per area task on Ray (default %(default)s; {_range('area_cpus')})",
    )
    num(
        "--checkpoint-every",
        "checkpoint_every",
        RunConfig.checkpoint_every_s,
        "simulated seconds between checkpoints, 0 for none",
    )
    g = p.add_argument_group("models")
    num("--patience", "patience", s.patience_s, "rider patience, s", g)
    num("--accept-prob", "accept_prob", s.accept_prob, "driver acceptance probability", g)
    num("--offer-timeout", "offer_timeout", s.offer_timeout_s, "offer timeout, s", g)
    num("--cancel-base", "cancel_base", s.cancel_base, "rider cancel probability after match, base", g)
    num("--cancel-per-min", "cancel_per_min", s.cancel_per_min, "... plus this per minute of pickup ETA", g)
    num("--gps-dropout-rate", "gps_dropout_rate", s.gps_dropout_rate_per_h, "GPS dropouts per driver-hour", g)
    num("--speed", "speed", s.trip_speed_mps, "city speed, m/s: sets both --eta-speed and --drive-speed", g)
    num("--radius", "radius", m.radius_m, "candidate radius, m", g)
    num("--k", "k", m.k, "candidates per request", g)
    num("--gps-timeout", "gps_timeout", m.gps_timeout_s, "stale after this many silent seconds", g)
    scenario.add_cli_options(p.add_argument_group("world (docs/models.md)"))


def config_from_args(a: argparse.Namespace, policy: Policy | None = None, window: float | None = None) -> RunConfig:
    """The one place options become config: defaults < --world preset < --config file < options given
    (matcher.sim.scenario). ``policy`` and ``window`` (compare's runs) override all of them."""
    given = scenario.from_namespace(a, getattr(a, "given", set(vars(a))))
    if policy is not None:
        given["policy"] = policy
    if window is not None:
        given["window"] = window
    cfg = scenario.resolve(given, config=a.config, world=a.world, trace=a.trace, out=a.out)
    if getattr(a, "wait_for_nodes", None) is not None:
        cfg = replace(cfg, shard=replace(cfg.shard, wait_for_nodes_s=a.wait_for_nodes))
    if getattr(a, "shard_calls", None) is not None:
        cfg = replace(cfg, shard=replace(cfg.shard, direct_calls=a.shard_calls == "direct"))
    cfg = replace(cfg, areas=replace(AreaConfig(), mode=a.areas, num_cpus=a.area_cpus))
    return replace(cfg, quiet=a.quiet)


def _output_folder(out: str) -> str:
    """Where a run writes, as an absolute path. Inside a Ray job a relative
    path is refused: the job runs in a temporary copy of the working directory, deleted with it."""
    from matcher.dist.runmode import in_ray_job

    if in_ray_job(os.environ) and not os.path.isabs(out):
        print(
            f"matcher: error: --out {out} is relative, and this is a Ray job: it runs in a temporary copy of the "
            f"working directory that is deleted with it; give an absolute path on the cluster (e.g. /home/ray/runs/x)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return os.path.abspath(out)  # the replay prints it once the inputs are read


# Options of `replay` that are not part of the run (with --resume they may be given freely).
_NOT_RUN_OPTIONS = {"resume", "quiet", "debug", "help", "out", "overwrite", "tz", "cmd", "func", "parser"}


def _run_value(cfg: RunConfig, dest: str):
    """What option ``dest`` (an argparse dest) is set to in a run's config; KeyError if it is not a run option."""
    sc = scenario.scenario_of(cfg)
    name = dest.replace("_", "-")
    if dest == "trace":
        return sc["trace"]
    if name in scenario.BY_NAME:
        return sc[name]
    if dest == "speed":  # the alias of both speeds: the run's value if they agree
        return sc["eta-speed"] if sc["eta-speed"] == sc["drive-speed"] else (sc["eta-speed"], sc["drive-speed"])
    return {
        "wait_for_nodes": cfg.shard.wait_for_nodes_s,
        "shard_calls": "direct" if cfg.shard.direct_calls else "ray",
        "areas": cfg.areas.mode,
        "area_cpus": cfg.areas.num_cpus,
    }[dest]


def _resume_check(a):
    """The check `resume_replay` runs on the run's config: options given again must say what the run uses
    (the run continues with its own options); --world, --config and --print-config cannot be given."""
    given = a.given - _NOT_RUN_OPTIONS

    def check(cfg: RunConfig) -> None:
        for dest in sorted(given):
            flag = "TRACE" if dest == "trace" else "--" + dest.replace("_", "-")
            try:
                run_value = _run_value(cfg, dest)
            except KeyError:
                raise UsageError(
                    f"{flag}: cannot be given with --resume (the run continues with its own options)"
                ) from None
            value = getattr(a, dest)
            if dest in ("trace", "drivers") and isinstance(value, str):
                value = os.path.abspath(value)
            if value != run_value:
                raise UsageError(
                    f"{flag} {value!r} differs from the run's {run_value!r}: --resume continues the run with its "
                    "own options (drop it, or start a new run with --overwrite)"
                )

    return check


def _done(out: str) -> None:
    """Every run ends by printing its absolute output folder (on stdout, also under --quiet)."""
    print(os.path.abspath(out), flush=True)


def _cmd_replay(a) -> int:
    from matcher.analysis.report import build_report
    from matcher.analysis.summary_text import format_summary
    from matcher.sim.replay import resume_replay, run_replay

    if a.resume:
        out = _output_folder(a.resume)
        a.out_dir = out
        summary = resume_replay(out, quiet=a.quiet, check=_resume_check(a))
    else:
        if a.out is not None:
            a.out = _output_folder(a.out)
        cfg = _scenario_or_exit(a)
        if a.print_config:
            print(scenario.to_toml(cfg), end="")
            return 0
        a.out = out = _output_folder(cfg.out)  # --out, or the --config file's
        a.out_dir = out
        summary = run_replay(replace(cfg, out=out), overwrite=a.overwrite)
    build_report(out, tz=a.tz)
    if not a.quiet:
        print(format_summary([summary]))
    _done(out)
    return 0


def _scenario_or_exit(a, **kw) -> RunConfig:
    try:
        return config_from_args(a, **kw)
    except scenario.ScenarioError as e:
        a.parser.error(str(e))  # exits 2


def _cmd_compare(a) -> int:
    from matcher.sim.compare import run_compare

    a.out = _output_folder(a.out)
    a.out_dir = a.out
    policies = a.policies
    cfg = _scenario_or_exit(a, policy=policies[0][1], window=policies[0][2])  # a bad scenario: exit 2 first
    if a.print_config:
        print(scenario.to_toml(cfg), end="")
        return 0
    run_compare(a, policies, config_from_args)
    _done(a.out)
    return 0


def _cmd_report(a) -> int:
    from matcher.analysis.report import build_report

    path = build_report(a.dir, tz=a.tz)
    print(path)
    return 0


def _cmd_import(a) -> int:
    from matcher.io.importers import IMPORTERS

    report = IMPORTERS[a.source](a.files, a.out, day=a.day)
    print(report)
    return 0


def _cmd_synth(a) -> int:
    from matcher.sim.synth import synthesize

    print(
        synthesize(
            out=a.out,
            drivers_out=a.drivers_out,
            drivers=a.drivers,
            requests_per_s=a.requests_per_s,
            hours=a.hours,
            seed=a.seed,
            cities=a.cities,
        )
    )
    return 0


def _cmd_validate(a) -> int:
    from matcher.io.trace import validate

    report = validate(a.trace, drivers=a.drivers)
    print(report.format())
    return 0 if report.ok else 1


# --- the live service: matcher serve / token / loadgen (matcher.serve) ----------------------------
def _cmd_serve(a) -> int:
    from matcher.config import ServeConfig
    from matcher.dist.backend import keep_embedded_ray_on_loopback

    if a.address is None:
        keep_embedded_ray_on_loopback()  # before ray is imported (matcher.serve.app imports it)
    from matcher.serve.app import run_service

    base = MatchConfig()
    cfg = ServeConfig(
        out=a.out, host=a.host, port=a.port, window_s=a.window, shards=a.shards, address=a.address,
        num_cpus=a.num_cpus, drivers=a.drivers, secret_file=a.secret_file, patience_s=a.patience,
        offer_timeout_s=a.offer_timeout, record_locations=not a.no_locations, max_drivers=a.max_drivers,
    )  # fmt: skip
    summary = run_service(cfg, replace(base, gps_timeout_s=a.gps_timeout))
    print(f"matcher: drained; {summary.get('requests', 0)} requests, {summary.get('completed', 0)} completed ({a.out})")
    return 0


def _cmd_token(a) -> int:
    from matcher.serve.auth import issue, load_secret

    print(issue(load_secret(a.secret_file), a.role, a.sub, ttl_s=a.ttl, vehicle=a.vehicle, rating=a.rating))
    return 0


def _cmd_loadgen(a) -> int:
    from matcher.serve.loadgen import LoadgenConfig, run_loadgen

    cfg = LoadgenConfig(
        trace=a.trace, url=a.url, out=a.out, drivers=a.drivers, speed=a.speed, secret_file=a.secret_file,
        duration_s=a.duration, seed=a.seed, accept_prob=a.accept_prob, single_share=a.single_share,
        drain_timeout_s=a.drain_timeout,
    )  # fmt: skip
    result = run_loadgen(cfg)
    print(f"matcher: loadgen wrote {result['path']} ({result['requests_posted']} requests, "
          f"{result['rides_ended']} ended, {result['rides_open']} still open)")  # fmt: skip
    return 0 if result["rides_open"] == 0 else 1


def _add_serve_commands(sub) -> None:
    from matcher.config import ServeConfig

    d = ServeConfig()
    sv = sub.add_parser("serve", help="run the live dispatch service (Ray Serve)")
    sv.add_argument("--out", required=True, help="run folder (the same folder after a crash recovers the open rides)")
    sv.add_argument("--host", default=d.host, help="HTTP bind address (default %(default)s)")
    sv.add_argument(
        "--port", type=_bounded("port"), default=d.port, help=f"HTTP port (default %(default)s; {_range('port')})"
    )
    sv.add_argument("--shards", type=_bounded("shards"), default=d.shards, help="shard actors (default %(default)s)")
    sv.add_argument(
        "--window", type=_bounded("window"), default=d.window_s, help="tick period, s (default %(default)s)"
    )
    sv.add_argument("--drivers", default=None, help="driver file: only these drivers may connect")
    sv.add_argument("--secret-file", default=None, help="token secret (default ~/.config/matcher/secret)")
    sv.add_argument("--address", default=None, help="Ray address of an existing cluster (default: embedded)")
    sv.add_argument(
        "--num-cpus", type=_bounded("num_cpus"), default=d.num_cpus, help="CPUs per shard (default %(default)s)"
    )
    sv.add_argument(
        "--patience", type=_bounded("patience"), default=d.patience_s, help="search time before a ride expires, s"
    )
    sv.add_argument(
        "--offer-timeout", type=_bounded("offer_timeout"), default=d.offer_timeout_s, help="offer answer time, s"
    )
    sv.add_argument(
        "--gps-timeout", type=_bounded("gps_timeout"), default=MatchConfig.gps_timeout_s, help="stale after, s"
    )
    sv.add_argument("--max-drivers", type=_bounded("max_drivers"), default=d.max_drivers, help="driver capacity")
    sv.add_argument("--no-locations", action="store_true", help="do not write OUT/locations/")
    sv.set_defaults(func=_cmd_serve)

    tk = sub.add_parser("token", help="issue a bearer token for the live service")
    tk.add_argument("--role", required=True, choices=("rider", "driver", "service"))
    tk.add_argument("--sub", required=True, help="subject id (rider id, driver id, gateway name)")
    tk.add_argument("--secret-file", default=None, help="token secret (default ~/.config/matcher/secret)")
    tk.add_argument("--ttl", type=_bounded("ttl"), default=None, help="expires after this many seconds (default never)")
    tk.add_argument("--vehicle", choices=("uberx", "xl", "black"), default=None, help="driver tokens: vehicle type")
    tk.add_argument("--rating", type=_bounded("rating"), default=None, help="driver tokens: rating 1..5")
    tk.set_defaults(func=_cmd_token)

    lg = sub.add_parser("loadgen", help="drive a live service from a trace in accelerated real time")
    lg.add_argument("trace")
    lg.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    lg.add_argument("--out", required=True, help="folder for loadgen.json")
    lg.add_argument("--drivers", type=_drivers, default=None, help="driver file or count (default: as replay)")
    lg.add_argument(
        "--speed", type=_bounded("loadgen_speed"), default=1.0, help="trace seconds per wall second (default 1)"
    )
    lg.add_argument("--secret-file", default=None, help="token secret (default ~/.config/matcher/secret)")
    lg.add_argument(
        "--duration", type=_bounded("duration"), default=None, help="post requests for this many wall seconds"
    )
    lg.add_argument("--seed", type=_bounded("seed"), default=0, help="random seed (default 0)")
    lg.add_argument(
        "--accept-prob", type=_bounded("accept_prob"), default=SimConfig.accept_prob, help="drivers accept with this"
    )
    lg.add_argument(
        "--single-share", type=_bounded("single_share"), default=0.05, help="share of drivers pinging one by one"
    )
    lg.add_argument(
        "--drain-timeout", type=_bounded("drain_timeout"), default=600.0, help="wait this long for rides to end"
    )
    lg.set_defaults(func=_cmd_loadgen)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="matcher", description="Batch matching for ride-hailing dispatch, on Ray.")
    p.add_argument("--debug", action="store_true", help="show tracebacks (default off)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    r = sub.add_parser("replay", help="replay a trace and write a run folder")
    _run_options(r, resumable=True)
    r.add_argument(
        "--policy",
        choices=[p.value for p in Policy],
        default=Policy.BATCH.value,
        help="matching policy (default batch)",
    )
    r.add_argument(
        "--resume",
        metavar="OUT",
        default=None,
        help="continue the interrupted run in OUT from its last checkpoint, with the run's own options "
        "(an option given again must match them; the trace and driver files must be unchanged; default: none)",
    )
    _tz_option(r)
    r.set_defaults(func=_cmd_replay, parser=r)

    c = sub.add_parser("compare", help="replay one trace under several policies")
    _run_options(c)
    c.add_argument(
        "--policies",
        type=_policies,
        default="greedy,batch:2,batch:10",
        help="comma list: greedy, batch:SECONDS (default %(default)s)",
    )
    _tz_option(c)
    c.set_defaults(func=_cmd_compare, parser=c)

    rep = sub.add_parser("report", help="(re)build DIR/report.html")
    rep.add_argument("dir", help="a run folder (summary.json) or a compare folder (compare.json); no default")
    _tz_option(rep)
    rep.set_defaults(func=_cmd_report)

    imp = sub.add_parser("import", help="convert public trip data to a trace")
    imp.add_argument("source", choices=("nyc-uber-2014", "tlc-yellow"), help="the layout of FILE (no default)")
    imp.add_argument("files", nargs="+", help="CSV files, plain or .gz (no default)")
    imp.add_argument("--out", required=True, help="trace file to write (.parquet; required)")
    imp.add_argument(
        "--day",
        type=_day,
        default=None,
        metavar="YYYY-MM-DD",
        help="keep only the trips whose local (New York) pickup date is this day (default: every day)",
    )
    imp.set_defaults(func=_cmd_import)

    sy = sub.add_parser("synth", help="generate a synthetic city")
    sy.add_argument("--out", required=True, help="trace file to write (required)")
    sy.add_argument("--drivers-out", required=True, help="driver file to write (required)")

    def snum(flag: str, name: str, default, text: str) -> None:
        sy.add_argument(
            flag, type=_bounded(name), default=default, help=f"{text} (default %(default)s; {_range(name)})"
        )

    snum("--drivers", "synth_drivers", 5000, "drivers in the fleet")
    snum("--requests-per-s", "requests_per_s", 5.0, "mean request rate over the window")
    snum("--hours", "hours", 1.0, "length of the window")
    snum("--seed", "seed", 0, "random seed")
    snum("--cities", "cities", 1, "spread the rate and the fleet over this many cities around the world")
    sy.set_defaults(func=_cmd_synth)

    v = sub.add_parser("validate", help="check a trace; exit 1 if it would be rejected")
    v.add_argument("trace", help="a Parquet file or a folder of Parquet files (no default)")
    v.add_argument("--drivers", default=None, help="also check this driver file (default: none)")
    v.set_defaults(func=_cmd_validate)
    _add_serve_commands(sub)
    for sp in sub.choices.values():  # --debug works before or after the command
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks (default off)")
    return p


class _Warnings(logging.Handler):
    """The library's warnings as ``matcher: warning: ...``, one line each, on the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"matcher: warning: {' '.join(record.getMessage().split())}", file=sys.stderr)


def _setup_logging() -> None:
    log = logging.getLogger("matcher")
    if not any(isinstance(h, _Warnings) for h in log.handlers):
        log.addHandler(_Warnings(logging.WARNING))
        log.propagate = False


def _interrupted(a, e) -> int:
    """One line on how to go on after Ctrl-C (exit 130) or SIGTERM (exit 143)."""
    from matcher.sim.replay import CHECKPOINT

    out = getattr(a, "out_dir", None)
    how = {2: "interrupted", 15: "terminated"}.get(e.signum, f"stopped by signal {e.signum}")
    if out is None:
        print(f"matcher: {how}", file=sys.stderr)
    elif a.cmd == "compare":
        print(f"matcher: {how}; a compare starts over: rerun it with --overwrite", file=sys.stderr)
    elif os.path.exists(os.path.join(out, "summary.json")) and not os.path.exists(os.path.join(out, CHECKPOINT)):
        print(
            f"matcher: {how} after the run was written; rebuild its report with: matcher report {os.path.abspath(out)}",
            file=sys.stderr,
        )
    elif os.path.exists(os.path.join(out, CHECKPOINT)):
        print(f"matcher: {how}; continue with: matcher replay --resume {os.path.abspath(out)}", file=sys.stderr)
    else:
        print(f"matcher: {how} before the first checkpoint; start again with --overwrite", file=sys.stderr)
    return 128 + e.signum


def main(argv: list[str] | None = None) -> int:
    from matcher.sim import interrupt

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    args.given = scenario.given_options(parser, argv)  # options given explicitly (they override --config)
    _setup_logging()
    in_main_thread = threading.current_thread() is threading.main_thread()
    saved = interrupt.install() if in_main_thread else None
    try:
        return args.func(args)
    except interrupt.Interrupted as e:
        return _interrupted(args, e)
    except KeyboardInterrupt:
        return _interrupted(args, interrupt.Interrupted(2))
    except SystemExit as e:
        if e.code == int(signal.SIGTERM):  # ray.init's own SIGTERM handler exits with 15, silently
            return _interrupted(args, interrupt.Interrupted(int(signal.SIGTERM)))
        raise
    except UsageError as e:
        if args.debug:
            traceback.print_exc()
        print(f"matcher: error: {e}", file=sys.stderr)
        return 2
    except MatcherError as e:
        if args.debug:
            traceback.print_exc()
        print(f"matcher: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the environment refused (no space, read-only, ...): name the path and the cause
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"matcher: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the contract: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"matcher: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr
        )
        return 1
    finally:
        if saved is not None:
            interrupt.restore(saved)


if __name__ == "__main__":
    sys.exit(main())
