"""Every family through the family layer: tiny instances built from the family's own
classes, save/load, the grouped forward, freezing (tests parametrised over families)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.dpo.batching import collate_groups, encode_group
from mmrlhf_ray.dpo.forward import grouped_logps, per_pair_logps
from mmrlhf_ray.models.encoding import encode_prompt
from mmrlhf_ray.models.families import (
    FAMILIES,
    UnsupportedFamily,
    family_of,
    get_family,
    load_model,
)
from mmrlhf_ray.training.freeze import freeze_vision
from tests.dpo.helpers import make_pairs

NAMES = list(FAMILIES)
MODEL_CLASS = {
    "qwen2-vl": "Qwen2VLForConditionalGeneration",
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "llava-onevision": "LlavaOnevisionForConditionalGeneration",
    "internvl": "InternVLForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}


def _media(seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")) for _ in range(4)]
    return frames[:1], frames


@pytest.mark.parametrize("name", NAMES)
def test_build_save_reload_with_image_and_video(name, family_models, tmp_path):
    model, processor = load_model(family_models(name)["policy"])
    assert type(model).__name__ == MODEL_CLASS[name] and family_of(model).name == name
    assert model.config.get_text_config().hidden_size == 128
    image, frames = _media()
    inputs = [
        encode_prompt(processor, "What colour is the circle?", image),
        encode_prompt(processor, "Where does it move?", frames, video=True),
    ]
    with torch.no_grad():
        before = [model(**x, use_cache=False).logits for x in inputs]
    model.save_pretrained(tmp_path, safe_serialization=True)
    processor.save_pretrained(tmp_path)
    again, processor2 = load_model(tmp_path)
    for x, logits in zip(inputs, before, strict=True):
        assert torch.isfinite(logits).all()
        with torch.no_grad():
            torch.testing.assert_close(again(**x, use_cache=False).logits, logits)
    x2 = encode_prompt(processor2, "What colour is the circle?", image)
    assert torch.equal(x2["input_ids"], inputs[0]["input_ids"])
    text_only = encode_prompt(processor, "Where does it move?")["input_ids"].shape[1]
    assert inputs[1]["input_ids"].shape[1] > text_only + 3  # the frames became tokens


@pytest.mark.parametrize("name", NAMES)
def test_grouped_forward_equals_per_pair_forward(name, family_models):
    """Vision once per query, K rows per query in one LLM batch == every pair alone."""
    model, processor = load_model(family_models(name)["policy"])
    groups, bad = group_pairs(make_pairs(n_queries=3, k=3, video_every=3))
    assert not bad
    batch = collate_groups(
        [encode_group(processor, g) for g in groups], processor.tokenizer.pad_token_id
    )
    assert (batch.n_queries, batch.n_rows, batch.n_pairs) == (3, 9, 9)
    with torch.no_grad():
        logps, n_tokens = grouped_logps(model, batch)
        chosen, rejected = zip(*[per_pair_logps(model, processor, g) for g in groups], strict=True)
    # Sums of ~130 token log-probs reach ~140, where one fp32 ulp is 1.5e-5 and the two
    # paths add in different orders: rtol 1e-5 (~80 ulps) covers that on any CPU, while
    # one wrong token moves a sum by far more (>= 1e-2).
    tol = {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(logps[batch.chosen_idx], torch.cat(chosen), **tol)
    torch.testing.assert_close(logps[batch.rejected_idx], torch.cat(rejected), **tol)
    assert (n_tokens > 3).all()


@pytest.mark.parametrize("name", NAMES)
def test_freeze_vision_freezes_exactly_the_tower(name, family_models):
    model, _ = load_model(family_models(name)["policy"])
    family = get_family(name)
    projector = {id(p) for p in family.projector_parameters(model)}
    tower = {id(p) for m in family.vision_modules(model) for p in m.parameters()} - projector
    llm = {id(p) for p in family.language_model(model).parameters()}
    assert tower and projector and llm and not (tower & llm) and not (projector & llm)
    counts = freeze_vision(model)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen == tower
    assert counts["frozen"] == sum(p.numel() for p in model.parameters() if id(p) in tower)
    freeze_vision(model, freeze_projector=True)
    assert {id(p) for p in model.parameters() if not p.requires_grad} == tower | projector


def test_unsupported_architecture_fails_at_load_naming_the_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    with pytest.raises(UnsupportedFamily) as err:
        load_model(tmp_path)
    for name in NAMES:
        assert name in str(err.value)
    assert "blip-2" in str(err.value)
    with pytest.raises(UnsupportedFamily, match="llava-onevision"):
        get_family("llava")


def test_prompt_positions_continue_after_the_image(family_models):
    """M-RoPE (Qwen): the image's positions are compressed, the prompt's last position is
    below P - 1; the other families count 0..P-1."""
    image, _ = _media()
    for name, mrope in (("qwen2.5-vl", True), ("llava-onevision", False)):
        model, processor = load_model(family_models(name)["policy"])
        x = encode_prompt(processor, "What colour is the circle?", image)
        pos = get_family(name).prompt_position_ids(model, x)
        length = x["input_ids"].shape[1]
        assert pos.shape == ((3, 1, length) if mrope else (1, length))
        assert (int(pos.max()) < length - 1) == mrope


@pytest.mark.parametrize("name", NAMES)
def test_batched_generation_with_one_image_per_prompt(name, family_models):
    """A batch of image prompts through the family's processor (SmolVLM wants one image
    list per text: a flat list failed the shapes-world SFT benchmark) answers as each
    prompt alone does (greedy, left padding)."""
    from mmrlhf_ray.models.decoding import generate_batch

    model, processor = load_model(family_models(name)["policy"])
    frames = _media(1)[1]
    prompts = [("What colour is the circle?", frames[:1]), ("How many shapes?", frames[1:2])]
    together = generate_batch(model, processor, prompts, max_new_tokens=4)
    alone = [generate_batch(model, processor, [p], max_new_tokens=4)[0] for p in prompts]
    assert len(together) == 2 and together == alone
