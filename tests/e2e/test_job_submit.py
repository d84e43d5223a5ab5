"""`ray job submit --working-dir . -- python jobs/<stage>.py` against a real local head.

The test starts its own head on 127.0.0.1 (`ray start --head --block`), submits a stage,
checks the stage's output, and stops the head by the PID it started (never `ray stop`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_head(tmp_path):
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
    )  # Ray 2.60 local heads require token auth for jobs
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    temp_dir = Path("/tmp") / f"mmrlhf-head-{os.getpid()}-{gcs}"
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed at teardown
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--num-cpus=2",
            "--object-store-memory=400000000",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            # Its own agent ports: the session's Ray runtime already holds the defaults.
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline, probe = time.time() + 240, None
    while time.time() < deadline:
        probe = subprocess.run(
            [str(BIN / "ray"), "job", "list", "--address", address],
            env=env,
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            break
        if head.poll() is not None:
            pytest.fail(f"ray head exited: {(tmp_path / 'head.log').read_text()[-2000:]}")
        time.sleep(2)
    else:
        head.terminate()
        pytest.fail(f"ray head did not answer in 240 s: {probe and probe.stderr[-2000:]}")
    yield address, env
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
    log.close()


@pytest.mark.ray
def test_stage_runs_under_ray_job_submit(local_head, tmp_path):
    address, env = local_head
    run_dir = tmp_path / "run"
    for _attempt in range(6):  # the job agent can lag the dashboard by a few seconds
        out = _submit(address, env, run_dir)
        if "No available agent" not in out.stderr + out.stdout:
            break
        time.sleep(5)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout
    from mmrlhf_ray.core.stage import StageDir

    stage = StageDir(str(run_dir), "toyworld")
    assert stage.is_done()
    assert stage.read_manifest()["counts"]["out"] == stage.count_rows() >= 40


def _submit(address: str, env: dict, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(ROOT),
            "--",
            "python",
            "jobs/toyworld.py",
            f"run_dir={run_dir}",
            "pool_size=40",
            "benchmark_size=10",
            "rows_per_shard=20",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
