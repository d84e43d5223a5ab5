"""Generation for every family: vLLM (CPU) where vLLM takes the family's media, the
transformers backend otherwise (SmolVLM video), each in its own Ray actor; greedy tokens
of the two backends agree on the same prompt."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmrlhf_ray.data.prompts import chat_messages
from mmrlhf_ray.generation.config import ModelSpec
from mmrlhf_ray.generation.requests import GenRequest

# vLLM's CPU engine takes 30-100 s to start on this 2-core box: one family runs by
# default (LLaVA-OneVision, the paper's main policy), the others with -m slow.
FAMILY_PARAMS = [
    pytest.param("llava-onevision", marks=pytest.mark.vllm),
    pytest.param("qwen2.5-vl", marks=[pytest.mark.vllm, pytest.mark.slow]),
    pytest.param("internvl", marks=[pytest.mark.vllm, pytest.mark.slow]),
    pytest.param("smolvlm", marks=[pytest.mark.vllm, pytest.mark.slow]),
]


def _requests() -> list[GenRequest]:
    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")) for _ in range(4)]
    return [
        GenRequest("img", chat_messages("What colour is the circle?", 1), images=frames[:1]),
        GenRequest("vid", chat_messages("Where does it move?", 0, video=True), video=frames),
    ]


def _generate(ray, kind: str, path: str) -> list[list[int]]:
    from actors.generator import Generator

    spec = ModelSpec(
        name=kind,
        kind=kind,
        path=path,
        n=1,
        max_tokens=6,
        temperature=0.0,
        seed=0,
        enforce_eager=True,
        max_model_len=1024,
    )
    actor = ray.remote(num_cpus=1)(Generator).remote(spec)
    try:
        out = ray.get(actor.generate.remote(_requests(), greedy=True), timeout=600)
    finally:
        ray.kill(actor)
    return [samples[0].token_ids for samples in out]


@pytest.mark.ray
@pytest.mark.parametrize("name", FAMILY_PARAMS)
def test_vllm_generates_like_transformers_for_each_family(name, family_models, ray_session):
    path = family_models(name)["policy"]
    vllm_tokens = _generate(ray_session, "vllm", path)
    hf_tokens = _generate(ray_session, "transformers", path)
    assert all(len(t) == 6 for t in vllm_tokens)
    assert vllm_tokens == hf_tokens  # image and video prompts, identical greedy tokens
