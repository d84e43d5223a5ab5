"""Prompt/response encoding for the policy, and per-response log-probabilities.

One encoding is shared by SFT, DPO (policy and reference log-probs) and the critique
reward model, so the token a loss sees is the token generation produced:

* the prompt is the chat template applied to ``chat_messages(question, ...)`` with the
  generation prompt (``<|im_start|>assistant\\n``), run through the processor with the
  images / video frames so the vision pads expand to the right number of tokens;
* the response is tokenised separately (``response + <|im_end|>``) and appended, so the
  prompt/response boundary never depends on BPE merges across it;
* ``labels`` are ``-100`` on every prompt token and the token ids on the response.

``response_logps(model, batch)`` then gives, per sequence, the summed log-probability
of the response tokens: ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mmrlhf_ray.data.prompts import chat_messages
from mmrlhf_ray.models.families import family_of_processor

IGNORE_INDEX = -100
# Per-token keys and their padding value (mm_token_type_ids: 0 text, 1 image, 2 video).
SEQUENCE_KEYS = (
    ("input_ids", 0),
    ("attention_mask", 0),
    ("labels", -100),
    ("mm_token_type_ids", 0),
)


def encode_prompt(
    processor, question: str, images_or_frames: Sequence | None = None, video: bool = False
) -> dict[str, torch.Tensor]:
    """Processor outputs (batch of 1) for the generation prompt of ``question``.

    ``images_or_frames``: a list of PIL images (one image part each), or, with
    ``video=True``, the frames of one video.
    """
    media = list(images_or_frames or [])
    messages = chat_messages(
        question, n_images=0 if video else len(media), video=video and bool(media)
    )
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    family = family_of_processor(processor)
    media_kw = family.processor_media(frames=media) if video else family.processor_media(media)
    return dict(processor(text=[text], return_tensors="pt", **media_kw))


def end_of_turn(processor) -> str:
    """The text that closes an assistant turn (``<|im_end|>`` for Qwen2-VL)."""
    tok = getattr(processor, "tokenizer", processor)
    return tok.eos_token if isinstance(tok.eos_token, str) else "<|im_end|>"


def encode_prompt_response(
    processor,
    question: str,
    images_or_frames: Sequence | None,
    response: str,
    video: bool = False,
    max_response_tokens: int = 256,
) -> dict[str, torch.Tensor]:
    """Tensors (batch of 1) for prompt + response with labels on the response only.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (``-100`` on the prompt) and
    the media tensors of the family's processor.
    The response is closed with ``<|im_end|>`` so the model learns to stop.
    """
    enc = encode_prompt(processor, question, images_or_frames, video=video)
    tok = getattr(processor, "tokenizer", processor)
    resp = tok(
        response + end_of_turn(processor), add_special_tokens=False, return_tensors="pt"
    ).input_ids[:, :max_response_tokens]
    prompt_ids = enc.pop("input_ids")
    enc.pop("attention_mask", None)
    input_ids = torch.cat([prompt_ids, resp], dim=1)
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), resp], dim=1)
    if enc.get("mm_token_type_ids") is not None:  # which tokens are image/video (M-RoPE)
        enc["mm_token_type_ids"] = F.pad(enc["mm_token_type_ids"], (0, resp.shape[1]), value=0)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        **enc,
    }


def collate(
    examples: Sequence[dict[str, torch.Tensor]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad a list of ``encode_prompt_response`` outputs into one batch.

    Media tensors (every other processor output) are concatenated along their first
    axis (``cat_media``): Qwen2-VL's patches of all images plus one ``grid_thw`` row per
    image, LLaVA-OneVision's / SmolVLM's per-example image stacks.
    """
    if not examples:
        raise ValueError("collate: no examples")
    length = max(e["input_ids"].shape[1] for e in examples)
    pads = {"input_ids": pad_token_id}
    batch: dict[str, torch.Tensor] = {}
    for key, fill in SEQUENCE_KEYS:
        if key == "mm_token_type_ids" and any(e.get(key) is None for e in examples):
            continue
        fill = pads.get(key, fill)
        rows = [F.pad(e[key], (0, length - e[key].shape[1]), value=fill) for e in examples]
        batch[key] = torch.cat(rows, dim=0)
    text = {k for k, _ in SEQUENCE_KEYS}
    media = sorted(
        {k for e in examples for k, v in e.items() if k not in text and isinstance(v, torch.Tensor)}
    )
    for key in media:
        batch[key] = cat_media([e[key] for e in examples if e.get(key) is not None])
    return batch


def cat_media(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-example media tensors on dim 0, zero-padding dim 1 when sizes differ
    (LLaVA-OneVision gives ``[1, patches, C, H, W]`` with a per-image patch count, SmolVLM
    ``[1, images, C, H, W]``; both skip the zero padding by their own sizes / masks)."""
    if parts[0].dim() >= 3 and len({p.shape[1] for p in parts}) > 1:
        width = max(p.shape[1] for p in parts)
        parts = [
            torch.cat([p, p.new_zeros(p.shape[0], width - p.shape[1], *p.shape[2:])], 1)
            for p in parts
        ]
    return torch.cat(parts)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of the labelled tokens per sequence, and their count.

    Args:
        logits: ``[B, L, V]`` next-token logits (position t predicts token t+1).
        labels: ``[B, L]`` token ids, ``-100`` where no log-prob is wanted.
    Returns:
        ``(logps [B], n_tokens [B])`` with ``logps_b = sum_t log softmax(logits_b,t)[labels_b,t+1]``.
    """
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe = targets.masked_fill(~mask, 0)
    token_logps = torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of ``batch`` the model's forward takes: every tensor the processor gave
    (text and media), without ``labels``."""
    return {k: v for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}


def response_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sequence summed log-prob ``log pi(y|x)`` of the response tokens: shape ``[B]``."""
    logits = model(**model_inputs(batch), use_cache=False).logits
    return sequence_logps(logits, batch["labels"])[0]


def sft_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean negative log-likelihood of the responses (the SFT objective).

    ``L_SFT = - (1 / N) * sum_b sum_t log pi(y_b,t | x_b, y_b,<t)``, N = number of
    response tokens in the batch. Returns ``(loss, {"loss", "tokens"})``.
    """
    logits = model(**model_inputs(batch), use_cache=False).logits
    logps, n_tokens = sequence_logps(logits, batch["labels"])
    total = n_tokens.sum().clamp(min=1)
    loss = -logps.sum() / total
    return loss, {"loss": float(loss.detach()), "tokens": float(total)}
