"""Run a command line in a process group of its own, killed whole when it ends or times out
(so an embedded Ray it starts never outlives a test). Never `ray stop`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_matcher(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> Done:
    """`python -m matcher ARGS` from the repository root, with ``env`` (default: ours)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "matcher", *args],
        env=dict(os.environ) if env is None else env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n[killed after {timeout:.0f} s]"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of its group still alive
        except ProcessLookupError:
            pass
    return Done(proc.returncode, out, err, time.monotonic() - t0)
