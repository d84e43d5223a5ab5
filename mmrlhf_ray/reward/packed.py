"""The reward model's packed forward: a query's K items share one prefix computation.

Items that share the question and the images (the K responses of a ``/v1/compare``, the
chosen and rejected of a pair, every pair of a query in a batch) encode to sequences
"instruction + images + question + response + critique" that agree up to the response.
That common prefix (with every image token) is computed once; the items' tails follow
it behind a block mask (``mmrlhf_ray.models.packing``). The score is read at each
item's last token, the critique log-probs only at its labelled tokens. Identical items
are computed once and weighted by how often they occur, so the loss is unchanged.

    rows, index, weight = pack_items(processor, meta, items, with_labels=True)
    out = model(packed=rows)          # {"scores": (N,), "token_logps": (T,)}
    scores = out["scores"][index]     # per input item
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch

from mmrlhf_ray.models.packing import (
    PackedQuery,
    PackedRows,
    common_prefix_length,
    head_logps,
    language_parts,
    media_tensors,
    pack_queries,
    packed_hidden,
)
from mmrlhf_ray.reward.items import RewardItem, encode_one, pad_token_id


def _media_key(item) -> str:
    digest = hashlib.sha1()
    for img in item.images:
        digest.update(f"{img.size}{img.mode}".encode())
        digest.update(img.tobytes())
    return f"{item.question}\x00{digest.hexdigest()}"


def _vision_slots(vision: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return media_tensors(vision)


def _group_query(encoded: list[tuple]) -> list[PackedQuery]:
    """One PackedQuery for items sharing their media (prefix = the common tokens), or
    one per item when the common part would leave image tokens in a tail."""
    seqs = [ids for ids, _, _, _ in encoded]
    types = [extra.get("mm_token_type_ids", torch.zeros_like(ids)) for ids, _, extra, _ in encoded]
    p = min(common_prefix_length(seqs), min(int(s.numel()) for s in seqs) - 1)
    while p > 0 and types[0][p - 1] != 0:
        p -= 1
    if p > 0 and all(not t[p:].any() for t in types):
        items = [(ids, labels) for ids, labels, _, _ in encoded]
        return [PackedQuery(seqs[0][:p], types[0][:p], _vision_slots(encoded[0][3]), items)]
    return [
        PackedQuery(ids[:-1], t[:-1], _vision_slots(vision), [(ids, labels)])
        for (ids, labels, _, vision), t in zip(encoded, types, strict=True)
    ]


def pack_items(
    processor, meta, items: Sequence, with_labels: bool = False
) -> tuple[PackedRows, torch.Tensor, torch.Tensor]:
    """Packed rows of the unique items, each input item's index among them, and each
    unique item's multiplicity (its weight in a token-mean loss)."""
    parsed = [RewardItem.of(i) if isinstance(i, (RewardItem, Mapping)) else i for i in items]
    groups: dict[str, list[tuple]] = {}
    keys: dict[tuple, int] = {}
    index = []
    for item in parsed:
        ids, labels, extra, vision = encode_one(processor, meta, item, add_critique=True)
        if not with_labels:
            labels = torch.full_like(labels, -100)
        key = (_media_key(item), tuple(ids.tolist()), tuple(labels.tolist()))
        if key not in keys:
            keys[key] = len(keys)
            groups.setdefault(key[0], []).append((ids, labels, extra, vision))
        index.append(keys[key])
    queries = [q for enc in groups.values() for q in _group_query(enc)]
    # unique items in packed order = group order; map first-seen ids to that order
    group_of = {g: n for n, g in enumerate(groups)}
    order = list(keys)
    packed_order = sorted(range(len(order)), key=lambda i: group_of[order[i][0]])
    position = {u: n for n, u in enumerate(packed_order)}
    idx = torch.tensor([position[i] for i in index], dtype=torch.long)
    weight = torch.bincount(idx, minlength=len(keys)).float()
    tok = getattr(processor, "tokenizer", processor)
    return pack_queries(queries, pad_token_id(tok)), idx, weight


def packed_outputs(
    model, rows: PackedRows, attention: str | None = None
) -> dict[str, torch.Tensor]:
    """``{"scores": (N,)}`` at each unique item's last token, plus ``token_logps`` (T,)
    and ``token_item`` (T,) of the labelled tokens when there are any. ``attention``: the
    block mask block-sparse (flex) or dense; auto = flex on CUDA; None: the model's setting (``models.attention``)."""
    hidden = packed_hidden(model.backbone, rows, attention=attention)
    last = hidden[rows.last_row, rows.last_pos]
    out = {"scores": model.head(last.to(model.head.dense.weight.dtype))}
    if rows.target_token.numel():
        _, lm_head = language_parts(model.backbone)
        picked = hidden[rows.target_row, rows.target_pos]
        out["token_logps"] = head_logps(lm_head, picked, rows.target_token)
        out["token_item"] = rows.target_item
    return out


def weighted_nll(out: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """Token-mean critique NLL over the input items (duplicates counted as often as they
    occur): equals ``losses.critique_nll`` of the unpacked batch."""
    if "token_logps" not in out:
        return out["scores"].sum() * 0.0
    w = weight.to(out["token_logps"].device)[out["token_item"]]
    return -(out["token_logps"] * w).sum() / w.sum()
