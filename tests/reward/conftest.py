"""Fixtures of the reward-model tests: toy pairs and an untrained tiny reward model."""

from __future__ import annotations

import pytest

SHORT_PROMPT = (
    "Evaluate the answer.\n[Question]: {question}\n[LMM Response]: {response}\n[Evaluation]:"
)


@pytest.fixture(scope="session")
def toy_rows():
    """30 pair rows (10 queries x 3 graded responses) from the shapes world."""
    from mmrlhf_ray.reward.toy import toy_pairs

    return toy_pairs(10, seed=0)


@pytest.fixture(scope="session")
def fresh_reward_model(tiny_models):
    """A fresh reward model over the tiny policy (short prompt, fixed seed)."""
    from mmrlhf_ray.reward.model import new_reward_model

    return new_reward_model(
        tiny_models["policy"], seed=0, prompt_template=SHORT_PROMPT, max_length=256
    )


@pytest.fixture(scope="session")
def short_prompt():
    return SHORT_PROMPT


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread per test here (restored after): on the shared 2-core host,
    two spinning OpenMP threads per process run 5-10x slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
