"""CritiqueRewardModel: encoding, the three inference modes, save/load, learning."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mmrlhf_ray.models.encoding import IGNORE_INDEX
from mmrlhf_ray.reward.data import collate_pairs, make_loss_fn, pairs_from_rows
from mmrlhf_ray.reward.losses import RewardLossWeights
from mmrlhf_ray.reward.model import (
    HEAD_FILE,
    CritiqueRewardModel,
    RewardHead,
    build_tiny_reward_model,
    last_token_index,
    load_reward_model,
)


def _items(toy_rows, n=3):
    pairs, _ = pairs_from_rows(toy_rows[:n], "expanded")
    return [p.chosen for p in pairs] + [p.rejected for p in pairs]


def test_head_is_official_shape_and_reads_last_token():
    head = RewardHead(8, dropout=0.1)
    assert [type(m).__name__ for m in head.children()] == ["Dropout", "Linear", "Linear"]
    assert head.dense.weight.shape == (8, 8) and head.out_proj.weight.shape == (1, 8)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 3, 0]


def test_labels_cover_exactly_the_critique_and_end_token(fresh_reward_model, toy_rows):
    model: CritiqueRewardModel = fresh_reward_model
    item = _items(toy_rows, 1)[0]
    batch = model.encode([item], with_labels=True)
    labelled = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    text = model.tokenizer.decode(labelled)
    assert text == item.critique + model.tokenizer.eos_token
    assert batch["input_ids"][0][-len(labelled) :].tolist() == labelled.tolist()


def test_padding_side_does_not_change_scores(fresh_reward_model, toy_rows):
    model = fresh_reward_model.eval()
    items = _items(toy_rows, 3)
    with torch.no_grad():
        right = model(**model.encode(items))["scores"]
        left = model(**model.encode(items, left_pad=True))["scores"]
        single = torch.cat([model(**model.encode([i]))["scores"] for i in items])
    torch.testing.assert_close(right, left, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(right, single, atol=1e-4, rtol=1e-4)


def test_inference_modes(fresh_reward_model, toy_rows):
    model = fresh_reward_model
    items = _items(toy_rows, 2)
    given = model.score_with_critique(items, mode="given")
    assert [c for _, c in given] == [i.critique for i in items]
    none = model.score_with_critique(items, mode="none")
    assert all(c == "" for _, c in none)
    generated = model.score_with_critique(items[:2], mode="generate", max_new_tokens=4)
    assert len(generated) == 2 and all(isinstance(c, str) for _, c in generated)
    # scoring with the generated critique = scoring that critique as "given"
    again = model.score([{**vars(items[0]), "critique": generated[0][1]}])
    assert again[0] == pytest.approx(generated[0][0], abs=1e-5)
    with pytest.raises(ValueError, match=r"items\[0\].critique: required"):
        model.score_with_critique([{"question": "q", "response": "r"}], mode="given")


def test_save_load_round_trip(tiny_models, tmp_path, toy_rows):
    path = build_tiny_reward_model(tiny_models["policy"], tmp_path / "rm", seed=3)
    assert sorted(load_file(f"{path}/{HEAD_FILE}")) == [
        "dense.bias",
        "dense.weight",
        "out_proj.bias",
        "out_proj.weight",
    ]
    meta = json.loads((tmp_path / "rm" / "reward_config.json").read_text())
    assert meta["hidden_size"] == 128
    a = load_reward_model(path)
    b = load_reward_model(path)
    items = _items(toy_rows, 2)
    assert a.score(items) == pytest.approx(b.score(items), abs=1e-6)
    with pytest.raises(FileNotFoundError, match="reward_head.safetensors"):
        load_reward_model(tiny_models["policy"])


def test_joint_loss_falls_and_ranks_training_pairs(tiny_models, toy_rows, short_prompt):
    """A few in-process steps of the joint objective: both terms fall, pairs get ranked."""
    from mmrlhf_ray.reward.model import new_reward_model

    _train_a_few_steps(
        new_reward_model(tiny_models["policy"], seed=0, prompt_template=short_prompt), toy_rows
    )


def _train_a_few_steps(model, toy_rows):
    torch.manual_seed(0)
    pairs, _ = pairs_from_rows(toy_rows[:3], "expanded")
    batch = collate_pairs(model, pairs)
    loss_fn = make_loss_fn(RewardLossWeights())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(10):
        loss, parts = loss_fn(model, batch)
        first = first or parts
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["critique"] < 0.75 * first["critique"]
    assert parts["score"] < 0.5 * first["score"]
    with torch.no_grad():
        scores = model.eval()(**{k: v for k, v in batch.items() if k != "is_tie"})["scores"]
    assert bool((scores[:3] > scores[3:]).all())
