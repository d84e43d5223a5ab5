"""Critiques from vLLM for the reward service (critique_backend=vllm): the same prompt as
the reward model's own critique head, the same greedy first token, scored the same way."""

from __future__ import annotations

import pytest
from PIL import Image

from mmrlhf_ray.service.config import ServeRewardConfig
from mmrlhf_ray.service.server import RewardScorer, ScoringInput


def _items() -> list[ScoringInput]:
    red, blue = Image.new("RGB", (40, 40), (220, 20, 20)), Image.new("RGB", (40, 40), (20, 20, 220))
    return [
        ScoringInput("What colour is the square?", "It is red.", [red]),
        ScoringInput("What colour is the square?", "It is red.", [red.copy()]),
        ScoringInput("How many circles are there?", "Three blue circles.", [blue]),
    ]


def test_the_critic_prompt_is_the_reward_models_own(reward_model_dir):
    from mmrlhf_ray.data.prompts import render_chat
    from mmrlhf_ray.generation.expansion import critique_request
    from mmrlhf_ray.reward.items import RewardItem, prompt_text
    from mmrlhf_ray.reward.model import load_reward_model

    model = load_reward_model(reward_model_dir)
    for item in _items():
        request = critique_request(
            item.question, item.response, item.images, template=model.meta.prompt_template
        )
        own = prompt_text(
            model.processor, model.meta, RewardItem(item.question, item.response, item.images)
        )
        assert render_chat(model.processor, request.messages) == own


def test_unknown_critique_backend_is_refused():
    with pytest.raises(ValueError, match="critique_backend"):
        ServeRewardConfig(critique_backend="tgi")


@pytest.mark.ray
@pytest.mark.vllm
def test_vllm_critiques_agree_with_the_critique_head_and_score(ray_session, reward_model_dir):
    import ray

    from actors.critic import VllmCritic
    from mmrlhf_ray.reward.items import RewardItem
    from mmrlhf_ray.reward.model import load_reward_model

    items = _items()
    critic = ray.remote(num_cpus=1)(VllmCritic).remote(reward_model_dir, max_new_tokens=6)
    try:
        critiques = ray.get(critic.critique.remote(items), timeout=600)
    finally:
        ray.kill(critic)
    model = load_reward_model(reward_model_dir)
    own = model.critique(
        [RewardItem(i.question, i.response, i.images) for i in items],
        max_new_tokens=6,
        batch_size=3,
    )
    assert len(critiques) == 3 and critiques[0] == critiques[1] and all(critiques)
    tok = model.tokenizer
    for v, h in zip(critiques, own, strict=True):  # greedy: the first token is the argmax of both
        assert tok(v)["input_ids"][:1] == tok(h)["input_ids"][:1], (v, h)
    # The scorer scores with whatever the critic wrote, batched like the model's own path.
    scorer = RewardScorer(
        _ScoreOnly(model), max_batch_size=8, critic=lambda batch: critiques[: len(batch)]
    )
    scored = scorer.score(items)
    expected = model.score(
        [
            RewardItem(i.question, i.response, i.images, c)
            for i, c in zip(items, critiques, strict=True)
        ]
    )
    assert [c for _, c in scored] == critiques
    assert [round(s, 5) for s, _ in scored] == [round(s, 5) for s in expected]


class _ScoreOnly:
    """The reward model's scoring head only: generating a critique here is a test failure."""

    def __init__(self, model):
        self.model = model

    def critique(self, inputs):
        raise AssertionError("the scorer must use the critic it was given")

    def score(self, inputs, critiques):
        from mmrlhf_ray.reward.items import RewardItem

        items = [
            RewardItem(i.question, i.response, i.images, c)
            for i, c in zip(inputs, critiques, strict=True)
        ]
        return self.model.score(items, batch_size=len(items))
