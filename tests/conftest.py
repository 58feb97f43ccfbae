"""Shared fixtures.

``ray_session``: the ONE embedded Ray of the test session (2 logical CPUs, no dashboard),
shared by every ``@pytest.mark.ray`` test that runs Ray in this process. Ray tests set
``num_cpus`` on every actor (fractional, e.g. 0.25) so that several backends fit at once.
Tests that need a Ray of their own (a ``ray.cluster_utils.Cluster``, a ``ray start --head``)
run it in a subprocess with its own RAY_TMPDIR and ports, never in this process.

Hypothesis profiles: ``ci`` (derandomized, so a run is reproducible; fewer examples; no
deadline, as a loaded runner must not fail a test for being slow) and ``dev`` (random, more
examples, no deadline). ``HYPOTHESIS_PROFILE`` picks one; else ``ci`` when ``CI`` is set (true/1),
``dev`` otherwise. Tests that set ``max_examples`` themselves keep their count in both.

``small_trace``: the first minutes of ``data/synth-small.parquet`` and its driver file,
written once per session to a temporary folder (absolute paths), for replays of a few
seconds each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from matcher.dist.backend import keep_embedded_ray_on_loopback

# explicit parents: hypothesis itself loads its own "ci" profile when it sees CI, and a profile
# registered without a parent would inherit whatever is loaded at that moment
settings.register_profile(
    "ci", parent=settings.get_profile("default"), derandomize=True, max_examples=50, deadline=None, print_blob=True
)
settings.register_profile("dev", parent=settings.get_profile("default"), max_examples=100, deadline=None)
_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _CI else "dev"))

# Before any test module imports ray: the session's Ray stays on 127.0.0.1.
keep_embedded_ray_on_loopback()

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TRACE = REPO / "data" / "synth-small.parquet"
SAMPLE_DRIVERS = REPO / "data" / "synth-small-drivers.parquet"
SMALL_TRACE_MINUTES = 10  # ~1,450 requests, ~450 batch ticks; about 3 s in process with 3 shards


@pytest.fixture(scope="session")
def ray_session():
    """The embedded Ray of the session: ray.init once, shutdown after the last test.

    ``address="local"`` always starts a fresh local instance: it never attaches to a
    ``ray start`` head found through RAY_ADDRESS or /tmp/ray/ray_current_cluster.
    """
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
    yield ray
    if started:
        ray.shutdown()


@dataclass(frozen=True)
class SmallTrace:
    trace: Path  # absolute
    drivers: Path  # absolute
    requests: int


@pytest.fixture(scope="session")
def small_trace(tmp_path_factory) -> SmallTrace:
    """The first SMALL_TRACE_MINUTES of the synthetic sample, with the sample's fleet."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("small-trace")
    table = pq.read_table(SAMPLE_TRACE)
    ms = table.column("request_time").cast(pa.int64())
    cut = pc.min(ms).as_py() + SMALL_TRACE_MINUTES * 60_000
    small = table.filter(pc.less(ms, cut))
    trace = folder / f"synth-small-{SMALL_TRACE_MINUTES}min.parquet"
    drivers = folder / "synth-small-drivers.parquet"
    pq.write_table(small, trace)
    pq.write_table(pq.read_table(SAMPLE_DRIVERS), drivers)
    return SmallTrace(trace=trace.resolve(), drivers=drivers.resolve(), requests=small.num_rows)
