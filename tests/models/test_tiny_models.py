"""Tiny offline models: tokenizer and Qwen2-VL policy round trips, shared encoding."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, AutoTokenizer, Qwen2VLForConditionalGeneration

from mmrlhf_ray.models import (
    IGNORE_INDEX,
    SPECIAL_TOKENS,
    collate,
    encode_prompt_response,
    generate_text,
    load_policy,
    response_logps,
    sequence_logps,
)


def _scene(colour: str, x: int) -> Image.Image:
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).ellipse([x, 20, x + 16, 36], fill=colour)
    return img


def test_tokenizer_reloads_with_special_tokens_and_template(tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models["tokenizer"])
    for i, special in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(special) == i
        assert tok(special, add_special_tokens=False).input_ids == [i]  # never split
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "video"},
                {"type": "text", "text": "What colour?"},
            ],
        }
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|video_pad|><|vision_end|>What colour?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok("a red circle at the top left").input_ids
    assert tok.decode(ids) == "a red circle at the top left"


def test_labels_cover_only_the_response(tiny_models):
    _, processor = load_policy(tiny_models["policy"])
    enc = encode_prompt_response(
        processor, "What colour is the circle?", [_scene("red", 10)], "The circle is red."
    )
    labels, ids = enc["labels"][0], enc["input_ids"][0]
    n_resp = int((labels != IGNORE_INDEX).sum())
    resp_ids = processor.tokenizer(
        "The circle is red.<|im_end|>", add_special_tokens=False
    ).input_ids
    assert n_resp == len(resp_ids)
    assert ids[-n_resp:].tolist() == resp_ids == labels[-n_resp:].tolist()
    assert (labels[:-n_resp] == IGNORE_INDEX).all()
    # a 64x64 image is resized to 56x56: 4x4 patches merged 2x2 = 4 image tokens
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((ids == image_id).sum()) == 4
    assert enc["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_sequence_logps_hand_computed():
    # vocab 2, uniform logits => every token has log-prob log(1/2)
    logits = torch.zeros(1, 4, 2)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1, 0]])
    logps, n = sequence_logps(logits, labels)
    assert n.tolist() == [2]
    assert torch.allclose(logps, torch.tensor([2 * torch.log(torch.tensor(0.5))]))


def test_round_trip_image_and_video_identical_after_reload(tiny_models, tmp_path):
    model, processor = load_policy(tiny_models["policy"])
    image_ex = encode_prompt_response(processor, "What colour?", [_scene("red", 10)], "red")
    frames = [_scene("blue", x) for x in (4, 16, 28, 40)]
    video_ex = encode_prompt_response(
        processor, "Which way does it move?", frames, "right", video=True
    )
    assert video_ex["video_grid_thw"].tolist() == [[2, 4, 4]]  # 4 frames, temporal patch 2
    batch = collate([image_ex, video_ex], processor.tokenizer.pad_token_id)
    with torch.no_grad():
        batched = response_logps(model, batch)
        single = torch.cat([response_logps(model, image_ex), response_logps(model, video_ex)])
    assert torch.allclose(batched, single, atol=1e-5)  # right padding changes nothing

    out = tmp_path / "resaved"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    model2 = Qwen2VLForConditionalGeneration.from_pretrained(out).eval()
    processor2 = AutoProcessor.from_pretrained(out)
    with torch.no_grad():
        assert torch.equal(response_logps(model2, batch), batched)
    reply = generate_text(model, processor, "What colour?", [_scene("red", 10)], max_new_tokens=8)
    reply2 = generate_text(
        model2, processor2, "What colour?", [_scene("red", 10)], max_new_tokens=8
    )
    assert reply == reply2 and len(reply) > 0
    vreply = generate_text(model2, processor2, "Which way?", frames, video=True, max_new_tokens=8)
    assert vreply == generate_text(
        model, processor, "Which way?", frames, video=True, max_new_tokens=8
    )


def test_batched_generation_equals_one_by_one(tiny_models):
    from mmrlhf_ray.models import generate_batch

    model, processor = load_policy(tiny_models["policy"])
    prompts = [
        ("What colour is the circle?", [_scene("red", 4)]),
        ("Where is the circle?", [_scene("blue", 40)]),
        ("Describe the image.", [_scene("green", 20)]),
    ]
    single = [generate_text(model, processor, q, imgs, max_new_tokens=6) for q, imgs in prompts]
    assert generate_batch(model, processor, prompts, max_new_tokens=6) == single
    frames = [_scene("blue", x) for x in (4, 16, 28, 40)]
    videos = [("Which way?", frames), ("Which way does it move?", frames[::-1])]
    single = [
        generate_text(model, processor, q, f, video=True, max_new_tokens=6) for q, f in videos
    ]
    assert generate_batch(model, processor, videos, video=True, max_new_tokens=6) == single
    assert processor.tokenizer.padding_side == "right"  # restored after left-padding
