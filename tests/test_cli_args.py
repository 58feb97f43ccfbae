"""The command line as users meet it (docs/cli.md): every number bounded (exit 2, one line), every
default in --help, replay writes its report and prints its folder, long traces warn, and simulated
time never stands still."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from procs import one_line
from procs import run_cli as run

from matcher.cli import build_parser
from matcher.errors import MatcherError
from matcher.io.bounds import RANGES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("tiny") / "tiny.parquet"
    pq.write_table(pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 30), p)
    return p


# --------------------------------------------------------------------------- numbers: exit 2, one line

# option -> (command, flag) for every row of matcher.io.bounds.RANGES
FLAGS = {name: ("replay", "--" + name.replace("_", "-")) for name in RANGES}
FLAGS.update(
    {
        "synth_drivers": ("synth", "--drivers"),
        "requests_per_s": ("synth", "--requests-per-s"),
        "hours": ("synth", "--hours"),
        "cities": ("synth", "--cities"),
        "port": ("serve", "--port"),
        "max_drivers": ("serve", "--max-drivers"),
        "ttl": ("token", "--ttl"),
        "rating": ("token", "--rating"),
        "loadgen_speed": ("loadgen", "--speed"),
        "duration": ("loadgen", "--duration"),
        "single_share": ("loadgen", "--single-share"),
        "drain_timeout": ("loadgen", "--drain-timeout"),
    }
)


def _bad_values(name: str) -> list[str]:
    r = RANGES[name]
    bad = ["nan", "inf", "-inf", "1e400", "NaN", "", str(10**30)] + (["x"] if name != "drivers" else [])  # a file
    if r.kind is int:
        bad += ["2.5", str(int(r.hi) + 1), str(int(r.lo) - 1)]
    else:
        bad += [repr(r.hi * 1.0001 + 1e-9)]
        if not r.zero:
            bad += [repr(r.lo) if r.lo_open else repr(r.lo - max(abs(r.lo) * 0.01, 1e-6))]
    return bad


CASES = [(name, v) for name in RANGES for v in _bad_values(name)]


@pytest.mark.parametrize("name, value", CASES)
def test_every_number_is_bounded(tiny, tmp_path, name, value):
    cmd, flag = FLAGS[name]
    if cmd == "replay":
        argv = ["replay", str(tiny), "--out", str(tmp_path / "o"), "--quiet", f"{flag}={value}"]
    elif cmd == "serve":
        argv = ["serve", "--out", str(tmp_path / "o"), f"{flag}={value}"]
    elif cmd == "token":
        argv = ["token", "--role", "driver", "--sub", "d1", f"{flag}={value}"]
    elif cmd == "loadgen":
        argv = ["loadgen", str(tiny), "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "o"), f"{flag}={value}"]
    else:
        argv = ["synth", "--out", str(tmp_path / "t.parquet"), "--drivers-out", str(tmp_path / "d.parquet")]
        argv.append(f"{flag}={value}")
    code, _, err = run(*argv)
    assert code == 2, (name, value, err)
    line = one_line(err)
    assert flag in line and "error" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "t.parquet").exists()


@pytest.mark.parametrize("name", sorted(RANGES))
def test_range_ends_are_accepted(name):
    from matcher.io.bounds import parse

    r = RANGES[name]
    for v in (r.lo, r.hi) if not r.lo_open else (r.hi,):
        assert parse(name, str(int(v)) if r.kind is int else repr(float(v))) == v
    if r.zero:
        assert parse(name, "0") == 0


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["compare", "T", "--out", "O", "--policies", "fastest"], "unknown policy"),
        (["compare", "T", "--out", "O", "--policies", "batch:nan"], "batch window"),
        (["compare", "T", "--out", "O", "--policies", "batch:inf"], "batch window"),
        (["compare", "T", "--out", "O", "--policies", "greedy,greedy"], "twice"),
        (["compare", "T", "--out", "O", "--policies", ""], "empty"),
        (["import", "nyc-uber-2014", "f.csv", "--out", "x.parquet", "--day", "2014-02-30"], "--day"),
        (["import", "tlc-yellow", "f.csv", "--out", "x.parquet", "--day", "yesterday"], "--day"),
        (["replay", "T", "--out", "O", "--drivers", "99999999999999999999"], "--drivers"),
        (["replay", "T", "--out", "O", "--drivers", "0"], "--drivers"),
        (["replay", "T", "--out", "O", "--shard-calls", "grpc"], "--shard-calls"),
    ],
)
def test_bad_policies_days_and_counts_exit_2(tmp_path, argv, fragment):
    code, _, err = run(*argv)
    assert code == 2, err
    assert fragment in one_line(err)


# --------------------------------------------------------------------------- --help


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    act = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(act.choices)


@pytest.mark.parametrize("cmd", ["replay", "compare", "report", "import", "synth", "validate"])
def test_help_states_every_default(cmd):
    sp = _subparsers(build_parser())[cmd]
    for act in sp._actions:
        if isinstance(act, argparse._HelpAction):
            continue
        assert act.help, f"{cmd} {act.dest}: no help"
        assert "default" in act.help or "required" in act.help, f"{cmd} {act.option_strings or act.dest}: {act.help}"
    text = sp.format_help()
    assert "%(default)" not in text


@pytest.mark.parametrize("cmd", ["replay", "compare"])
def test_help_says_quiet_hides_the_summary(cmd):
    text = " ".join(_subparsers(build_parser())[cmd].format_help().split())
    assert "--quiet" in text and "no printed summary" in text


def test_help_shows_the_ranges():
    text = " ".join(_subparsers(build_parser())["replay"].format_help().split())
    assert "0.05..3600 s" in text and "0 or 1..1e+09 s" in text


# --------------------------------------------------------------------------- what a run prints and writes


def test_replay_writes_its_report_and_prints_its_absolute_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run("replay", str(tiny), "--out", "rel/out", "--drivers", "5", "--quiet")
    assert code == 0, err
    assert out == f"{(tmp_path / 'rel' / 'out').resolve()}\n"
    assert (tmp_path / "rel" / "out" / "report.html").stat().st_size > 1000
    code, out, err = run("replay", str(tiny), "--out", "rel/o2", "--drivers", "5")
    assert code == 0
    assert out.rstrip().splitlines()[-1] == str((tmp_path / "rel" / "o2").resolve())
    assert "requests" in out  # the summary, without --quiet


def test_a_trace_far_longer_than_a_day_warns_with_its_span(tmp_path):
    t = pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 20)
    ms = t.column("request_time").cast(pa.int64()).to_numpy().copy()
    ms[-1] = ms[0] + 90 * 86_400_000  # one request three months later
    t = t.set_column(1, "request_time", pa.array(ms).cast(pa.timestamp("ms", tz="UTC")))
    p = tmp_path / "long.parquet"
    pq.write_table(t, p)
    code, _, err = run(
        "replay",
        str(p),
        "--out",
        str(tmp_path / "o"),
        "--drivers",
        "3",
        "--quiet",
        "--checkpoint-every",
        "0",
        "--gps-dropout-rate",
        "0",
    )
    assert code == 0, err
    line = one_line(err)
    assert line.startswith("matcher: warning: ") and "spans 90.0 days" in line


@pytest.mark.parametrize(
    "step, fragment", [(0.0, "tick step"), (float("inf"), "tick step"), (float("nan"), "tick step")]
)
def test_the_guard_fails_loudly_if_simulated_time_would_stand_still(tiny, tmp_path, monkeypatch, step, fragment):
    """Whatever gets past the option checks (a bug, a library caller), the loop never spins in place."""
    from matcher.config import SimConfig

    monkeypatch.setattr(SimConfig, "step_s", property(lambda self: step))
    code, _, err = run("replay", str(tiny), "--out", str(tmp_path / "o"), "--drivers", "5", "--quiet")
    assert code == 1
    line = one_line(err)
    assert fragment in line and "internal error" not in line


def test_trip_durations_over_a_day_are_quarantined(tmp_path):
    from matcher.io import trace

    t = pq.read_table(REPO / "data" / "synth-small.parquet").slice(0, 5)
    t = t.set_column(
        t.column_names.index("trip_duration_s"), "trip_duration_s", pa.array([600.0, 86_400.0, 86_401.0, 1e12, None])
    )
    p = tmp_path / "t.parquet"
    pq.write_table(t, p)
    _, q = trace.read_requests(p)
    assert q.column("row").to_pylist() == [2, 3]
    assert set(q.column("reason").to_pylist()) == {"bad_trip_duration"}


def test_library_errors_are_matcher_errors():
    assert issubclass(__import__("matcher.errors").errors.UsageError, MatcherError)


@pytest.mark.slow
@pytest.mark.ray
def test_quiet_hides_ray_banners(tmp_path):
    """A real embedded Ray (its own RAY_TMPDIR and process group): under --quiet stderr holds only
    the run's own "output folder" line (for a job's log), no Ray banner."""
    import shutil
    import signal
    import tempfile

    t = pq.read_table(REPO / "data" / "synth-small.parquet")
    ms = t.column("request_time").cast(pa.int64())
    p = tmp_path / "t.parquet"
    pq.write_table(t.filter(pc.less(ms, pc.min(ms).as_py() + 120_000)), p)
    ray_tmp = tempfile.mkdtemp(prefix="mrq-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_TMPDIR=ray_tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    argv = [
        str(BIN / "matcher"),
        "replay",
        str(p),
        "--out",
        str(tmp_path / "o"),
        "--drivers",
        "20",
        "--shards",
        "2",
        "--backend",
        "ray",
        "--num-cpus",
        "0.25",
        "--quiet",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, stderr
    out = tmp_path / "o"
    assert stderr == f"matcher: output folder {out}\n", (
        stderr
    )  # no "Token authentication is enabled ..." or any other Ray line
    assert stdout == f"{tmp_path / 'o'}\n"


def test_serve_on_a_port_in_use_says_so_in_one_line_before_starting_ray(tmp_path):
    import socket

    from procs import run_matcher

    secret = tmp_path / "secret"
    secret.write_bytes(b"port-test-secret-0123456789abcdef0123\n")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = run_matcher(["serve", "--out", str(tmp_path / "live"), "--port", str(port), "--secret-file", str(secret)],
                           timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert (
        one_line(done.stderr)
        == f"matcher: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port"
    )
    assert done.seconds < 30  # refused before any Ray process starts


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1 (--address)"),
        ("http://127.0.0.1:8265", "--address=http://127.0.0.1:8265 is a job server address"),
    ],
)
def test_serve_to_a_cluster_that_is_not_there_fails_in_one_line(tmp_path, address, why):
    """The service's Ray is decided as the replay's (matcher.dist.runmode): an address where
    nothing listens, or a job server's, ends in one line within seconds (it used to retry in
    ray.init for minutes)."""
    from procs import run_matcher

    secret = tmp_path / "secret"
    secret.write_bytes(b"addr-test-secret-0123456789abcdef0123\n")
    done = run_matcher(["serve", "--out", str(tmp_path / "live"), "--address", address, "--secret-file", str(secret)],
                       timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert one_line(done.stderr).startswith(f"matcher: {why}"), done.stderr
    assert done.seconds < 30


@pytest.mark.parametrize(
    "flag, direct", [([], True), (["--shard-calls", "direct"], True), (["--shard-calls", "ray"], False)]
)
def test_shard_calls_sets_how_the_shards_are_called(flag, direct):
    from matcher.cli import config_from_args

    a = build_parser().parse_args(["replay", "T.parquet", "--out", "O", *flag])
    assert config_from_args(a).shard.direct_calls is direct
