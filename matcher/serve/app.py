"""The service on Ray Serve: one ingress deployment (FastAPI under ``serve.ingress``) whose
replica holds the dispatcher, with the shards as Ray actors (the replay's ShardActor).

- ``matcher serve`` calls :func:`run_service`: it starts (or joins, with ``--address``) Ray,
  deploys the app with its HTTP server on ``--host:--port`` and waits; SIGTERM or
  Ctrl-C drains (the tick loop stops, the journal and every table are flushed,
  ``ticks.parquet``, ``cells.parquet``, ``run.json`` and ``summary.json`` are written)
  and stops.
- ``serve deploy serve-config.yaml`` deploys the same app on a running cluster through
  :func:`build_app` (``import_path: matcher.serve.app:build_app``, ``args``: any
  :class:`~matcher.config.ServeConfig` field). Serve calls the replica's ``__del__`` on
  a graceful shutdown (``serve shutdown``), which drains the same way.

Where HTTP is served. On the embedded Ray, Serve runs in its documented
throughput-optimized mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED``, see :func:`direct_ingress_env`):
the replica itself listens on ``--host:--port`` (Serve's "direct ingress"), so a request
is one hop, not a hop to Serve's proxy actor and a Ray call on to the replica (measured
on this 2-core machine: about 4.5 ms of proxy CPU per request saved). Joining a cluster
(``--address``) or ``serve deploy``, the cluster's own Serve settings decide, and by
default requests go through Serve's proxy on ``--port``.

One replica: the dispatcher is the single writer of ride state (what guarantees that a
driver is never dispatched twice); it batches every location update into the columnar
ping batch of the next tick itself. The shards scale out as actors (``--shards``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from dataclasses import fields, replace

from ray import serve

from matcher.config import VEHICLE_TYPES, MatchConfig, ServeConfig, ShardConfig
from matcher.errors import MatcherError, first_line
from matcher.serve.api import make_app
from matcher.serve.auth import Authenticator, load_secret

_log = logging.getLogger("matcher.serve")
APP_NAME = "matcher"

app = make_app()


def load_fleet(path: str | None) -> dict | None:
    """driver id -> (vehicle code, rating) from a driver file (docs/trace.md), or None."""
    if path is None:
        return None
    from matcher.io import trace

    table, _ = trace.read_drivers(path)
    vt = [VEHICLE_TYPES.index(v) for v in table.column("vehicle_type").to_pylist()]
    rating = table.column("rating").to_numpy(zero_copy_only=False)
    return {
        d: (v, float(r) if math.isfinite(r) else 5.0)
        for d, v, r in zip(table.column("driver_id").to_pylist(), vt, rating)
    }


@serve.deployment(
    name="MatcherIngress",
    num_replicas=1,
    max_ongoing_requests=100_000,  # long-polls hold a slot each
    ray_actor_options={"num_cpus": 0},
    graceful_shutdown_timeout_s=120,
    health_check_period_s=10,
    health_check_timeout_s=60,
)
@serve.ingress(app)
class MatcherIngress:
    def __init__(self, cfg: ServeConfig, match: MatchConfig):
        from matcher.dist.ray_backend import RayBackend
        from matcher.dist.runmode import RayTarget
        from matcher.serve.dispatcher import Dispatcher

        shard = ShardConfig(shards=cfg.shards, backend="ray", num_cpus=cfg.num_cpus)
        # The replica already runs inside the service's Ray (run_service started or joined it):
        # the backend uses that Ray and never connects anywhere else.
        if cfg.address is None:
            target = RayTarget("embedded", None, loopback=True)
        else:
            target = RayTarget("address", cfg.address, loopback=False)
        backend = RayBackend(shard, match, run_name=f"matcher-live-{os.getpid()}-{int(time.time())}", target=target)
        self.dispatcher = Dispatcher(cfg, backend, match, fleet=load_fleet(cfg.drivers))
        from matcher.serve import registry

        registry.LIVE.update(dispatcher=self.dispatcher, auth=Authenticator(load_secret(cfg.secret_file)))
        self.dispatcher.start()
        from matcher.serve.gcpolicy import rare_full_collections

        rare_full_collections()  # a full collection every 1-2 s paused every request ~0.3 s

    def drain(self) -> dict:
        """Stop ticking, flush, write the run's tables and summary; returns the summary."""
        return self.dispatcher.close()

    def ready(self) -> dict:
        return {"tick": self.dispatcher.k, "recovered_open_rides": self.dispatcher.recovered_rides}

    def __del__(self):
        d = getattr(self, "dispatcher", None)
        if d is not None and not d.closed:
            d.close()


