"""The pacer that wakes long polls a few per loop turn (matcher.serve.pacing)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from matcher.serve.pacing import Pacer, pacer


def test_work_already_waiting_runs_between_two_handfuls():
    seen: list[object] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        p = Pacer(loop, per_turn=8)
        for i in range(20):
            p.put(seen.append, i)
        loop.call_soon(seen.append, "other")  # queued after the first turn, before the second
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert seen == [*range(8), "other", *range(8, 20)]


def test_every_call_is_made_once_in_order_from_many_threads():
    got: dict[int, list[int]] = {t: [] for t in range(4)}

    async def run() -> None:
        loop = asyncio.get_running_loop()
        p = pacer(loop)
        assert pacer(loop) is p  # one per loop

        def producer(t: int) -> None:
            for i in range(500):
                p.put(got[t].append, i)

        threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        await asyncio.to_thread(lambda: [th.join() for th in threads])
        for _ in range(200):
            if all(len(v) == 500 for v in got.values()):
                break
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert all(v == list(range(500)) for v in got.values())


def test_a_call_that_raises_does_not_stop_the_others(caplog: pytest.LogCaptureFixture):
    seen: list[int] = []

    def boom(_: object) -> None:
        raise ValueError("boom")

    async def run() -> None:
        p = Pacer(asyncio.get_running_loop(), per_turn=2)
        p.put(seen.append, 1)
        p.put(boom, None)
        p.put(seen.append, 2)
        p.put(seen.append, 3)
        await asyncio.sleep(0.05)

    asyncio.run(run())
    assert seen == [1, 2, 3]
    assert "boom" in caplog.text  # the loop's exception handler reported it


def test_a_pacer_whose_loop_is_gone_drops_its_calls_quietly():
    loop = asyncio.new_event_loop()
    p = Pacer(loop)
    loop.close()
    p.put(print, "never")  # no error: whoever waited went with the loop
