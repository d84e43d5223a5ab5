"""A local runtime started by ``init_ray`` listens on 127.0.0.1 only, even when Ray was
imported before anything set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (a bare ``mmrlhf``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json
import psutil, ray
from harness.runtime import init_ray
init_ray(num_cpus=1)
ours = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
listening = []
for c in psutil.net_connections(kind="inet"):
    if c.status == psutil.CONN_LISTEN and c.pid in ours:
        listening.append(c.laddr.ip)
print(json.dumps({"node_ip": ray.util.get_node_ip_address(), "listening": listening}))
ray.shutdown()
"""


@pytest.mark.timeout(300)
def test_local_runtime_listens_on_loopback_only():
    # no RAY_ADDRESS either: the probe must start its own runtime, not join the suite's
    unset = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["node_ip"] == "127.0.0.1"
    assert probe["listening"], "the probe saw no listening socket of its runtime"
    loopback = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}  # v4, v4-mapped v6, v6
    assert set(probe["listening"]) <= loopback, probe["listening"]
