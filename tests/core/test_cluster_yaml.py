"""cluster.yaml (the paper's 4 x 8 H800 on-premise nodes) and cluster.aws.yaml (the cloud
equivalent) are Ray cluster-launcher configs Ray's own schema accepts, whose commands name
real entry points."""

import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
TRAIN_DPO_WORKERS = yaml.safe_load((ROOT / "configs/train-dpo.gpu.yaml").read_text())["train"][
    "num_workers"
]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.aws.yaml"])
def test_cluster_yaml_structure_and_entry_points(name):
    text = (ROOT / name).read_text()
    cfg = yaml.safe_load(text)
    validate_config(prepare_config(cfg))  # Ray's cluster-launcher schema
    for key in ("cluster_name", "provider", "setup_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert any(".[gpu]" in c for c in cfg["setup_commands"])  # installs this project, GPU extra
    for script in re.findall(r"jobs/[a-z_]+\.py", text):
        assert (ROOT / script).exists(), script
    for config in re.findall(r"configs/[a-z.-]+\.yaml", text):
        assert (ROOT / config).exists(), config


def test_cluster_yaml_is_the_papers_32_h800():
    """App. G: 32 x H800 (80G); train-dpo.gpu.yaml's Ray Train workers fill them."""
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cfg["provider"]["type"] == "local"
    workers = cfg["provider"]["worker_ips"]
    assert len(workers) == cfg["min_workers"] == cfg["max_workers"] == 4
    start = " ".join(cfg["worker_start_ray_commands"])
    assert "--num-gpus=8" in start and '"H800": 8' in start
    assert "--num-gpus=0" in " ".join(cfg["head_start_ray_commands"])
    assert len(workers) * 8 == TRAIN_DPO_WORKERS == 32


def test_cluster_aws_yaml_has_as_many_gpus_as_the_paper():
    cfg = yaml.safe_load((ROOT / "cluster.aws.yaml").read_text())
    nodes = cfg["available_node_types"]
    assert cfg["head_node_type"] in nodes
    assert all(n["max_workers"] >= n["min_workers"] for n in nodes.values())
    gpus = sum(n["resources"].get("GPU", 0) * n["min_workers"] for n in nodes.values())
    assert gpus == TRAIN_DPO_WORKERS == 32
