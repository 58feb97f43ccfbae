"""The `matcher` command line (docs/cli.md). Parses arguments and calls the library.

Exit codes: 0 ok, 1 failure (one line, no traceback unless --debug), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import replace

from matcher.config import AreaConfig, MatchConfig, Policy, RunConfig, ShardConfig, SimConfig
from matcher.errors import MatcherError
from matcher.sim import scenario


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind):
    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return v

    return conv


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return v


def _prob(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1: {text!r}")
    return v


def _drivers(text: str):
    if text.lstrip("+-").isdigit():  # a count (a wrong one is a bad argument: exit 2, not 1)
        v = int(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return v
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


def _run_options(p: argparse.ArgumentParser, resumable: bool = False) -> None:
    s, m = SimConfig(), MatchConfig()
    p.add_argument("trace", nargs="?" if resumable else None, help="trace: a Parquet file or a folder of Parquet files")
    p.add_argument("--out", required=not resumable, help="output folder")
    p.add_argument(
        "--drivers",
        type=_drivers,
        default=None,
        help="a driver file (Parquet) or a count to synthesise (default: one per 10 requests of the busiest hour)",
    )
    p.add_argument(
        "--window", type=_positive(float), default=s.window_s, help="batch window in seconds (default %(default)s)"
    )
    p.add_argument("--shards", type=_positive(int), default=1, help="number of geohash shards (default 1)")
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
        type=float,
        default=ShardConfig.wait_for_nodes_s,
        metavar="S",
        help="an autoscaling cluster: wait up to S seconds for nodes to fit the shards "
        "(default 0: shards that do not fit the cluster fail at once)",
    )
    p.add_argument(
        "--num-cpus",
        type=_positive(float),
        default=ShardConfig.num_cpus,
        help="CPUs per shard actor (default %(default)s)",
    )
    p.add_argument(
        "--placement",
        choices=("load", "hash"),
        default=ShardConfig.placement,
        help="regions: load = Hilbert-curve runs cut by measured load, rebalanced; hash = geohash regions on a "
        "consistent-hash ring (default %(default)s)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
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
        type=_positive(float),
        default=ar.num_cpus,
        help="CPUs per area task on Ray (default %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--record-locations", action="store_true", help="write driver location history to OUT/locations/")
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=RunConfig.checkpoint_every_s,
        help="simulated seconds between checkpoints, 0 for none (default %(default)s)",
    )
    g = p.add_argument_group("models")
    g.add_argument(
        "--patience", type=_positive(float), default=s.patience_s, help="rider patience, s (default %(default)s)"
    )
    g.add_argument(
        "--accept-prob", type=_prob, default=s.accept_prob, help="driver acceptance probability (default %(default)s)"
    )
    g.add_argument(
        "--offer-timeout",
        type=_positive(float),
        default=s.offer_timeout_s,
        help="offer timeout, s (default %(default)s)",
    )
    g.add_argument(
        "--cancel-base",
        type=_prob,
        default=s.cancel_base,
        help="rider cancel probability after match, base (default %(default)s)",
    )
    g.add_argument(
        "--cancel-per-min",
        type=_prob,
        default=s.cancel_per_min,
        help="... plus this per minute of pickup ETA (default %(default)s)",
    )
    g.add_argument(
        "--gps-dropout-rate",
        type=float,
        default=s.gps_dropout_rate_per_h,
        help="GPS dropouts per driver-hour (default %(default)s)",
    )
    g.add_argument(
        "--speed",
        type=_positive(float),
        default=s.trip_speed_mps,
        help="city speed, m/s: sets both --eta-speed and --drive-speed (default %(default)s)",
    )
    g.add_argument(
        "--radius", type=_positive(float), default=m.radius_m, help="candidate radius, m (default %(default)s)"
    )
    g.add_argument("--k", type=_positive(int), default=m.k, help="candidates per request (default %(default)s)")
    g.add_argument(
        "--gps-timeout",
        type=_positive(float),
        default=m.gps_timeout_s,
        help="stale after this many silent seconds (default %(default)s)",
    )
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


def _cmd_replay(a) -> int:
    from matcher.analysis.summary_text import format_summary
    from matcher.sim.replay import resume_replay, run_replay

    if a.resume:
        summary = resume_replay(_output_folder(a.resume), quiet=a.quiet)
    else:
        if a.out is not None:
            a.out = _output_folder(a.out)
        cfg = _scenario_or_exit(a)
        if a.print_config:
            print(scenario.to_toml(cfg), end="")
            return 0
        summary = run_replay(cfg)
    if not a.quiet:
        print(format_summary([summary]))
    return 0


def _scenario_or_exit(a, **kw) -> RunConfig:
    try:
        return config_from_args(a, **kw)
    except scenario.ScenarioError as e:
        a.parser.error(str(e))  # exits 2


def _cmd_compare(a) -> int:
    from matcher.sim.compare import parse_policies, run_compare

    policies = parse_policies(a.policies)
    a.out = _output_folder(a.out)
    cfg = _scenario_or_exit(a, policy=policies[0][1], window=policies[0][2])  # a bad scenario: exit 2 first
    if a.print_config:
        print(scenario.to_toml(cfg), end="")
        return 0
    run_compare(a, policies, config_from_args)
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
def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be within 1..65535: {text!r}")
    return v


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
    sv.add_argument("--port", type=_port, default=d.port, help="HTTP port (default %(default)s)")
    sv.add_argument("--shards", type=_positive(int), default=d.shards, help="shard actors (default %(default)s)")
    sv.add_argument("--window", type=_positive(float), default=d.window_s, help="tick period, s (default %(default)s)")
    sv.add_argument("--drivers", default=None, help="driver file: only these drivers may connect")
    sv.add_argument("--secret-file", default=None, help="token secret (default ~/.config/matcher/secret)")
    sv.add_argument("--address", default=None, help="Ray address of an existing cluster (default: embedded)")
    sv.add_argument(
        "--num-cpus", type=_positive(float), default=d.num_cpus, help="CPUs per shard (default %(default)s)"
    )
    sv.add_argument(
        "--patience", type=_positive(float), default=d.patience_s, help="search time before a ride expires, s"
    )
    sv.add_argument("--offer-timeout", type=_positive(float), default=d.offer_timeout_s, help="offer answer time, s")
    sv.add_argument("--gps-timeout", type=_positive(float), default=MatchConfig.gps_timeout_s, help="stale after, s")
    sv.add_argument("--max-drivers", type=_positive(int), default=d.max_drivers, help="driver capacity")
    sv.add_argument("--no-locations", action="store_true", help="do not write OUT/locations/")
    sv.set_defaults(func=_cmd_serve)

    tk = sub.add_parser("token", help="issue a bearer token for the live service")
    tk.add_argument("--role", required=True, choices=("rider", "driver", "service"))
    tk.add_argument("--sub", required=True, help="subject id (rider id, driver id, gateway name)")
    tk.add_argument("--secret-file", default=None, help="token secret (default ~/.config/matcher/secret)")
    tk.add_argument(
        "--ttl", type=_positive(float), default=None, help="expires after this many seconds (default never)"
    )
    tk.add_argument("--vehicle", choices=("uberx", "xl", "black"), default=None, help="driver tokens: vehicle type")
    tk.add_argument("--rating", type=float, default=None, help="driver tokens: rating 1..5")
    tk.set_defaults(func=_cmd_token)

    lg = sub.add_parser("loadgen", help="drive a live service from a trace in accelerated real time")
    lg.add_argument("trace")
    lg.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    lg.add_argument("--out", required=True, help="folder for loadgen.json")
    lg.add_argument("--drivers", type=_drivers, default=None, help="driver file or count (default: as replay)")
    lg.add_argument("--speed", type=_positive(float), default=1.0, help="trace seconds per wall second (default 1)")
    lg.add_argument("--secret-file", default=None, help="token secret (default ~/.config/matcher/secret)")
    lg.add_argument("--duration", type=_positive(float), default=None, help="post requests for this many wall seconds")
    lg.add_argument("--seed", type=_non_negative_int, default=0)
    lg.add_argument("--accept-prob", type=_prob, default=SimConfig.accept_prob, help="drivers accept with this")
    lg.add_argument("--single-share", type=_prob, default=0.05, help="share of drivers pinging one by one")
    lg.add_argument("--drain-timeout", type=_positive(float), default=600.0, help="wait this long for rides to end")
    lg.set_defaults(func=_cmd_loadgen)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="matcher", description="Batch matching for ride-hailing dispatch, on Ray.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
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
        help="continue the interrupted run in OUT from its last checkpoint (other options are ignored)",
    )
    r.set_defaults(func=_cmd_replay, parser=r)

    c = sub.add_parser("compare", help="replay one trace under several policies")
    _run_options(c)
    c.add_argument(
        "--policies", default="greedy,batch:2,batch:10", help="comma list: greedy, batch:SECONDS (default %(default)s)"
    )
    _tz_option(c)
    c.set_defaults(func=_cmd_compare, parser=c)

    rep = sub.add_parser("report", help="(re)build DIR/report.html")
    rep.add_argument("dir", help="a run folder (summary.json) or a compare folder (compare.json)")
    _tz_option(rep)
    rep.set_defaults(func=_cmd_report)

    imp = sub.add_parser("import", help="convert public trip data to a trace")
    imp.add_argument("source", choices=("nyc-uber-2014", "tlc-yellow"))
    imp.add_argument("files", nargs="+")
    imp.add_argument("--out", required=True, help="trace file to write (.parquet)")
    imp.add_argument(
        "--day",
        default=None,
        metavar="YYYY-MM-DD",
        help="keep only the trips whose local (New York) pickup date is this day",
    )
    imp.set_defaults(func=_cmd_import)

    sy = sub.add_parser("synth", help="generate a synthetic city")
    sy.add_argument("--out", required=True, help="trace file to write")
    sy.add_argument("--drivers-out", required=True, help="driver file to write")
    sy.add_argument("--drivers", type=_positive(int), default=5000)
    sy.add_argument("--requests-per-s", type=_positive(float), default=5.0)
    sy.add_argument("--hours", type=_positive(float), default=1.0)
    sy.add_argument("--seed", type=_non_negative_int, default=0)
    sy.add_argument(
        "--cities",
        type=_positive(int),
        default=1,
        help="spread the rate and the fleet over this many cities around the world (default 1)",
    )
    sy.set_defaults(func=_cmd_synth)

    v = sub.add_parser("validate", help="check a trace; exit 1 if it would be rejected")
    v.add_argument("trace")
    v.add_argument("--drivers", default=None, help="also check this driver file")
    v.set_defaults(func=_cmd_validate)
    _add_serve_commands(sub)
    for sp in sub.choices.values():  # --debug works before or after the command
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.given = scenario.given_options(parser, argv)  # options given explicitly (they override --config)
    try:
        return args.func(args)
    except MatcherError as e:
        if args.debug:
            traceback.print_exc()
        print(f"matcher: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("matcher: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the contract: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"matcher: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
