"""Forward passes that give per-response log-probs for a grouped batch.

``grouped_logps`` is the training forward: the vision tower runs **once per query**
(frozen: under ``no_grad``; the projector, Qwen2-VL's ``visual.merger``, still gets
gradients), its features are handed to all K rows of the query through transformers'
``mm_encoder_outputs``, and the K rows of every query go through the LLM in one batch.

``per_pair_logps`` is the naive reference implementation (what TRL does): each pair is
its own batch of two sequences, chosen and rejected, each with its own copy of the
image. It exists for the equivalence test and the benchmark.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mmrlhf_ray.dpo.batching import MODALITIES, GroupedBatch, is_video
from mmrlhf_ray.groups import QueryGroup
from mmrlhf_ray.media import row_images
from mmrlhf_ray.models.encoding import (
    collate,
    encode_prompt_response,
    model_inputs,
    sequence_logps,
)


def _base(model):
    """The Qwen2-VL ``Qwen2VLModel`` under a ``*ForConditionalGeneration`` (or DeepSpeed)."""
    inner = getattr(model, "module", model)
    return inner.model


def vision_features(model, pixels: torch.Tensor, grid: torch.Tensor,
                    frozen: bool = True) -> list[torch.Tensor]:
    """Visual tokens per image/video: a list of ``(n_tokens_i, hidden)`` tensors.

    With ``frozen``, the vision blocks run without autograd and only the projector
    (``visual.merger``) is differentiable, matching a frozen tower + trainable projector.
    """
    visual = _base(model).visual
    pixels = pixels.to(next(visual.parameters()).dtype)
    if frozen and hasattr(visual, "merger") and _base(model).config.model_type == "qwen2_vl":
        with torch.no_grad():
            hidden = visual(pixels, grid_thw=grid).last_hidden_state
        merged = visual.merger(hidden)
    elif frozen:  # other families: tower and projector both frozen
        with torch.no_grad():
            merged = visual(pixels, grid_thw=grid).pooler_output
    else:
        merged = visual(pixels, grid_thw=grid).pooler_output
    sizes = (grid.prod(-1) // visual.spatial_merge_size**2).tolist()
    return list(torch.split(merged, sizes))


def _row_vision(model, batch: GroupedBatch, frozen: bool) -> tuple[dict, dict]:
    """mm_encoder_outputs and grid tensors laid out per row, features computed per query."""
    encoder_outputs, grids = {}, {}
    for _pix_key, grid_key, name in MODALITIES:
        slot = batch.vision.get(name)
        if slot is None:
            continue
        feats = vision_features(model, slot["pixels"], slot["grid"], frozen=frozen)
        media_of_query: dict[int, list[int]] = defaultdict(list)
        for m, q in enumerate(slot["media_query"].tolist()):
            media_of_query[q].append(m)
        row_feats, row_grid = [], []
        for q in batch.row_query.tolist():
            for m in media_of_query[q]:
                row_feats.append(feats[m])
                row_grid.append(slot["grid"][m])
        encoder_outputs[name] = BaseModelOutputWithPooling(pooler_output=tuple(row_feats))
        grids[grid_key] = torch.stack(row_grid)
    return encoder_outputs, grids


def grouped_logps(model, batch: GroupedBatch, frozen_vision: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts per row: ``(logps (R,), n_tokens (R,))``.

    One LLM forward over the R rows; one vision-tower pass per query (not per row).
    """
    encoder_outputs, grids = _row_vision(model, batch, frozen_vision)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        mm_token_type_ids=batch.mm_token_type_ids,
        mm_encoder_outputs=encoder_outputs or None,
        use_cache=False,
        **grids,
    )
    return sequence_logps(out.logits, batch.labels)


def per_pair_logps(model, processor, group: QueryGroup, max_response_tokens: int = 256,
                   max_frames: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive forward: every pair of the group separately (image encoded per sequence).

    Returns ``(chosen_logps (P,), rejected_logps (P,))`` in the group's pair order.
    """
    images = row_images(group.media, max_frames=max_frames)
    video = is_video(group.media)
    pad = getattr(processor, "tokenizer", processor).pad_token_id
    chosen, rejected = [], []
    for pair in group.pairs:
        examples = [
            encode_prompt_response(processor, group.question, images, group.responses[i],
                                   video=video, max_response_tokens=max_response_tokens)
            for i in (pair.chosen, pair.rejected)
        ]
        batch = collate(examples, pad)
        logits = model(**model_inputs(batch), use_cache=False).logits
        logps, _ = sequence_logps(logits, batch["labels"])
        chosen.append(logps[0]), rejected.append(logps[1])
    return torch.stack(chosen), torch.stack(rejected)

