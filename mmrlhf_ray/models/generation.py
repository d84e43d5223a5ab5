"""Greedy/sampled generation with the transformers model (the vLLM-free path).

Used by the SFT stage to score the toy benchmark and by tests; the generate stage uses
vLLM actors at scale, with this as the fallback behind the same prompt encoding.
``generate_batch`` left-pads a batch of prompts (one modality per call, so each prompt
carries its own images or one video), which is ~batch-size times faster on CPU than
one prompt at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmrlhf_ray.models.encoding import chat_messages, encode_prompt, end_of_turn
from mmrlhf_ray.models.families import family_of_processor


def _decode_new(processor, out: torch.Tensor, prompt_len: int) -> list[str]:
    tok = processor.tokenizer
    return [tok.decode(row[prompt_len:], skip_special_tokens=True).strip() for row in out]


def _gen_kwargs(processor, max_new_tokens: int, do_sample: bool, temperature: float) -> dict:
    tok = processor.tokenizer
    return dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=None,
        top_k=None,
        eos_token_id=tok.convert_tokens_to_ids(end_of_turn(processor)),
        pad_token_id=tok.pad_token_id,
    )


@torch.no_grad()
def generate_text(
    model,
    processor,
    question: str,
    images_or_frames: Sequence | None = None,
    video: bool = False,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
) -> str:
    """The model's reply to ``question`` about the images (or the video's frames)."""
    enc = encode_prompt(processor, question, images_or_frames, video=video)
    out = model.generate(**enc, **_gen_kwargs(processor, max_new_tokens, do_sample, temperature))
    return _decode_new(processor, out, enc["input_ids"].shape[1])[0]


@torch.no_grad()
def generate_batch(
    model,
    processor,
    prompts: Sequence[tuple[str, Sequence[Any]]],
    video: bool = False,
    max_new_tokens: int = 48,
    do_sample: bool = False,
    temperature: float = 1.0,
) -> list[str]:
    """Replies to ``(question, images_or_frames)`` prompts, generated as one left-padded batch.

    All prompts share a modality: each has its own images (``video=False``) or is one
    video given as frames (``video=True``).
    """
    if not prompts:
        return []
    texts, images, videos = [], [], []
    for question, media in prompts:
        media = list(media or [])
        messages = chat_messages(
            question, n_images=0 if video else len(media), video=video and bool(media)
        )
        texts.append(
            processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )
        if video and media:
            videos.append(media)
        else:
            images.append(media)
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        media = family_of_processor(processor).processor_media(prompt_images=images, videos=videos)
        enc = processor(text=texts, padding=True, return_tensors="pt", **media)
    finally:
        tok.padding_side = side
    out = model.generate(**enc, **_gen_kwargs(processor, max_new_tokens, do_sample, temperature))
    return _decode_new(processor, out, enc["input_ids"].shape[1])
