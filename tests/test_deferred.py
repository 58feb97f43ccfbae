"""The deferred work of the replay (matcher.sim.deferred): order, bound, errors, drain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher.sim.deferred import Deferred


@st.composite
def schedules(draw):
    """A limit and a sequence of steps: add a job, or give the queue a wait of n pieces."""
    limit = draw(st.integers(0, 5))
    steps = draw(st.lists(st.one_of(st.just("add"), st.integers(0, 4)), max_size=40))
    return limit, steps


@given(schedules())
def test_jobs_run_once_in_order_within_the_bound(schedule):
    limit, steps = schedule
    done: list[int] = []
    d = Deferred(limit)
    added = 0
    for step in steps:
        if step == "add":
            d.add(lambda i=added: done.append(i))
            added += 1
        else:
            for _ in range(step):
                if not d.run_one():
                    break
        assert len(d) <= limit  # never more than `limit` held
        assert done == list(range(len(done)))  # in order, each once
        assert len(done) + len(d) == added
    d.drain()
    assert done == list(range(added)) and len(d) == 0


def test_a_job_that_fails_in_a_wait_is_raised_by_check_and_stops_the_rest():
    done: list[str] = []
    d = Deferred(8)

    def bad() -> None:
        raise ValueError("cells broke")

    d.add(bad)
    d.add(lambda: done.append("after"))
    assert d.run_one() is False  # the failure is kept, not raised inside the backend's wait
    assert d.run_one() is False  # and no later job runs
    with pytest.raises(ValueError, match="cells broke"):
        d.check()
    d.check()  # raised once
    d.drain()
    assert done == ["after"]


def test_run_one_reports_an_empty_queue():
    d = Deferred()
    assert d.run_one() is False
    d.add(lambda: None)
    assert d.run_one() is True and d.in_waits == 1
