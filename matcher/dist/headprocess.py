"""A Ray head of its own (``ray start --head --block``) in a child process: a one-node cluster
on this machine for the tests and the benchmarks, the way a user starts one.

Ray is not imported here: the head is Ray's own CLI, in its own session, with its own
``RAY_TMPDIR`` and a free port for every one of its listeners (other Rays may run on the
machine). Its multi-node support is on, as on any real cluster.

``stop()`` ends only this head: SIGTERM to the ``ray start --block`` process (which stops
every process it started), then SIGKILL to whatever is left of its session, found by session
id. Never ``ray stop``: that kills every Ray process of the user on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# what a real cluster's environment does not hold (set for embedded runs, or by a test session)
NOT_FOR_A_REAL_CLUSTER = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
_PORTS = (
    "port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ray_cli() -> str | None:
    """The ``ray`` command of this interpreter's environment (needs ``ray[default]``)."""
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def session_pids(sid: int) -> list[int]:
    """Every living process whose session id is ``sid`` (field 6 of /proc/PID/stat)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state != "Z":  # a zombie is already dead (its parent has not reaped it)
            pids.append(int(p.name))
    return pids


def kill_session(sid: int, rounds: int = 5) -> None:
    """SIGKILL to every process of session ``sid`` until none is left (or ``rounds`` tries)."""
    for _ in range(rounds):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def _distinct_ports(n: int) -> list[int]:
    """``n`` free loopback ports, no two the same (the kernel may hand out a released port again)."""
    got: list[int] = []
    while len(got) < n:
        port = free_port()
        if port not in got:
            got.append(port)
    return got


def _worker_range(taken: set[int], width: int = 150) -> int:
    """The low end of a worker port range of our own (other Rays run on this machine) that holds
    none of the head's other ports (Ray refuses to start when they overlap)."""
    while True:
        low = min(free_port(), 65535 - width - 50)
        if not any(low <= p <= low + width for p in taken):
            return low


class HeadProcess:
    """``ray start --head --block`` at ``node_ip`` with ``num_cpus`` CPUs; up when constructed.

    ``address`` is the cluster's address (``node_ip:port``, for ``--address``); ``dashboard``
    the job server's URL (``http://127.0.0.1:PORT``) when ``dashboard`` is on. ``env`` is added
    to the head's environment (e.g. PATH, for a job's entrypoint). Raises RuntimeError with
    the head's log if it does not come up within ``timeout_s``.
    """

    def __init__(
        self,
        node_ip: str = "127.0.0.1",
        num_cpus: int = 2,
        dashboard: bool = False,
        env: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ):
        cli = ray_cli()
        if cli is None:
            raise RuntimeError("the `ray` CLI is not installed (needs ray[default])")
        self.tmp = Path(tempfile.mkdtemp(prefix="mrh-", dir="/tmp"))  # short: Ray's socket paths live under it
        *listen, dash = _distinct_ports(len(_PORTS) + 1)
        ports = dict(zip(_PORTS, listen, strict=True))
        low = _worker_range({*listen, dash})
        cmd = [
            cli,
            "start",
            "--head",
            "--block",
            f"--node-ip-address={node_ip}",
            f"--min-worker-port={low}",
            f"--max-worker-port={low + 150}",
            f"--num-cpus={num_cpus}",
            "--disable-usage-stats",
            *[f"--{k}={v}" for k, v in ports.items()],
        ]
        if dashboard:
            cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
        else:
            cmd += ["--include-dashboard=false"]
        full = {k: v for k, v in os.environ.items() if k not in NOT_FOR_A_REAL_CLUSTER}
        full.update(RAY_TMPDIR=str(self.tmp), **(env or {}))
        self.address = f"{node_ip}:{ports['port']}"
        self.dashboard = f"http://127.0.0.1:{dash}" if dashboard else None
        self.log = self.tmp / "head.log"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                cmd, env=full, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            self._wait(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout_s: float) -> None:
        """Up when ``ray start`` says so and, with a dashboard, the job server answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with {self.proc.returncode}:\n{self.tail()}")
            if "Ray runtime started" in self.log.read_text(errors="replace") and self._dashboard_answers():
                return
            time.sleep(0.25)
        raise RuntimeError(f"the Ray head did not come up within {timeout_s:.0f} s:\n{self.tail()}")

    def _dashboard_answers(self) -> bool:
        if self.dashboard is None:
            return True
        try:
            urllib.request.urlopen(self.dashboard + "/api/version", timeout=1).close()
        except urllib.error.HTTPError:
            return True  # 401 without a token is an answer
        except OSError:
            return False
        return True

    def client_env(self) -> dict[str, str]:
        """The environment of a client of this head (a run with ``--address``, the ``ray`` CLI):
        this process's, without what a real cluster's clients do not have, with token auth on
        (Ray 2.60's ``ray start --head`` turns it on; clients read ~/.ray/auth_token)."""
        drop = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", *NOT_FOR_A_REAL_CLUSTER)
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
        return env

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self, timeout_s: float = 30.0) -> None:
        """This head only (module docstring); its RAY_TMPDIR is removed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        kill_session(self.proc.pid)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> HeadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
