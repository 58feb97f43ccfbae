"""Every Ray call of the project lives here.

Each shard is a named Ray actor wrapping a :class:`~matcher.core.shard.ShardState`.
A tick is one ``tick.remote`` call per shard, gathered with a timeout; inputs
and outputs are dataclasses of numpy arrays (pickled out-of-band by Ray, no
per-ping or per-request objects).

Faults: actors are created with ``max_restarts``. If a shard's process dies
mid-tick, Ray restarts it (its constructor runs again, so its state is gone);
this backend waits for it to come back (bounded) and calls the tick again.
The fresh shard answers ``restarted`` and the coordinator rebuilds it from the
latest driver reports, so the run goes on with the same results.
"""
from __future__ import annotations

import os
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from matcher.config import MatchConfig, ShardConfig
from matcher.errors import MatcherError
from matcher.core.shard import BorderResult, BorderTask, ShardState, TickInput, TickOutput


@ray.remote
class ShardActor:
    def __init__(self, shard: int, cfg: MatchConfig):
        self.state = ShardState(shard, cfg)

    def tick(self, inp: TickInput) -> TickOutput:
        return self.state.tick(inp)

    def solve_border(self, task: BorderTask) -> BorderResult:
        return self.state.solve_border(task)

    def pid(self) -> int:
        return os.getpid()


def ensure_ray(address: str | None) -> bool:
    """Connect to ``address`` or start an embedded local Ray. Returns True if we started it.

    An embedded Ray stays on 127.0.0.1 when :func:`matcher.dist.backend.keep_embedded_ray_on_loopback`
    ran before ray was imported (``make_backend`` does that)."""
    if ray.is_initialized():
        return False
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(_node_ip_address="127.0.0.1", **kw)
    except Exception as e:  # noqa: BLE001 - one line for the user
        raise MatcherError(f"cannot start or reach Ray ({address or 'local'}): {e}") from e
    return True


class RayBackend:
    def __init__(self, shard: ShardConfig, match: MatchConfig, run_name: str):
        self.cfg = shard
        self.n_shards = shard.shards
        self._started = ensure_ray(shard.address)
        opts = dict(num_cpus=shard.num_cpus, max_restarts=shard.max_restarts, max_task_retries=0)
        # @ray.remote turns the class into an ActorClass (with .options), which ray's annotations do not say
        self.actors = [
            ShardActor.options(name=f"{run_name}-shard-{s}", **opts).remote(s, match)  # type: ignore[attr-defined]
            for s in range(shard.shards)
        ]
        self.call_ms: list[float] = []
        # wait until every shard is placed and constructed (on an autoscaling cluster this can
        # take minutes), so that start-up never counts against a tick's timeout
        try:
            ray.get([a.pid.remote() for a in self.actors], timeout=shard.startup_timeout_s)
        except GetTimeoutError:
            raise MatcherError(f"the {shard.shards} shard actors were not placed within {shard.startup_timeout_s:.0f} s "
                               f"(each asks for {shard.num_cpus} CPU; see --num-cpus)") from None

    def pids(self) -> list[int]:
        return ray.get([a.pid.remote() for a in self.actors], timeout=self.cfg.tick_timeout_s)

    def tick(self, inputs: list[TickInput]) -> list[TickOutput]:
        t0 = time.perf_counter()
        refs = [a.tick.remote(i) for a, i in zip(self.actors, inputs)]
        outs: list[TickOutput] = []
        for s, ref in enumerate(refs):
            outs.append(self._get(s, ref, inputs[s]))
        self.call_ms.append((time.perf_counter() - t0) * 1e3)
        return outs

    def solve_border(self, tasks: dict[int, BorderTask]) -> dict[int, BorderResult]:
        """Round 2: one call per shard with border work, in parallel (a task is a pure function: safe to retry)."""
        t0 = time.perf_counter()
        refs = {s: self.actors[s].solve_border.remote(t) for s, t in tasks.items()}
        out = {}
        for s, ref in refs.items():
            deadline = time.monotonic() + self.cfg.tick_timeout_s
            while True:
                try:
                    out[s] = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                    break
                except RayActorError:
                    if time.monotonic() > deadline:
                        raise MatcherError(f"shard {s} did not come back within {self.cfg.tick_timeout_s:.0f} s") from None
                    time.sleep(0.2)
                    ref = self.actors[s].solve_border.remote(tasks[s])
                except GetTimeoutError:
                    raise MatcherError(
                        f"shard {s} did not solve its border work within {self.cfg.tick_timeout_s:.0f} s"
                    ) from None
        if self.call_ms:  # round 2 counts toward the tick's Ray time
            self.call_ms[-1] += (time.perf_counter() - t0) * 1e3
        return out

    def _get(self, s: int, ref, inp: TickInput) -> TickOutput:
        deadline = time.monotonic() + self.cfg.tick_timeout_s
        while True:
            try:
                return ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except RayActorError:
                # the shard process died: Ray restarts it; call again once it is back
                if time.monotonic() > deadline:
                    raise MatcherError(f"shard {s} did not come back within {self.cfg.tick_timeout_s:.0f} s") from None
                time.sleep(0.2)
                ref = self.actors[s].tick.remote(inp)
            except GetTimeoutError:
                raise MatcherError(f"shard {s} did not answer tick {inp.tick} within {self.cfg.tick_timeout_s:.0f} s") from None

    def close(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._started:
            ray.shutdown()
