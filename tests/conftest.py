"""Session-wide fixtures: one local Ray runtime on 127.0.0.1, tiny offline models.

Ray is started once per test session (ray.init costs 4-6 s) with 4 logical CPUs on
this 2-core box so a Serve replica, a vLLM actor and 2 Ray Train workers can coexist.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray runtime shared by every test of the session (127.0.0.1 only)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            _node_ip_address="127.0.0.1",
            object_store_memory=1 << 30,
            include_dashboard=False,
            runtime_env={
                "env_vars": {
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                    "TOKENIZERS_PARALLELISM": "false",
                }
            },
        )
    yield ray
    # Left running for the session's other tests; pytest's exit shuts it down.


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny offline models built once per session: {"tokenizer", "policy"} paths."""
    from mmrlhf_ray.models import build_all

    out = tmp_path_factory.mktemp("tiny_models")
    return build_all(str(out), seed=0)


FAMILY_SPEC = dict(num_hidden_layers=2, num_key_value_heads=2, intermediate_size=256)


@pytest.fixture(scope="session")
def family_models(tmp_path_factory):
    """``family_models(name)`` -> {"tokenizer", "policy"}: a tiny instance of each family
    (text hidden 128 / 4 heads / 2 layers, vision hidden 64), built once per session."""
    from mmrlhf_ray.models import build_all
    from mmrlhf_ray.models.tiny import TinyPolicySpec

    built: dict[str, dict[str, str]] = {}

    def get(family: str) -> dict[str, str]:
        if family not in built:
            out = tmp_path_factory.mktemp(f"family_{family}")
            built[family] = build_all(
                str(out), seed=0, vocab_size=800, family=family, spec=TinyPolicySpec(**FAMILY_SPEC)
            )
        return built[family]

    return get


@pytest.fixture(autouse=True)
def _terminal_console_after_each_test():
    """A test that runs a stage in-process without --verbose turns the quiet console on
    for the whole process (mmrlhf_ray/core/console.py): turn it off again, so the next test
    sees its own streams and writes no stage logs."""
    yield
    from mmrlhf_ray.core import console

    console.disable()


# The scoring service's fixtures, shared by tests/service (no Ray) and tests/serve (Ray Serve).
@pytest.fixture(scope="session")
def reward_model_dir(tiny_models, tmp_path_factory) -> str:
    """An untrained critique reward model over the tiny Qwen2-VL policy (safetensors)."""
    from mmrlhf_ray.reward.model import build_tiny_reward_model

    out = tmp_path_factory.mktemp("serve_rm") / "model"
    return build_tiny_reward_model(tiny_models["policy"], out, seed=0)


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    """An allowed root holding one image, and a sibling dir outside it holding another."""
    base = tmp_path_factory.mktemp("media")
    (base / "root").mkdir()
    (base / "outside").mkdir()
    (base / "root" / "red.png").write_bytes(_png_bytes())
    (base / "outside" / "secret.png").write_bytes(_png_bytes((0, 0, 255)))
    (base / "root" / "link.png").symlink_to(base / "outside" / "secret.png")
    return base


def _png_bytes(rgb=(255, 0, 0)) -> bytes:
    from tests.serve.helpers import png_bytes

    return png_bytes(rgb)


@pytest.fixture
def rows() -> dict[str, dict]:
    """One hand-made shapes-world row per query kind over the same 3-object scene (fresh
    copies; tests/toyworld and tests/evaluation)."""
    import copy

    from tests.toyworld.helpers import ROWS

    return copy.deepcopy(ROWS)
