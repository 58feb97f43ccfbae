"""Which Ray a run uses, decided in one place (no ray import here: this runs before it).

Three modes, in this order:

1. ``--address ADDR`` (``ShardConfig.address``): connect to that cluster.
2. ``RAY_ADDRESS`` in the environment: connect to that cluster. Ray sets it for the
   entrypoint of every ``ray job submit`` job (to the job's cluster), so a job needs no flag.
3. Neither: a private embedded Ray (``ray.init(address="local")``) on 127.0.0.1, started for
   this run and stopped at its end. It never joins another Ray running on the machine.

Guarantees:

- A cluster's address is never rewritten. Ray itself rewrites ``127.0.0.1``/``localhost`` to
  the machine's routable address (it assumes the head listens there); ``resolve_target``
  checks where the head really listens and, for a head bound to loopback only, keeps
  everything on 127.0.0.1 (``loopback``), which must be set before ray is imported.
- An address where nothing answers fails at once (a refused TCP connect), and one that
  does not answer within ``PROBE_TIMEOUT_S`` fails then: one line, never a retry loop.
- An ``http://`` address is a job server (for ``ray job submit``), not a cluster: refused
  with one line that says which address to use instead.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from matcher.errors import MatcherError

PROBE_TIMEOUT_S = 5.0
_LOCALHOST = ("127.0.0.1", "localhost", "::1")
# set by Ray's job supervisor in the environment of a job's entrypoint
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


@dataclass(frozen=True)
class RayTarget:
    mode: str  # "address" (--address), "env" (RAY_ADDRESS), "embedded"
    address: str | None  # what ray.init gets (None: embedded)
    loopback: bool  # keep every Ray socket on 127.0.0.1 (multi-node support off)

    def describe(self) -> str:
        if self.mode == "embedded":
            return "embedded local Ray on 127.0.0.1"
        src = "--address" if self.mode == "address" else "RAY_ADDRESS"
        return f"Ray cluster at {self.address} ({src})"


def in_ray_job(environ: Mapping[str, str]) -> bool:
    """True inside the entrypoint of a ``ray job submit`` job."""
    return JOB_ENV_VAR in environ


def resolve_target(address: str | None, environ: Mapping[str, str]) -> RayTarget:
    """The Ray a run uses (module docstring); raises MatcherError (one line) if it cannot be reached."""
    given = (address or "").strip()
    mode = "address"
    if not given:
        given = environ.get("RAY_ADDRESS", "").strip()
        mode = "env"
    if not given or given == "local":
        return RayTarget("embedded", None, loopback=True)
    src = "--address" if mode == "address" else "RAY_ADDRESS"
    if given.startswith(("http://", "https://")):
        raise MatcherError(
            f"{src}={given} is a job server address (for `ray job submit`), not a cluster: "
            f"give the cluster's HOST:PORT (`ray start --head` prints it), or unset RAY_ADDRESS for an embedded Ray"
        )
    if given == "auto":
        found = _current_cluster(environ)
        if found is None:
            raise MatcherError(f"{src}=auto: no Ray cluster started by `ray start` was found on this machine")
        host, port = _split(found, src)
        return RayTarget(mode, given, loopback=_loopback_head(host, port, src, given))
    host, port = _split(given.removeprefix("ray://"), src)
    if given.startswith("ray://"):  # Ray Client: the cluster is elsewhere, just check it answers
        _probe(host, port, src, given)
        return RayTarget(mode, given, loopback=False)
    return RayTarget(mode, given, loopback=_loopback_head(host, port, src, given))


def _split(addr: str, src: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise MatcherError(f"{src}={addr}: not a Ray address (HOST:PORT, auto, or ray://HOST:PORT)")
    return host.strip("[]"), int(port)


def _current_cluster(environ: Mapping[str, str]) -> str | None:
    """The address `ray start` wrote for ``auto`` (Ray's own lookup, without importing ray)."""
    tmp = environ.get("RAY_TMPDIR") or "/tmp"
    path = Path(tmp) / "ray" / "ray_current_cluster"
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text.splitlines()[0].strip() if text else None


def _answers(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connect to host:port succeeds, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except OSError as e:
        return e.strerror or type(e).__name__


def _probe(host: str, port: int, src: str, given: str) -> None:
    why = _answers(host, port, PROBE_TIMEOUT_S)
    if why is not None:
        raise MatcherError(
            f"cannot reach the Ray cluster at {given} ({src}): {host}:{port}: {why}; "
            f"is a head running there (`ray start --head` prints its address)?"
        )


def routable_ip() -> str | None:
    """The address Ray would use for this machine (a UDP connect sends no packet)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("8.8.8.8", 80))
            ip: str = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def _loopback_head(host: str, port: int, src: str, given: str) -> bool:
    """Probe the head; True if it listens on 127.0.0.1 only (so Ray must not rewrite 127.0.0.1)."""
    if host not in _LOCALHOST:
        _probe(host, port, src, given)
        return False
    ip = routable_ip()
    if ip is not None and _answers(ip, port, PROBE_TIMEOUT_S) is None:
        return False  # a head on the machine's address: Ray's rewrite of 127.0.0.1 is right
    _probe("127.0.0.1", port, src, given)
    return True

