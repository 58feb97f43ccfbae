"""The real `ray job submit` path on a head that behaves like a real cluster, an embedded run
next to that head, and the cluster-launcher configs.

A head is started with `ray start --head --block --node-ip-address=127.0.0.2` (dashboard on,
so the job server runs) on free ports for everything, in its own RAY_TMPDIR and its own
process group, with Ray's multi-node support on, as on any real cluster: 127.0.0.2 is
loopback, but Ray keeps it as given, so the head's address is not 127.0.0.1 (the case that
used to fail). The replay is submitted with `ray job submit --working-dir <repo> -- python -m
jobs.replay ...` exactly as a user would, with no --address (the job finds its cluster through
RAY_ADDRESS, which Ray sets), with RAY_AUTH_MODE=token (Ray 2.60 starts `ray start --head`
with token auth on; the CLI reads the token from ~/.ray/auth_token).

Teardown stops only this head: SIGTERM to the `ray start --block` process, which shuts down
every process it started, then SIGKILL to its process group if anything is left. Not
`ray stop --force`: that kills every Ray process of the user on this machine, by name,
including the session's embedded Ray (``ray_session``, still alive when this module runs after
test_ray_backend.py) and any other Ray run on the machine.

Environment of the head:
- PATH starts with this interpreter's bin folder: a job's entrypoint is a shell command, and
  its `python` is looked up on the PATH the head was started with (not the head's own
  interpreter). Started from a shell without the venv activated, `python` is the system one
  and the job fails with ModuleNotFoundError (measured).
- no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (conftest sets it for this process's embedded Ray;
  it is removed for the head and the job): a real cluster does not have it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from procs import run_matcher

from matcher.analysis.audit import check_run
from matcher.dist.headprocess import NOT_FOR_A_REAL_CLUSTER, HeadProcess, ray_cli
from matcher.serve.auth import issue
from matcher.serve.process import ServiceProcess

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY_CLI = ray_cli()

# what the job does not need: the job reads the trace and writes its output by absolute path
UPLOAD_EXCLUDES = [
    ".venv",
    ".git",
    "runs",
    "bench",
    ".hypothesis",
    ".pytest_cache",
    "__pycache__",
    "*.egg-info",
    "data/*.parquet",
]


HEAD_IP = "127.0.0.2"


@dataclass
class Head:
    proc: HeadProcess  # the `ray start --head --block` (matcher.dist.headprocess)

    @property
    def dashboard(self) -> str:  # http://127.0.0.1:PORT (the job server)
        assert self.proc.dashboard is not None
        return self.proc.dashboard

    @property
    def tmp(self) -> Path:  # RAY_TMPDIR of the head
        return self.proc.tmp

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**self.proc.client_env(), "RAY_ADDRESS": self.dashboard}
        return subprocess.run([RAY_CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def ray_head():
    if RAY_CLI is None:
        pytest.skip("the `ray` CLI is not installed (needs ray[default])")
    try:
        proc = HeadProcess(
            node_ip=HEAD_IP, num_cpus=2, dashboard=True, env={"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        )
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield Head(proc)
    finally:
        proc.stop()


def _uploaded_bytes(head: Head) -> int:
    root = head.tmp / "ray" / "session_latest" / "runtime_resources" / "working_dir_files"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _submit(head: Head, small_trace, out: str, sid: str) -> tuple[subprocess.CompletedProcess, str, str]:
    """`ray job submit` of jobs.replay with no --address; returns (submit, status text, logs text)."""
    submit = head.cli(
        "job",
        "submit",
        "--submission-id",
        sid,
        "--log-style",
        "record",
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        json.dumps({"excludes": UPLOAD_EXCLUDES}),
        "--",
        "python",
        "-m",
        "jobs.replay",
        str(small_trace.trace),
        "--out",
        out,
        "--drivers",
        str(small_trace.drivers),
        "--shards",
        "2",
        "--backend",
        "ray",
        "--num-cpus",
        "0.25",
        "--quiet",
        timeout=180,
    )
    status = head.cli("job", "status", sid, "--log-style", "record")
    logs = head.cli("job", "logs", sid)
    text = f"--- ray job submit (exit {submit.returncode}) ---\n{submit.stdout[-4000:]}\n{submit.stderr[-4000:]}"
    return submit, status.stdout + status.stderr, text + "\n--- job logs ---\n" + logs.stdout[-4000:]


@pytest.mark.ray
def test_ray_job_submit_runs_the_replay(ray_head, small_trace, tmp_path):
    out = tmp_path / "job-run"
    sid = f"matcher-test-{os.getpid()}-{int(time.time())}"
    submit, status, logs = _submit(ray_head, small_trace, str(out), sid)
    assert f"Job '{sid}' succeeded" in status, f"{logs}\n--- status ---\n{status}"
    assert submit.returncode == 0, logs
    assert f"matcher: output folder {out}" in logs  # the job log says where the output went

    assert (out / "summary.json").exists()
    problems = check_run(out)
    assert problems == [], "\n".join(problems)
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "ray" and run["shards"] == 2
    assert json.loads((out / "summary.json").read_text())  # a real summary, not an empty file
    assert _uploaded_bytes(ray_head) < 5_000_000, "the working dir upload is not small: check UPLOAD_EXCLUDES"
    # the shards ran on the job's cluster (the head at 127.0.0.2), not on an embedded Ray
    actors = _actor_names(ray_head)
    assert any(n.startswith("matcher-job-run-") and "-shard-" in n for n in actors), actors

    # the session's embedded Ray, if this process runs one, is untouched by the second head
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        assert ray.get(ray.remote(lambda: 1).options(num_cpus=0.1).remote(), timeout=60) == 1


@pytest.mark.ray
def test_a_relative_out_in_a_job_is_refused_with_one_line(ray_head, small_trace):
    sid = f"matcher-test-rel-{os.getpid()}-{int(time.time())}"
    submit, status, logs = _submit(ray_head, small_trace, "runs/relative", sid)
    assert submit.returncode != 0 and "failed" in status, logs
    assert "matcher: error: --out runs/relative is relative, and this is a Ray job" in logs, logs
    assert "Traceback" not in logs


def _actor_names(head: Head) -> list[str]:
    """Every actor the head has seen (alive or dead), by name, through Ray's state API."""
    got = head.cli("list", "actors", "--format", "json", "--limit", "10000", "--address", head.dashboard)
    assert got.returncode == 0, got.stderr[-2000:]
    if got.stdout.strip() == "No resource in the cluster":  # what it prints for none, not "[]"
        return []
    return [a.get("name") or "" for a in json.loads(got.stdout)]


