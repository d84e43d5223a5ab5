"""The packed DPO forward: each query's prompt and media once, its K responses behind it.

Same inputs and outputs as the grouped forward (``forward.grouped_logps``): queries
encoded by ``batching.encode_group``, per-response log-probs in the grouped batch's row
order (query-major), and the pairs' chosen/rejected indices into them, so
``objective.preference_loss`` takes either batch. The difference is the layout
(``mmrlhf_ray.models.packing``): one segment ``[prompt + media, r1..rK]`` per query with
a block mask, not K rows that each recompute the prompt, and the LM head only at the
positions that predict a response token.

    batch = collate_packed([encode_group(processor, g) for g in groups], pad_token_id)
    logps, n_tokens = packed_logps(model, batch)        # (R,), (R,)
    logps, n_tokens = forward_logps(model, batch)      # either kind of batch
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmrlhf_ray.dpo.batching import (
    EncodedQuery,
    GroupedBatch,
    PairIndex,
    collate_groups,
    index_pairs,
)
from mmrlhf_ray.dpo.config import FORWARD_KINDS
from mmrlhf_ray.models.encoding import IGNORE_INDEX
from mmrlhf_ray.models.packing import (
    PackedQuery,
    PackedRows,
    item_logps,
    media_tensors,
    pack_queries,
)


@dataclass(kw_only=True)
class PackedBatch(PairIndex):
    """R responses of Q queries packed in rows, and P pairs pointing at the responses.

    The pair index is ``GroupedBatch``'s (``PairIndex``): a response index is the row
    index the grouped batch would give it.
    """

    rows: PackedRows


def packed_query(eq: EncodedQuery) -> PackedQuery:
    """An encoded query as a shared prefix (its prompt) + K items (prompt + response)."""
    prompt_ids = eq.prompt["input_ids"][0]
    types = eq.prompt.get("mm_token_type_ids")
    types = torch.zeros_like(prompt_ids) if types is None else types[0]
    media = media_tensors(eq.prompt)
    items = [
        (
            torch.cat([prompt_ids, resp]),
            torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), resp]),
        )
        for resp in eq.response_ids
    ]
    return PackedQuery(prompt_ids, types, media, items)


def collate_packed(
    encoded: list[EncodedQuery], pad_token_id: int, max_row_tokens: int = 0
) -> PackedBatch:
    """Pack the queries (see ``packing.pack_queries``) and index the pairs."""
    if not encoded:
        raise ValueError("collate_packed: no queries")
    rows = pack_queries([packed_query(eq) for eq in encoded], pad_token_id, max_row_tokens)
    return PackedBatch(rows=rows, **index_pairs(encoded))


def packed_logps(
    model, batch: PackedBatch, frozen_vision: bool = True, attention: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts per response: ``((R,), (R,))``.

    ``attention``: the block mask as a FlexAttention BlockMask (``flex``) or a dense mask
    (``dense``); ``auto`` is flex on CUDA, dense elsewhere; None: the model's setting
    (``models.attention.configure_attention``)."""
    return item_logps(model, batch.rows, frozen_vision, attention=attention)


def collate_batch(
    encoded: list[EncodedQuery], pad_token_id: int, kind: str = "packed"
) -> PackedBatch | GroupedBatch:
    """The batch of forward ``kind`` ("packed" or "grouped", the reference layout)."""
    if kind == "packed":
        return collate_packed(encoded, pad_token_id)
    if kind == "grouped":
        return collate_groups(encoded, pad_token_id)
    raise ValueError(f"forward: {kind!r} is not one of {', '.join(FORWARD_KINDS)}")


def forward_logps(
    model,
    batch: PackedBatch | GroupedBatch,
    frozen_vision: bool = True,
    attention: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-response ``(logps, n_tokens)`` from whichever forward the batch was made for
    (``attention`` applies to the packed one)."""
    if isinstance(batch, PackedBatch):
        return packed_logps(model, batch, frozen_vision, attention)
    from mmrlhf_ray.dpo.forward import grouped_logps

    return grouped_logps(model, batch, frozen_vision)
