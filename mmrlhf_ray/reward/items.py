"""What the reward model scores and how one item becomes tokens: the item, the settings
recorded beside the backbone (``reward_config.json``) and the encoding of prompt +
critique + end token. Below both the model (``model``) and the packed forward
(``packed``), which share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from mmrlhf_ray.data.prompts import CRITIQUE_PROMPT
from mmrlhf_ray.models.encoding import IGNORE_INDEX, cat_media


@dataclass
class RewardItem:
    """One thing to score: a question, its images (video = several frames), a response
    and optionally a critique (``None`` = generate or leave empty, per the mode)."""

    question: str
    response: str
    images: list[Image.Image] = field(default_factory=list)
    critique: str | None = None

    @classmethod
    def of(cls, item: RewardItem | Mapping[str, Any]) -> RewardItem:
        if isinstance(item, RewardItem):
            return item
        images = item.get("images")
        if images is None and item.get("image") is not None:
            images = [item["image"]]
        return cls(
            question=str(item["question"]),
            response=str(item["response"]),
            images=list(images or []),
            critique=item.get("critique"),
        )


@dataclass
class RewardMeta:
    """What ``reward_config.json`` records beside the backbone."""

    hidden_size: int
    head_dropout: float = 0.1
    prompt_template: str = CRITIQUE_PROMPT
    max_length: int = 512
    max_frames: int = 4
    critique_trained: bool = True  # False for the score-only ablation
    max_new_tokens: int = 0  # critique length cap used in training's eval (0 = not recorded)


def pad_token_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def prompt_text(processor: Any, meta: RewardMeta, item: RewardItem) -> str:
    """The chat prompt (evaluator instruction, question, response, image placeholders)
    up to and including the assistant turn's header."""
    text = meta.prompt_template.format(question=item.question, response=item.response)
    content = [{"type": "image"} for _ in item.images[: meta.max_frames]]
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_one(processor: Any, meta: RewardMeta, item: RewardItem, add_critique: bool):
    """(ids, labels, extra per-token columns, vision tensors) of one item, unpadded."""
    tok = getattr(processor, "tokenizer", processor)
    images = item.images[: meta.max_frames]
    enc = dict(
        processor(
            text=[prompt_text(processor, meta, item)], images=images or None, return_tensors="pt"
        )
    )
    prompt_ids = enc["input_ids"][0]
    n = prompt_ids.shape[0]
    extra = {
        k: v[0]
        for k, v in enc.items()
        if k not in ("input_ids", "attention_mask") and v.dim() == 2 and v.shape == (1, n)
    }
    suffix: list[int] = []
    if add_critique:
        suffix = tok((item.critique or "") + (tok.eos_token or ""), add_special_tokens=False)[
            "input_ids"
        ]
        room = max(1, meta.max_length - n)
        if len(suffix) > room:  # cut the critique, keep its end token
            suffix = suffix[: room - 1] + suffix[-1:]
    ids = torch.cat([prompt_ids, torch.tensor(suffix, dtype=prompt_ids.dtype)])
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[n:] = ids[n:]
    extra = {k: torch.cat([v, v.new_zeros(len(suffix))]) for k, v in extra.items()}
    # every other output is media (the family's pixels, grids, sizes): concatenated
    # over the batch by cat_media
    vision = {
        k: v
        for k, v in enc.items()
        if k not in ("input_ids", "attention_mask")
        and k not in extra
        and isinstance(v, torch.Tensor)
    }
    return ids, labels, extra, vision


def encode_items(
    processor: Any,
    meta: RewardMeta,
    items: Sequence[RewardItem | Mapping],
    with_labels: bool = False,
    left_pad: bool = False,
    add_critique: bool = True,
) -> dict[str, torch.Tensor]:
    """Tokenise prompt + critique + end token per item and pad into one batch.

    ``labels`` (with ``with_labels``) mark the critique and end tokens only, so the LM
    loss is Eq. 2 on critique tokens. ``add_critique=False`` stops after the prompt
    (for generation). Over-long sequences are cut from the critique's end.
    """
    rows, vision_parts = [], {}
    for raw in items:
        ids, labels, extra, vision = encode_one(processor, meta, RewardItem.of(raw), add_critique)
        rows.append((ids, labels, extra))
        for k, v in vision.items():
            vision_parts.setdefault(k, []).append(v)
    tok = getattr(processor, "tokenizer", processor)
    batch = _pad_rows(rows, pad_token_id(tok), left_pad)
    if not with_labels:
        batch.pop("labels")
    batch.update({k: cat_media(v) for k, v in vision_parts.items()})
    return batch


def _pad_rows(rows, pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    width = max(ids.shape[0] for ids, _, _ in rows)
    keys = sorted({k for _, _, extra in rows for k in extra})
    cols: dict[str, list[torch.Tensor]] = {"input_ids": [], "attention_mask": [], "labels": []}
    cols.update({k: [] for k in keys})

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        filler = t.new_full((width - t.shape[0],), value)
        return torch.cat([filler, t] if left else [t, filler])

    for ids, labels, extra in rows:
        cols["input_ids"].append(pad(ids, pad_id))
        cols["attention_mask"].append(pad(torch.ones_like(ids), 0))
        cols["labels"].append(pad(labels, IGNORE_INDEX))
        for k in keys:
            cols[k].append(pad(extra.get(k, torch.zeros_like(ids)), 0))
    return {k: torch.stack(v) for k, v in cols.items()}
