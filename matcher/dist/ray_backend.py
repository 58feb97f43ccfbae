"""Every Ray call of the project lives here.

Each shard is a named Ray actor wrapping a :class:`~matcher.core.shard.ShardState`.
A call's inputs and outputs are columnar batches of numpy arrays (no per-ping or
per-request objects), each sent as one ``bytes`` object (:mod:`matcher.dist.wire`).
Ray places, restarts and kills the actors; their tick and round-2 calls travel over a
direct channel to each (:mod:`matcher.dist.channel`: one TCP stream, opened with a token
the actor gives through Ray), because Ray's own path costs more than most ticks' work.
A shard the coordinator cannot reach that way (or ``direct_calls=False``) gets Ray calls.

The tick (protocol in :mod:`matcher.dist.backend`): the coordinator gives a shard that
need not answer no input at all (it holds what that shard was not sent, see
:mod:`matcher.dist.coordinator`), except in a run where a shard may refuse a report. There,
a shard whose input needs no answer is not called at all; its inputs wait in a queue in
this process and go out, several in one call, either with its next answered input or, once
``QUEUE_MAX`` of them (or ``QUEUE_MAX_PINGS`` pings) are held, in a call nobody waits for.
One stream (like Ray, for one caller and one actor) runs its calls in order, so an answered
call always finds every earlier input of its shard applied. Only the answered calls are gathered; so on a tick where requests sit on
one shard of four, one actor call is made and waited for, not four.

Every wait is bounded and ends in one line (:class:`~matcher.errors.MatcherError`):

- connecting: see :mod:`matcher.dist.runmode` (an address that does not answer fails
  within seconds, never a retry loop);
- placing the shards: shards x ``num_cpus`` is checked against the cluster's CPUs at once,
  with the arithmetic; shards that fit but stay pending (other work holds the CPUs) fail
  after ``placement_timeout_s``; an autoscaling cluster gets ``wait_for_nodes_s``;
- a tick: ``tick_timeout_s``, then the tick is given up (the replay counts it);
- a shard process that dies: Ray restarts the actor (``max_restarts``), this backend sends
  the input again, and the fresh shard answers ``restarted`` (the coordinator rebuilds it).
  A shard whose restarts are used up is dead for good: ``ShardLostError`` (once), and the
  coordinator moves its regions to the living shards. No later tick waits for it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from matcher.config import MatchConfig, ShardConfig
from matcher.core.shard import BorderResult, BorderTask, ShardState, TickInput, TickOutput
from matcher.dist.backend import Idle, ShardLostError
from matcher.dist.channel import Channel, ChannelClosed, ChannelError, ChannelServer, ChannelTimeout
from matcher.dist.runmode import RayTarget
from matcher.dist.wire import (
    InputBatch,
    OutputBatch,
    from_bytes,
    pack_inputs,
    pack_outputs,
    to_bytes,
    unpack_inputs,
    unpack_outputs,
)
from matcher.errors import MatcherError, first_line

QUEUE_MAX = 32  # unanswered inputs held per shard before they are sent without waiting
QUEUE_MAX_PINGS = 200_000  # ... or once they hold this many pings
HARVEST_AT = 8  # unanswered calls in flight before late() looks for finished ones
RUN, BORDER = 1, 2  # request kinds on a shard's direct channel


class _Shard:
    """One shard in an actor (``ShardActor``).

    Its tick and round-2 calls come over its direct channel (:mod:`matcher.dist.channel`,
    opened by :meth:`channel`) or as Ray calls (``run``, ``solve_border``); a lock keeps the
    two from ever touching the shard at once."""

    def __init__(self, shard: int, cfg: MatchConfig):
        self.state = ShardState(shard, cfg)
        self._lock = threading.Lock()
        self._server: ChannelServer | None = None
        self._streams = 0

    def run(self, blob: bytes) -> bytes:
        """Apply the inputs in order; one output per input (both columnar batches, as bytes:
        :mod:`matcher.dist.wire`)."""
        with self._lock:
            return self._run(blob)

    def _run(self, blob: bytes) -> bytes:
        outs = [self.state.tick(inp) for inp in unpack_inputs(from_bytes(blob, InputBatch))]
        return to_bytes(pack_outputs(self.state.shard, outs))

    def solve_border(self, blob: bytes) -> bytes:
        """Round 2: border components of one tick (a pure function of the task), as bytes."""
        with self._lock:
            return self._border(blob)

    def _border(self, blob: bytes) -> bytes:
        return to_bytes(self.state.solve_border(from_bytes(blob, BorderTask)))

    def channel(self) -> tuple[str, int, bytes]:
        """(host, port, token) of this shard's direct channel, opened on first use on the
        address Ray knows this node by (so the coordinator reaches it wherever it reaches Ray)."""
        if self._server is None:
            self._server = ChannelServer(
                self._handle,
                ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]  # untyped in ray
                self._lock,
                on_stream=self._new_stream,
            )
        host, port = self._server.address
        return host, port, self._server.token

    def _new_stream(self) -> None:
        # a second stream: the coordinator lost the first, maybe with inputs sent on it, so
        # this shard starts empty and answers `restarted` (the coordinator then rebuilds it)
        self._streams += 1
        if self._streams > 1:
            self.state = ShardState(self.state.shard, self.state.cfg)

    def _handle(self, kind: int, blob: bytes) -> bytes:
        return self._run(blob) if kind == RUN else self._border(blob)

    def pid(self) -> int:
        return os.getpid()


ShardActor: Any = ray.remote(_Shard)  # an ActorClass: mypy cannot see ray.remote's result type


def _send(inputs: Sequence[TickInput]) -> bytes:
    return to_bytes(pack_inputs(inputs))


def _received(blob: bytes) -> list[TickOutput]:
    return unpack_outputs(from_bytes(blob, OutputBatch))


def connect(target: RayTarget, quiet: bool = False) -> bool:
    """Connect to ``target`` (or use the Ray this process already runs). True if we started it.

    ``quiet``: Ray's own log lines below ERROR are silenced (``--quiet``)."""
    if ray.is_initialized():
        return False
    if quiet:  # --quiet: Ray's own banners and warnings stay out of the output (errors still show)
        logging.getLogger("ray").setLevel(logging.ERROR)
    kw: dict[str, Any] = dict(log_to_driver=False, configure_logging=False)
    try:
        if target.address is None:
            # private: address="local" never attaches to another Ray on the machine (nor to RAY_ADDRESS)
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **kw)
        else:
            ray.init(address=target.address, **kw)
    except Exception as e:  # noqa: BLE001 - one line for the user
        raise MatcherError(f"cannot start or reach the {target.describe()}: {first_line(e)}") from e
    return True


