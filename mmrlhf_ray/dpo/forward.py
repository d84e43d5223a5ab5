"""Forward passes that give per-response log-probs for a grouped batch.

``grouped_logps`` is the training forward: the family's vision tower and projector run
**once per query** (``Family.grouped_inputs``; with the tower frozen autograd keeps only
the projector's activations), the features are handed to all K rows of the query, and
the K rows of every query go through the LLM in one batch. It works for every family of ``mmrlhf_ray.models.families``.

``per_pair_logps`` is the naive reference implementation (what TRL does): each pair is
its own batch of two sequences, chosen and rejected, each with its own copy of the
image. It exists for the equivalence test and the benchmark.
"""

from __future__ import annotations

import torch

from mmrlhf_ray.data.groups import QueryGroup
from mmrlhf_ray.data.media import is_video, row_images
from mmrlhf_ray.dpo.batching import GroupedBatch
from mmrlhf_ray.models.encoding import (
    collate,
    encode_prompt_response,
    model_inputs,
    sequence_logps,
)
from mmrlhf_ray.models.families import family_of


def grouped_logps(
    model, batch: GroupedBatch, frozen_vision: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts per row: ``(logps (R,), n_tokens (R,))``.

    One LLM forward over the R rows; one vision pass per query (not per row).
    ``frozen_vision``: the tower's parameters are frozen (``freeze_vision``), so no
    activation of the tower is kept for backward; False runs it with autograd as is.
    """
    del frozen_vision  # the tower's requires_grad decides; kept for callers' clarity
    family = family_of(model)
    extra = family.grouped_inputs(
        model, batch.query_media, batch.row_query.tolist(), batch.mm_token_type_ids
    )
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, **extra
    )
    return sequence_logps(out.logits, batch.labels)


def per_pair_logps(
    model, processor, group: QueryGroup, max_response_tokens: int = 256, max_frames: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive forward: every pair of the group separately (image encoded per sequence).

    Returns ``(chosen_logps (P,), rejected_logps (P,))`` in the group's pair order.
    """
    images = row_images(group.media, max_frames=max_frames)
    video = is_video(group.media)
    pad = getattr(processor, "tokenizer", processor).pad_token_id
    chosen, rejected = [], []
    for pair in group.pairs:
        examples = [
            encode_prompt_response(
                processor,
                group.question,
                images,
                group.responses[i],
                video=video,
                max_response_tokens=max_response_tokens,
            )
            for i in (pair.chosen, pair.rejected)
        ]
        batch = collate(examples, pad)
        logits = model(**model_inputs(batch), use_cache=False).logits
        logps, _ = sequence_logps(logits, batch["labels"])
        chosen.append(logps[0]), rejected.append(logps[1])
    return torch.stack(chosen), torch.stack(rejected)