@pytest.mark.ray
def test_an_embedded_run_never_joins_the_head_on_the_machine(ray_head, small_trace, tmp_path):
    """`matcher replay --shards 2` with a head up, findable the way a plain ray.init() finds one
    (its RAY_TMPDIR's ray_current_cluster): the shards run on a private Ray, none on the head."""
    out = tmp_path / "embedded-run"
    env = {k: v for k, v in os.environ.items() if k not in NOT_FOR_A_REAL_CLUSTER}
    env.update(RAY_TMPDIR=str(ray_head.tmp), RAY_USAGE_STATS_ENABLED="0")
    assert (ray_head.tmp / "ray" / "ray_current_cluster").exists()  # the head is findable
    args = [str(small_trace.trace), "--out", str(out), "--drivers", str(small_trace.drivers), "--shards", "2"]
    run = run_matcher(["replay", *args, "--num-cpus", "0.25", "--quiet"], env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    assert check_run(out) == []
    names = _actor_names(ray_head)
    assert not [n for n in names if n.startswith("matcher-embedded-run-")], names


# --- cluster launcher configs ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_configs_are_valid(name):
    """Both configs parse, match Ray's cluster-launcher schema, and survive the defaults merge `ray up` does."""
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((REPO / name).read_text())
    assert isinstance(cfg, dict) and cfg["cluster_name"]
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # private API moved: the schema check above still holds
        prepare_config = validate_config = None
    if prepare_config is not None:
        validate_config(prepare_config(cfg))

    mounts = cfg["file_mounts"]
    assert mounts.get("~/matcher") == "."  # the repository, installed from there on every node
    assert any("-e ~/matcher" in c for c in cfg["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert any("--head" in c for c in cfg["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    if cfg["provider"]["type"] == "local":
        assert "head_ip" in cfg["provider"] and "worker_ips" in cfg["provider"]
    else:
        assert cfg["provider"]["type"] == "aws"
        workers = [t for k, t in cfg["available_node_types"].items() if k != cfg["head_node_type"]]
        assert workers and all(t["max_workers"] > t.get("min_workers", 0) for t in workers)  # autoscaling


# --- the live service next to the head, and on it ---------------------------------------------
# (last in this module: the embedded service's Ray writes its own session into the head's RAY_TMPDIR)
SECRET = b"job-test-secret-0123456789abcdef0123456789"


def _ride_is_acknowledged(svc: ServiceProcess) -> None:
    import httpx

    body = {"pickup_lat": 40.75, "pickup_lng": -73.98, "destination_lat": 40.76, "destination_lng": -73.97,
            "ride_type": "uberx"}  # fmt: skip
    token = issue(SECRET, "rider", "r1")
    r = httpx.post(f"{svc.url}/v1/rides/request", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "searching", r.text


def _serve_actors(names: list[str]) -> list[str]:
    return [n for n in names if "SERVE" in n or n.startswith("matcher-live-")]


@pytest.mark.ray
@pytest.mark.slow
def test_serve_next_to_a_head_never_joins_it(ray_head, tmp_path):
    """`matcher serve` with no --address while a head is up and findable (its RAY_TMPDIR): the
    service, its Serve actors and its shard run on a private Ray, none on the head."""
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    env = {k: v for k, v in os.environ.items() if k not in NOT_FOR_A_REAL_CLUSTER}
    env.update(RAY_TMPDIR=str(ray_head.tmp), RAY_USAGE_STATS_ENABLED="0")
    assert (ray_head.tmp / "ray" / "ray_current_cluster").exists()  # the head is findable
    before = _serve_actors(_actor_names(ray_head))
    svc = ServiceProcess(tmp_path / "live", tmp_path / "secret", "--window", "1", cwd=REPO, timeout_s=240, env=env)
    try:
        _ride_is_acknowledged(svc)
        assert _serve_actors(_actor_names(ray_head)) == before
    finally:
        assert svc.stop() == 0, svc.tail()
    assert (tmp_path / "live" / "summary.json").exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_serve_on_a_cluster_runs_there(ray_head, tmp_path, how):
    """`matcher serve --address HEAD`, or RAY_ADDRESS=HEAD as inside a Ray job (a head at
    127.0.0.2, as any real cluster): the ingress replica and the shard actor run on that
    cluster, HTTP goes through its Serve proxy on --port, and SIGTERM drains the run and
    writes its summary."""
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    env, args = ray_head.proc.client_env(), ["--window", "1", "--num-cpus", "0.25"]
    if how == "--address":
        args += ["--address", ray_head.proc.address]
    else:
        env["RAY_ADDRESS"] = ray_head.proc.address
    svc = ServiceProcess(tmp_path / "live", tmp_path / "secret", *args, cwd=REPO, timeout_s=240, env=env)
    try:
        _ride_is_acknowledged(svc)
        names = _serve_actors(_actor_names(ray_head))
        assert any("MatcherIngress" in n for n in names), names
        assert any(n.startswith("matcher-live-") and "-shard-0" in n for n in names), names
    finally:
        assert svc.stop() == 0, svc.tail()
    summary = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert summary["requests"] == 1
