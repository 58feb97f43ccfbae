"""The real `ray job submit` path, and the cluster-launcher configs.

A head is started with `ray start --head --block` (dashboard on, so the job server runs) on
free ports, in its own RAY_TMPDIR and its own process group, and the replay is submitted
with `ray job submit --working-dir <repo> -- python -m jobs.replay ...` exactly as a user
would, with RAY_AUTH_MODE=token (Ray 2.60 starts `ray start --head` with token auth on; the
CLI reads the token from ~/.ray/auth_token).

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
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps GCS and raylet on 127.0.0.1: in Ray 2.60
  `--node-ip-address=127.0.0.1` alone is rewritten to the machine's routable IP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from matcher.analysis.audit import check_run

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY_CLI = shutil.which("ray", path=str(BIN)) or shutil.which("ray")

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    dashboard: str  # http://127.0.0.1:PORT (the job server)
    tmp: Path  # RAY_TMPDIR of the head
    log: Path

    def client_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        env.update(RAY_AUTH_MODE="token", RAY_ADDRESS=self.dashboard, RAY_USAGE_STATS_ENABLED="0")
        return env

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY_CLI, *args], env=self.client_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )


def _wait_for_dashboard(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Up when the job server answers (401 without a token is an answer) and `ray start` is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`ray start --head` exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url + "/api/version", timeout=1).close()
            answered = True
        except urllib.error.HTTPError:
            answered = True
        except OSError:
            answered = False
        if answered and "Ray runtime started" in log.read_text(errors="replace"):
            return
        time.sleep(0.25)
    pytest.fail(f"the Ray head did not come up within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def ray_head():
    if RAY_CLI is None:
        pytest.skip("the `ray` CLI is not installed (needs ray[default])")
    tmp = Path(tempfile.mkdtemp(prefix="mrj-", dir="/tmp"))  # short: Ray's socket paths live under it
    dash = _free_port()
    ports = {
        f"--{name}": _free_port()
        for name in (
            "port",
            "ray-client-server-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
            "node-manager-port",
            "object-manager-port",
        )
    }
    cmd = [
        RAY_CLI,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--disable-usage-stats",
        *[f"{k}={v}" for k, v in ports.items()],
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(RAY_TMPDIR=str(tmp), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    log = tmp / "head.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        head = Head(dashboard=f"http://127.0.0.1:{dash}", tmp=tmp, log=log)
        _wait_for_dashboard(head.dashboard, proc, log)
        yield head
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of this head's process group is left
        except ProcessLookupError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


def _uploaded_bytes(head: Head) -> int:
    root = head.tmp / "ray" / "session_latest" / "runtime_resources" / "working_dir_files"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.ray
def test_ray_job_submit_runs_the_replay(ray_head, small_trace, tmp_path):
    out = tmp_path / "job-run"
    sid = f"matcher-test-{os.getpid()}-{int(time.time())}"
    submit = ray_head.cli(
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
        str(out),
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
    logs = f"--- ray job submit (exit {submit.returncode}) ---\n{submit.stdout[-4000:]}\n{submit.stderr[-4000:]}"
    status = ray_head.cli("job", "status", sid, "--log-style", "record")
    assert f"Job '{sid}' succeeded" in status.stdout + status.stderr, f"{logs}\n--- status ---\n{status.stderr}"
    assert submit.returncode == 0, logs

    assert (out / "summary.json").exists()
    problems = check_run(out)
    assert problems == [], "\n".join(problems)
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "ray" and run["shards"] == 2
    assert json.loads((out / "summary.json").read_text())  # a real summary, not an empty file
    assert _uploaded_bytes(ray_head) < 5_000_000, "the working dir upload is not small: check UPLOAD_EXCLUDES"

    # the session's embedded Ray, if this process runs one, is untouched by the second head
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        assert ray.get(ray.remote(lambda: 1).options(num_cpus=0.1).remote(), timeout=60) == 1


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
