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
    return run_python(["-m", "matcher", *args], env, timeout)


def run_python(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> Done:
    """`python ARGS` from the repository root, in a process group of its own, with ``env``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *args],
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


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``matcher ARGV`` in this process (matcher.cli.main): (exit code, stdout, stderr)."""
    import contextlib
    import io

    from matcher.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    """The one error line of ``err``: no traceback, no "internal error", nothing else."""
    assert "Traceback" not in err, err
    # the replay announces its folder once the inputs are read (sim.replay._announce); the error is the one other line
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("matcher: output folder ")]
    assert len(lines) == 1, err
    assert "internal error" not in lines[0], lines[0]
    return lines[0]
