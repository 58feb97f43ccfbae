"""The helpers of matcher.dist.headprocess that need no Ray (the head itself is started by
tests/test_ray_job.py's fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from hypothesis import given
from hypothesis import strategies as st

from matcher.dist import headprocess
from matcher.dist.headprocess import _distinct_ports, _worker_range, kill_session, session_pids


@given(st.sets(st.integers(1024, 65535), max_size=10))
def test_the_worker_port_range_holds_none_of_the_heads_other_ports(taken):
    low = _worker_range(taken)
    assert low >= 1024 and low + 150 <= 65535
    assert not [p for p in taken if low <= p <= low + 150]


def test_a_crowded_range_is_drawn_again(monkeypatch):
    draws = iter([40_000, 40_100, 50_000])
    monkeypatch.setattr(headprocess, "free_port", lambda host="127.0.0.1": next(draws))
    assert _worker_range({40_050, 40_200}) == 50_000  # 40,000 and 40,100 would both hold a taken port


def test_ports_are_distinct_even_when_the_kernel_repeats_one(monkeypatch):
    draws = iter([5_000, 5_000, 5_001, 5_000, 5_002])
    monkeypatch.setattr(headprocess, "free_port", lambda host="127.0.0.1": next(draws))
    assert _distinct_ports(3) == [5_000, 5_001, 5_002]


def test_kill_session_ends_every_process_of_that_session_only():
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
    deadline = time.monotonic() + 20
    while len(session_pids(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(session_pids(proc.pid)) == 2  # the child and its grandchild
    kill_session(proc.pid)
    proc.wait(timeout=10)
    assert session_pids(proc.pid) == []
    assert session_pids(os.getsid(0))  # this test's own session is untouched