def build_app(args: dict):
    """``serve deploy``'s entry: ``args`` are ServeConfig fields (out, shards, window_s, ...)."""
    known = {f.name for f in fields(ServeConfig)}
    unknown = set(args) - known
    if unknown:
        raise ValueError(f"unknown matcher option(s) {sorted(unknown)}; known: {sorted(known)}")
    cfg = ServeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    cfg = replace(cfg, out=os.path.abspath(cfg.out))
    return MatcherIngress.bind(cfg, MatchConfig())


def direct_ingress_env(port: int) -> dict[str, str]:
    """The environment of an embedded Ray whose ingress replica serves HTTP itself on ``port``.

    Serve reads these once, at import, in each of its processes (controller, replica), which
    inherit the environment of the embedded Ray: so they are set before ``ray.init`` starts it. ``port`` is the only
    port of the replicas' range, so the replica gets exactly ``--port``; one attempt (a port
    taken meanwhile fails the deployment at once, not after 100 retries); no draining period
    (no load balancer in front has to deregister the replica: :meth:`MatcherIngress.drain`
    has already flushed when Serve shuts down).
    """
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),
        "RAY_SERVE_DIRECT_INGRESS_PORT_RETRY_COUNT": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


def _check_port(host: str, port: int) -> None:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise MatcherError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None


def run_service(cfg: ServeConfig, match: MatchConfig, on_ready=print) -> dict:
    """``matcher serve``: run until SIGTERM/SIGINT, then drain. Returns the run's summary."""
    from matcher.dist.backend import keep_embedded_ray_on_loopback
    from matcher.dist.runmode import resolve_target

    # the replay's run modes (matcher.dist.runmode): --address, else RAY_ADDRESS (set inside a
    # Ray job), else a private embedded Ray that never joins another Ray on the machine
    target = resolve_target(cfg.address, os.environ)
    local = target.address is None
    proxy_port = cfg.port
    if local:
        _check_port(cfg.host, cfg.port)
        os.environ.update(direct_ingress_env(cfg.port))
        from matcher.dist.headprocess import free_port

        # Serve still starts its proxy on the head node: on a free loopback port of its own, unused
        proxy_port = free_port(cfg.host)
    if target.loopback:
        keep_embedded_ray_on_loopback()  # before ray is imported
    import ray

    load_secret(cfg.secret_file)  # fail here, with one line, not in the replica
    if cfg.drivers is not None:
        load_fleet(cfg.drivers)
    cfg = replace(cfg, out=os.path.abspath(cfg.out))
    kw: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if local:
        kw.update(_node_ip_address="127.0.0.1", num_cpus=max(2, math.ceil(cfg.shards * cfg.num_cpus) + 1))
    try:
        ray.init(address=target.address or "local", **kw)
    except Exception as e:
        raise MatcherError(f"cannot start or reach the {target.describe()}: {first_line(e)}") from e
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": cfg.host, "port": proxy_port})
        handle = serve.run(MatcherIngress.bind(cfg, match), name=APP_NAME, route_prefix="/", blocking=False)
        info = handle.ready.remote().result(timeout_s=600)
        on_ready(
            f"matcher: serving on http://{cfg.host}:{cfg.port} (out {cfg.out}, {cfg.shards} shard(s), "
            f"{info['recovered_open_rides']} open ride(s) recovered); SIGTERM or Ctrl-C drains and stops"
        )
        while not stop.wait(0.5):
            pass
        summary = handle.drain.remote().result(timeout_s=600)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return summary
