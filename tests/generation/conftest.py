"""Fixtures of the generation tests: tiny models (helpers: ``tests/generation/helpers.py``)."""

from __future__ import annotations

import pytest

from tests.generation.helpers import build_text_model


@pytest.fixture(scope="session")
def vl_model(tiny_models) -> str:
    """The project's tiny Qwen2-VL policy (``mmrlhf_ray.models.build_all``)."""
    return tiny_models["policy"]


@pytest.fixture(scope="session")
def text_model(tiny_models, tmp_path_factory) -> str:
    """A tiny Qwen2ForCausalLM (hidden 128, 4 heads) with the project's tokenizer."""
    return build_text_model(tmp_path_factory.mktemp("gen_text"), tiny_models["tokenizer"], seed=0)
