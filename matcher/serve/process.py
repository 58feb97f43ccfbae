"""A ``matcher serve`` in a child process of its own: its own session, its own RAY_TMPDIR, a
free port on 127.0.0.1 (the tests and the benchmark use this; so can scripts).

``stop()`` sends SIGTERM (the service drains) and waits; ``kill9()`` is a crash: SIGKILL to
every process of the child's session (the CLI, its embedded Ray, Serve's actors), found by
session id, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from matcher.dist.headprocess import free_port, kill_session


class ServiceProcess:
    def __init__(
        self,
        out: str | os.PathLike,
        secret_file: str | os.PathLike,
        *args: str,
        cwd=None,
        timeout_s=300.0,
        env: dict[str, str] | None = None,
    ):
        """``args``: more ``matcher serve`` options. ``env``: the child's whole environment (a
        RAY_TMPDIR of its own added if it has none); by default this process's, without
        RAY_ADDRESS, with a RAY_TMPDIR of its own."""
        self.out = Path(out)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
        if env is None:
            env = {**os.environ, "RAY_TMPDIR": self.tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
            env.pop("RAY_ADDRESS", None)
        else:
            env = {"RAY_TMPDIR": self.tmp, **env}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out.parent / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed by stop()/kill9()
        cmd = [sys.executable, "-m", "matcher", "serve", "--out", str(self.out), "--port", str(self.port),
               "--secret-file", str(secret_file), *args]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"matcher serve exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"matcher serve did not come up within {timeout_s:.0f} s: {self.tail()}")
            time.sleep(0.5)

    def tail(self, n: int = 3000) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()[-n:]

    def stop(self, timeout_s: float = 300.0) -> int:
        """SIGTERM: the service drains and exits; returns its exit code."""
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._kill_session()
            self.log.close()

    def kill9(self) -> None:
        """A crash: SIGKILL to every process of the service's session."""
        self._kill_session()
        self.proc.wait(timeout=60)
        self.log.close()

    def _kill_session(self) -> None:
        kill_session(self.proc.pid)