def stop_started(embedded: bool) -> None:
    """Stop the Ray this process started or connected to (``connect`` returned True);
    ``embedded``: it is the private Ray that ``connect`` started (no address).

    Ray's own shutdown asks its processes to stop one after the other and gives each up to 1 s.
    Its autoscaler monitor always uses that second: on SIGTERM it reports its "failure" to the
    GCS, which has just been stopped before it, and is killed when the second is up (measured:
    1.37 s for a shutdown, 1.0 s of it waiting for the monitor). A private embedded Ray has
    nothing to autoscale, so its monitor is killed first (0.36 s in all). Ray keeps that call
    private: if it is not there, the shutdown only takes its usual time.
    """
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    kill_monitor = getattr(getattr(worker, "_global_node", None), "kill_monitor", None)
    if embedded and callable(kill_monitor):
        try:
            kill_monitor(check_alive=False)
        except Exception:  # noqa: BLE001, S110 - a monitor already gone, or another Ray release
            pass
    ray.shutdown()


def check_fit(shards: int, num_cpus: float, nodes: list[dict[str, Any]], target: RayTarget) -> None:
    """Shards that can never be placed on these nodes fail now, with the arithmetic and the fix."""
    cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes if n.get("Alive")]
    total, biggest = sum(cpus), max(cpus, default=0.0)
    # each actor lives on one node: count how many fit node by node (floor per node)
    fit = sum(int(c // num_cpus + 1e-9) for c in cpus) if num_cpus > 0 else shards
    if fit >= shards:
        return
    need = shards * num_cpus
    if num_cpus > biggest:
        fix = f"--num-cpus {biggest:g} or less"
    else:
        fix = f"--shards {fit} or fewer, or --num-cpus {total / shards:.3g}"
    raise MatcherError(
        f"{shards} shards x {num_cpus:g} CPU (--num-cpus) = {need:g} CPU can never be placed on the "
        f"{target.describe()}: {total:g} CPU on {len(cpus)} node(s), at most {biggest:g} per node, room for "
        f"{fit} shard(s); use {fix} (or --wait-for-nodes S on an autoscaling cluster)"
    )


class _Died(Exception):
    """The shard's process died (or its channel broke) before it answered."""


class _Late(Exception):
    """No answer before the deadline."""


class _ShardCalls:
    """How the backend calls one shard actor: over the shard's direct channel
    (:mod:`matcher.dist.channel`) when it has one, else as Ray actor calls. Either way one
    caller's calls run in order on the shard. A call's handle is a Ray ObjectRef or a
    (channel, request number) pair; :meth:`get` turns both kinds of failure into
    ``_Died`` or ``_Late``."""

    def __init__(self, actor: Any, direct: bool, timeout: float) -> None:
        self.actor, self.direct, self.timeout = actor, direct, timeout
        self.chan: Channel | None = None

    def open(self) -> str | None:
        """(Re)open the channel to the actor's current process; None, or why not (its calls
        then go through Ray)."""
        if self.chan is not None:
            self.chan.close()
        self.chan = None
        if not self.direct:
            return None
        try:
            host, port, token = ray.get(self.actor.channel.remote(), timeout=self.timeout)
            self.chan = Channel(host, port, token, timeout=min(self.timeout, 5.0))
        except (ChannelError, RayError) as e:
            return first_line(e)
        return None

    def submit(self, kind: int, blob: bytes) -> Any:
        if self.chan is not None:
            return (self.chan, self.chan.send(kind, blob))
        return (self.actor.run if kind == RUN else self.actor.solve_border).remote(blob)

    def get(self, handle: Any, timeout: float) -> bytes:
        try:
            if isinstance(handle, tuple):
                chan, seq = handle
                return chan.recv(seq, timeout)  # type: ignore[no-any-return]  # bytes
            return ray.get(handle, timeout=timeout)  # type: ignore[no-any-return]  # bytes from run / solve_border
        except (RayActorError, ChannelClosed):
            raise _Died from None
        except (GetTimeoutError, ChannelTimeout):
            raise _Late from None

    def finished(self, handles: list[Any]) -> list[bool]:
        """Which calls have finished (``get`` will not wait for them)."""
        refs = [h for h in handles if not isinstance(h, tuple)]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) if refs else set()
        return [h[0].done(h[1]) if isinstance(h, tuple) else h in ready for h in handles]

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()


class RayBackend:
    def __init__(self, shard: ShardConfig, match: MatchConfig, run_name: str, target: RayTarget, quiet: bool = False):
        self.cfg = shard
        self.n_shards = shard.shards
        self.target = target
        self._started = connect(target, quiet=quiet)
        self.names = [f"{run_name}-shard-{s}" for s in range(shard.shards)]
        self.actors: list[Any] = []
        self._calls: list[_ShardCalls] = []
        self.quiet = quiet
        try:
            self._place(match)
        except BaseException:
            self.close()
            raise
        self.call_ms: list[float] = []  # wall time of each answered tick() (the gather included)
        self._queue: list[list[TickInput]] = [[] for _ in range(self.n_shards)]
        self._inflight: list[list[Any]] = [[] for _ in range(self.n_shards)]  # unanswered calls
        self._late: list[TickOutput] = []
        self.dead: set[int] = set()
        self.calls = 0  # every actor call: answered inputs, posted unanswered ones, round-2 tasks, retries
        self.posts = 0  # of those: calls of unanswered inputs nobody waits for (QUEUE_MAX reached, or drain)

    # ---------------------------------------------------------------- start-up
    def _place(self, match: MatchConfig) -> None:
        shard = self.cfg
        if shard.wait_for_nodes_s <= 0:
            check_fit(shard.shards, shard.num_cpus, ray.nodes(), self.target)  # type: ignore[no-untyped-call]  # untyped in ray
        opts: dict[str, Any] = dict(num_cpus=shard.num_cpus, max_restarts=shard.max_restarts, max_task_retries=0)
        self.actors = [ShardActor.options(name=n, **opts).remote(s, match) for s, n in enumerate(self.names)]
        # wait until every shard is placed and constructed, so that start-up never counts
        # against a tick's timeout
        wait = max(shard.placement_timeout_s, shard.wait_for_nodes_s)
        try:
            ray.get([a.pid.remote() for a in self.actors], timeout=wait)
        except GetTimeoutError:
            free = ray.available_resources().get("CPU", 0.0)  # type: ignore[no-untyped-call]  # untyped in ray
            total = ray.cluster_resources().get("CPU", 0.0)  # type: ignore[no-untyped-call]  # untyped in ray
            raise MatcherError(
                f"the {shard.shards} shard actors ({shard.num_cpus:g} CPU each) were not placed within {wait:.0f} s "
                f"on the {self.target.describe()}: {free:g} of {total:g} CPU free (other work holds the rest)"
            ) from None
        self._calls = [_ShardCalls(a, shard.direct_calls, shard.tick_timeout_s) for a in self.actors]
        for s in range(self.n_shards):
            self._open(s)

    def _open(self, s: int) -> None:
        """Open shard s's direct channel (again, after a restart); if it cannot be, say so once."""
        why = self._calls[s].open()
        if why is not None and not self.quiet:
            print(f"matcher: shard {s}: no direct channel ({why}); its calls go through Ray", file=sys.stderr)

    def pids(self) -> list[int]:
        """The shard processes' ids (waits, bounded, for a restarting actor to come back)."""
        deadline = time.monotonic() + self.cfg.tick_timeout_s
        pids: list[int] = []
        for a in self.actors:
            while True:
                try:
                    pids.append(ray.get(a.pid.remote(), timeout=max(0.1, deadline - time.monotonic())))
                    break
                except RayActorError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        return pids

    # ---------------------------------------------------------------- the tick
    def tick(
        self, inputs: Sequence[TickInput | None], answer: Sequence[bool], idle: Idle | None = None
    ) -> list[TickOutput | None]:
        t0 = time.perf_counter()
        asked: dict[int, Any] = {}
        for s, inp in enumerate(inputs):
            if s in self.dead or inp is None:
                continue
            q = self._queue[s]
            q.append(inp)
            if answer[s]:
                self._queue[s] = []
                asked[s] = self._calls[s].submit(RUN, _send(q))
                self.calls += 1
            elif len(q) >= QUEUE_MAX or sum(len(i.pings) for i in q) >= QUEUE_MAX_PINGS:
                self._post(s)
        outs: list[TickOutput | None] = [None] * self.n_shards
        if asked:
            self._meanwhile(asked, idle)
            deadline = time.monotonic() + self.cfg.tick_timeout_s
            for s, ref in asked.items():
                last = inputs[s]
                assert last is not None
                outs[s] = self._answer(s, ref, last, deadline)
            self.call_ms.append((time.perf_counter() - t0) * 1e3)
        return outs

    def _meanwhile(self, calls: dict[int, Any], idle: Idle | None) -> None:
        """Run the caller's other work (``idle``) until every call in ``calls`` has its reply
        or there is no work left. One piece at a time: the wait outlasts the replies by at most
        one piece of work."""
        if idle is None:
            return
        waiting = list(calls.items())
        while waiting and idle():
            waiting = [(s, h) for s, h in waiting if not self._calls[s].finished([h])[0]]

    def solve_border(self, tasks: dict[int, BorderTask], idle: Idle | None = None) -> dict[int, BorderResult]:
        """Round 2: one call per shard with border work, in parallel (a task is a pure function: safe to retry).

        Called only on ticks with border work, after `tick`, so it follows that tick's input on
        every shard (Ray keeps a caller's order). A shard that dies and comes back is asked again;
        one whose restarts are used up raises `ShardLostError` (the coordinator moves its regions).
        """
        t0 = time.perf_counter()
        refs = {s: self._calls[s].submit(BORDER, to_bytes(t)) for s, t in tasks.items()}
        self.calls += len(refs)
        self._meanwhile(refs, idle)
        out = {}
        deadline = time.monotonic() + self.cfg.tick_timeout_s
        for s, ref in refs.items():
            while True:
                try:
                    out[s] = from_bytes(self._calls[s].get(ref, max(0.1, deadline - time.monotonic())), BorderResult)
                    break
                except _Died:
                    self._back(s, deadline)
                    ref = self._calls[s].submit(BORDER, to_bytes(tasks[s]))
                    self.calls += 1
                except _Late:
                    raise MatcherError(
                        f"shard {s} did not solve its border work within {self.cfg.tick_timeout_s:.0f} s"
                    ) from None
        if self.call_ms:  # round 2 counts toward the tick's Ray time
            self.call_ms[-1] += (time.perf_counter() - t0) * 1e3
        return out

    def _post(self, s: int) -> None:
        batch, self._queue[s] = self._queue[s], []
        if batch:
            self._inflight[s].append(self._calls[s].submit(RUN, _send(batch)))
            self.calls += 1
            self.posts += 1

    def _answer(self, s: int, ref: Any, last: TickInput, deadline: float) -> TickOutput:
        while True:
            try:
                got = _received(self._calls[s].get(ref, max(0.1, deadline - time.monotonic())))
                break
            except _Died:
                # the shard process died: Ray restarts it (then it answers `restarted`), unless
                # its restarts are used up
                self._back(s, deadline)
                ref = self._calls[s].submit(RUN, _send([last]))
                self.calls += 1
            except _Late:
                raise MatcherError(
                    f"shard {s} did not answer tick {last.tick} within {self.cfg.tick_timeout_s:.0f} s"
                ) from None
        # the calls sent to this shard before this one have finished (Ray keeps their order)
        self._collect(s, self._inflight[s])
        self._inflight[s] = []
        self._late.extend(got[:-1])
        return got[-1]

    def _collect(self, s: int, refs: list[Any]) -> None:
        for ref in refs:
            try:
                self._late.extend(_received(self._calls[s].get(ref, self.cfg.tick_timeout_s)))
            except _Died:
                pass  # that process died; the shard says `restarted` on its next answered tick
            except _Late:
                raise MatcherError(
                    f"shard {s} did not apply its inputs within {self.cfg.tick_timeout_s:.0f} s"
                ) from None

    def _back(self, s: int, deadline: float) -> None:
        """After shard s's process died: wait for Ray's restart and reopen its channel, or lose it."""
        if not self._alive(s, deadline):
            self._lose(s)
            raise ShardLostError(s, f"its actor died more than {self.cfg.max_restarts} times") from None
        self._open(s)

    def _alive(self, s: int, deadline: float) -> bool:
        """After a death: True once the restarted actor answers, False if it is dead for good."""
        while time.monotonic() < deadline:
            if self._state(s) == "DEAD":
                return False  # Ray gave up on the actor: its restarts are used up
            try:
                ray.get(self.actors[s].pid.remote(), timeout=max(0.1, min(2.0, deadline - time.monotonic())))
                return True
            except RayActorError:
                time.sleep(0.2)
            except GetTimeoutError:
                pass  # still restarting
        raise MatcherError(f"shard {s} did not come back within {self.cfg.tick_timeout_s:.0f} s of its death")

    def _state(self, s: int) -> str:
        """The actor's state in the GCS (ALIVE, RESTARTING, DEAD, ...); "" if it cannot be read."""
        try:
            info = ray._private.state.actors(self.actors[s]._actor_id.hex())  # no public API without a dashboard
        except Exception:  # noqa: BLE001 - private API: fall back to waiting (bounded)
            return ""
        return str(info.get("State", "")) if isinstance(info, dict) else ""

    def _lose(self, s: int) -> None:
        self.dead.add(s)
        self._queue[s] = []
        self._inflight[s] = []

    # ---------------------------------------------------------------- late outputs
    def late(self) -> list[TickOutput]:
        if sum(len(refs) for refs in self._inflight) >= HARVEST_AT:
            for s in range(self.n_shards):
                done = self._calls[s].finished(self._inflight[s]) if self._inflight[s] else []
                first = [r for r, d in zip(self._inflight[s], done, strict=True) if d]
                self._inflight[s] = [r for r, d in zip(self._inflight[s], done, strict=True) if not d]
                self._collect(s, first)
        got, self._late = self._late, []
        return got

    def drain(self) -> list[TickOutput]:
        for s in range(self.n_shards):
            if s not in self.dead:
                self._post(s)
        for s in range(self.n_shards):
            self._collect(s, self._inflight[s])
            self._inflight[s] = []
        got, self._late = self._late, []
        return got

    def close(self) -> None:
        for c in self._calls:
            c.close()
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass
        if self._started:
            stop_started(self.target.address is None)


def run_tasks(
    fn: Callable[..., Any],
    jobs: list[tuple[Any, ...]],
    labels: list[str],
    num_cpus: float,
    target: RayTarget,
    max_retries: int = 3,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*jobs[i])`` for every job as a Ray task asking for ``num_cpus`` CPUs each and
    yield ``(i, result)`` as each task finishes (in completion order).

    Tasks are submitted in list order, so Ray starts them in that order as CPUs free up
    (give the biggest first). A task whose worker dies is run again (``max_retries``), so
    ``fn`` must be safe to re-run (a split replay's area task resumes from its checkpoint).
    A task that raises stops the others and raises one ``MatcherError`` naming its label.
    On an embedded Ray (no ``address``), a task that could never be placed fails at once.
    """
    started = connect(target)
    refs: list[Any] = []
    finished: set[int] = set()
    try:
        if target.address is None:
            cpus = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]  # ray is untyped
            if num_cpus > cpus:
                raise MatcherError(f"each area task asks for {num_cpus} CPU but this machine's Ray has {cpus:g}")
        remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(fn)
        refs = [remote.remote(*job) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    raise MatcherError(f"{labels[i]}: {type(cause).__name__}: {cause}") from None
                except ray.exceptions.RayError as e:
                    raise MatcherError(f"{labels[i]}: the task was lost ({type(e).__name__})") from None
                finished.add(i)
                yield i, result
    finally:
        for i, ref in enumerate(refs):
            if i not in finished:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
        if started:
            stop_started(target.address is None)
