"""The world model reproduces the runs it was pinned at, event for event (tests/world_golden.py).

Refactors of the world (the handler table, the named random streams, the ETA model by config, the
geometry, the empty-time jumps) and the default scenario (``--world full``) must not move a single
event: the digests of the event logs and of the location history are compared exactly. The runs are
made in a child process whose numpy leaves out its AVX-512 paths (tests/world_golden.py says why),
so the same digests hold on machines with and without AVX-512.
"""

from __future__ import annotations

import json

import pytest
import world_golden as wg


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    return wg.make_traces(tmp_path_factory.mktemp("golden-traces"))


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[] if n == "nyc-batch-default" else [pytest.mark.slow]) for n in wg.CASES]
)
def test_world_reproduces_the_pinned_runs(name, traces, tmp_path):
    want = json.loads(wg.GOLDEN.read_text())[name]
    assert wg.run_case_portable(name, traces, tmp_path / name) == want
