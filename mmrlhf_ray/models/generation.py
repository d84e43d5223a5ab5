"""Greedy/sampled generation with the transformers model (the vLLM-free path).

Used by the SFT stage to score the toy benchmark and by tests; the generate stage uses
vLLM actors at scale, with this as the fallback behind the same prompt encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmrlhf_ray.models.encoding import encode_prompt


@torch.no_grad()
def generate_text(model, processor, question: str, images_or_frames: Sequence | None = None,
                  video: bool = False, max_new_tokens: int = 48, do_sample: bool = False,
                  temperature: float = 1.0) -> str:
    """The model's reply to ``question`` about the images (or the video's frames)."""
    enc = encode_prompt(processor, question, images_or_frames, video=video)
    tok = processor.tokenizer
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
        temperature=temperature if do_sample else None, top_p=None, top_k=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
    )
    new = out[0, enc["input_ids"].shape[1]:]
    return tok.decode(new, skip_special_tokens=True).strip()
