"""Every Ray wait is bounded and explained in one line (issue 12), through the real CLI.

Each case runs `python -m matcher replay ...` in a process group of its own (tests/procs.py):
an unreachable --address, a job-server URL given as RAY_ADDRESS, and shards that can never
be placed on the embedded Ray (2 CPUs here). Each must end with exit 1, one line on stderr
naming the cause, no traceback, and well within its bound.
"""

from __future__ import annotations

import os

import pytest
from procs import run_matcher, run_python

from matcher.dist.runmode import RayTarget, resolve_target
from matcher.errors import MatcherError

pytestmark = pytest.mark.ray


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", **extra)
    return env


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("matcher:") and "output folder" not in ln]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _replay(small, out, *extra: str, env: dict[str, str] | None = None, timeout: float = 120):
    args = ["replay", str(small.trace), "--out", str(out), "--drivers", str(small.drivers), "--quiet", *extra]
    return run_matcher(args, env=env or _env(), timeout=timeout)


def test_an_address_where_nothing_listens_fails_at_once(small_trace, tmp_path):
    r = _replay(small_trace, tmp_path / "x", "--shards", "2", "--address", "127.0.0.1:1")
    line = _one_line(r.stderr)
    assert r.returncode == 1 and r.seconds < 30, (r.seconds, r.stderr[-2000:])
    assert "cannot reach the Ray cluster at 127.0.0.1:1 (--address)" in line


def test_a_job_server_url_in_ray_address_is_refused(small_trace, tmp_path):
    r = _replay(small_trace, tmp_path / "x", "--shards", "2", env=_env(RAY_ADDRESS="http://127.0.0.1:8265"))
    line = _one_line(r.stderr)
    assert r.returncode == 1 and r.seconds < 30
    assert "RAY_ADDRESS=http://127.0.0.1:8265 is a job server address" in line


@pytest.mark.parametrize(
    "shards, cpus, says",
    [
        ("8", "0.5", "8 shards x 0.5 CPU (--num-cpus) = 4 CPU can never be placed"),
        ("64", "0.5", "64 shards x 0.5 CPU (--num-cpus) = 32 CPU can never be placed"),
    ],
)
def test_shards_that_can_never_be_placed_fail_at_once_with_the_arithmetic(small_trace, tmp_path, shards, cpus, says):
    r = _replay(small_trace, tmp_path / "x", "--shards", shards, "--num-cpus", cpus)
    line = _one_line(r.stderr)
    assert r.returncode == 1 and r.seconds < 60, (r.seconds, r.stderr[-2000:])  # Ray's start-up, then at once
    assert says in line and "embedded local Ray" in line and "CPU on 1 node(s)" in line, line
    assert "use --" in line  # and the fix


def test_an_absurd_num_cpus_is_a_bad_argument_before_ray_starts(small_trace, tmp_path):
    """--num-cpus 1e9 is outside the option's documented range: exit 2, one line, no Ray."""
    r = _replay(small_trace, tmp_path / "x", "--shards", "2", "--num-cpus", "1e9")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--num-cpus: must be 0.01..1024" in lines[0], r.stderr[-2000:]


def test_run_modes_are_decided_in_one_place():
    assert resolve_target(None, {}) == RayTarget("embedded", None, loopback=True)
    assert resolve_target(None, {"RAY_ADDRESS": "local"}).mode == "embedded"
    with pytest.raises(MatcherError, match="not a Ray address"):
        resolve_target("nonsense", {})
    with pytest.raises(MatcherError, match="cannot reach"):
        resolve_target(None, {"RAY_ADDRESS": "127.0.0.1:1"})  # RAY_ADDRESS is used when --address is not
    with pytest.raises(MatcherError, match=r"auto: no Ray cluster started by `ray start`"):
        resolve_target("auto", {"RAY_TMPDIR": "/nonexistent-matcher-test"})


_STOP_SCRIPT = """
import ray
from matcher.dist.ray_backend import connect, stop_started
from matcher.dist.runmode import RayTarget

assert connect(RayTarget("embedded", None, loopback=True), quiet=True)
procs = {kind: [p.process for p in infos] for kind, infos in ray._private.worker._global_node.all_processes.items()}
monitor = procs["monitor"][0]
real, seen = ray.shutdown, {}

def shutdown(*a, **k):
    seen["monitor_alive"] = monitor.poll() is None
    return real(*a, **k)

ray.shutdown = shutdown
stop_started(True)
print(seen["monitor_alive"], sorted(kind for kind, ps in procs.items() for p in ps if p.poll() is None))
"""


def test_the_embedded_ray_stops_its_autoscaler_monitor_first_and_leaves_no_process():
    """`stop_started`: the monitor is gone before Ray's shutdown starts (else the shutdown waits
    a second for it), and every process the embedded Ray started has exited afterwards."""
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="mr-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        r = run_python(["-c", _STOP_SCRIPT], env=_env(RAY_TMPDIR=tmp), timeout=120)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "False []", r.stdout + r.stderr[-2000:]
