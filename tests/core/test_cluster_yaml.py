"""cluster.yaml is a well-formed Ray cluster-launcher config whose commands name real entry points."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_yaml_structure_and_entry_points():
    text = (ROOT / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    for key in (
        "cluster_name",
        "provider",
        "available_node_types",
        "head_node_type",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        assert key in cfg, key
    nodes = cfg["available_node_types"]
    assert cfg["head_node_type"] in nodes
    gpu_nodes = [n for n in nodes.values() if n["resources"].get("GPU", 0) > 0]
    assert gpu_nodes and all(n["max_workers"] >= n["min_workers"] for n in nodes.values())
    assert any(".[gpu]" in c for c in cfg["setup_commands"])  # installs this project, GPU extra
    for script in re.findall(r"jobs/[a-z_]+\.py", text):
        assert (ROOT / script).exists(), script
    for config in re.findall(r"configs/[a-z.-]+\.yaml", text):
        assert (ROOT / config).exists(), config
