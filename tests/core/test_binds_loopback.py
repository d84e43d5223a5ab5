"""No shipped config or launcher opens a port to the network: every bind address a
config, cluster file or launcher names is loopback; node addresses are private ones.

Ray's dashboard and Jobs API (8265) have no authentication: bound to 0.0.0.0 they let
anyone who reaches the head run code on the cluster, so both cluster configs bind them to
127.0.0.1 and the GUIDE reaches them through `ray dashboard <config>` (an SSH tunnel)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from mmrlhf_ray.annotate_app.config import AnnotateAppConfig
from mmrlhf_ray.service.config import ServeRewardConfig

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = [
    ROOT / "cluster.yaml",
    ROOT / "cluster.aws.yaml",
    ROOT / "Makefile",
    ROOT / ".ci/run",
    *sorted((ROOT / "configs").glob("*.yaml")),
    *sorted((ROOT / "jobs").glob("*.py")),
    *sorted((ROOT / "harness").glob("*.py")),
    *sorted((ROOT / "serve").glob("*.py")),
    *sorted((ROOT / "actors").glob("*.py")),
]
IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
# a bind setting: --dashboard-host=X, --node-ip-address X, host: X, host="X", _node_ip_address=
BIND = re.compile(
    r"(?:--[a-z-]*host|--node-ip-address|\bhost|_ip_address)[\"']?\s*[=: ]\s*[\"']?"
    r"([0-9a-fA-F:.]+|localhost)\b"
)


def _shipped() -> list[Path]:
    return [p for p in LAUNCHERS if p.is_file()]


def test_the_scan_covers_the_cluster_configs_and_launchers():
    names = {p.name for p in _shipped()}
    assert {"cluster.yaml", "cluster.aws.yaml", "serve-reward.gpu.yaml", "app.py"} <= names
    # the scanner sees what it must refuse
    assert BIND.search("ray start --head --dashboard-host=0.0.0.0").group(1) == "0.0.0.0"
    assert BIND.search('host: "0.0.0.0"').group(1) == "0.0.0.0"


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_bind_to_all_interfaces_or_a_public_address(path):
    text = path.read_text()
    assert "0.0.0.0" not in text, f"{path.name} names 0.0.0.0"
    for match in BIND.finditer(text):
        value = match.group(1)
        if value == "localhost" or not re.fullmatch(r"[\d.]+|[0-9a-fA-F:]*:[0-9a-fA-F:]*", value):
            continue  # a name or a variable, not an address literal
        address = ipaddress.ip_address(value)
        assert address.is_loopback, f"{path.name}: binds {value} ({match.group(0)!r})"
    for literal in IPV4.findall(text):
        address = ipaddress.ip_address(literal)
        assert address.is_loopback or (address.is_private and not address.is_unspecified), (
            f"{path.name}: {literal} is a public address"
        )


def test_the_dashboards_listen_on_the_heads_loopback():
    for name in ("cluster.yaml", "cluster.aws.yaml"):
        cfg = yaml.safe_load((ROOT / name).read_text())
        head = " ".join(cfg["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in head, name
        assert f"ray dashboard {name}" in (ROOT / name).read_text()  # how to reach it


def test_http_surfaces_default_to_loopback():
    assert ServeRewardConfig().host == "127.0.0.1"
    assert AnnotateAppConfig().host == "127.0.0.1"
