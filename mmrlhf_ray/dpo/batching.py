"""Query-grouped batches: every pair of a query from one forward per response.

A batch is a set of queries. Query q's prompt (with its images) is processed once; each
of its K_q unique responses becomes one row ``prompt + response`` (labels on the
response only), and the pairs of the query index those rows. The vision inputs are kept
once per query (not per row, as the family's processor gave them): ``forward.grouped_logps``
runs the vision tower once per query and hands the features to all of its rows.

    encoded = [encode_group(processor, g) for g in groups]
    batch = collate_groups(encoded, pad_token_id)
    # batch.chosen_idx[p], batch.rejected_idx[p]: rows of pair p
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mmrlhf_ray.data.groups import QueryGroup
from mmrlhf_ray.data.media import is_video, row_images
from mmrlhf_ray.models.encoding import IGNORE_INDEX, encode_prompt, end_of_turn
from mmrlhf_ray.models.families import TEXT_KEYS


@dataclass
class EncodedQuery:
    """One query's prompt tensors (batch of 1) and its responses' token ids."""

    group: QueryGroup
    prompt: dict[str, torch.Tensor]
    response_ids: list[torch.Tensor]  # each (T_i,), closed by <|im_end|>


@dataclass(kw_only=True)
class PairIndex:
    """R responses of Q queries (query-major) and P pairs pointing at them: what the
    losses read of a batch, whichever the layout (grouped rows or packed segments)."""

    row_query: torch.Tensor  # (R,) query index of each response
    chosen_idx: torch.Tensor  # (P,) response index of each pair's chosen response
    rejected_idx: torch.Tensor  # (P,)
    margins: torch.Tensor  # (P,) reward margin delta (NaN when absent)
    ref_logps: torch.Tensor  # (R,) reference log-prob per response (NaN when absent)
    pair_ids: list[str] = field(default_factory=list)
    query_ids: list[str] = field(default_factory=list)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def n_pairs(self) -> int:
        return int(self.chosen_idx.numel())

    @property
    def n_rows(self) -> int:
        return int(self.row_query.numel())

    def to(self, device):
        """The batch with every tensor on ``device`` (index tensors included)."""
        return type(self)(**{k: _on(v, device) for k, v in self.__dict__.items()})


def _on(value, device):
    """``value`` moved to ``device``: tensors (and objects with ``.to``), in lists/dicts."""
    if isinstance(value, list):
        return [_on(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _on(v, device) for k, v in value.items()}
    return value.to(device) if hasattr(value, "to") else value


def index_pairs(encoded: list[EncodedQuery]) -> dict:
    """The ``PairIndex`` fields of ``encoded``: each query's K_q responses in turn, its
    pairs pointing at them, reference log-probs and margins NaN where absent."""
    row_query, ref, chosen, rejected, margins, pair_ids = [], [], [], [], [], []
    for q, eq in enumerate(encoded):
        offset = len(row_query)
        for i in range(len(eq.response_ids)):
            row_query.append(q)
            value = eq.group.ref_logps[i] if i < len(eq.group.ref_logps) else None
            ref.append(float("nan") if value is None else float(value))
        for p in eq.group.pairs:
            chosen.append(offset + p.chosen), rejected.append(offset + p.rejected)
            margins.append(float("nan") if p.margin is None else p.margin)
            pair_ids.append(p.pair_id)
    return dict(
        row_query=torch.tensor(row_query),
        chosen_idx=torch.tensor(chosen, dtype=torch.long),
        rejected_idx=torch.tensor(rejected, dtype=torch.long),
        margins=torch.tensor(margins, dtype=torch.float32),
        ref_logps=torch.tensor(ref, dtype=torch.float32),
        pair_ids=pair_ids,
        query_ids=[eq.group.query_id for eq in encoded],
    )


@dataclass(kw_only=True)
class GroupedBatch(PairIndex):
    """R response rows (one per response) of Q queries, and P pairs pointing at rows."""

    input_ids: torch.Tensor  # (R, L)
    attention_mask: torch.Tensor  # (R, L)
    labels: torch.Tensor  # (R, L), -100 off the response
    mm_token_type_ids: torch.Tensor  # (R, L) 0 text, 1 image, 2 video
    query_media: list[dict[str, torch.Tensor]] = field(default_factory=list)
    # query_media[q]: query q's media tensors as its processor gave them (batch of 1:
    # pixels, grids, sizes ...), {} for a text-only query


def encode_group(
    processor, group: QueryGroup, max_response_tokens: int = 256, max_frames: int = 4
) -> EncodedQuery:
    """Run the processor once for the query's prompt and tokenise its K responses.

    The prompt and response encodings are the ones SFT uses
    (``mmrlhf_ray.models.encoding``), so log-probs match across stages. Raises
    ``MediaError`` (naming the field) when the query's media cannot be decoded.
    """
    images = row_images(group.media, max_frames=max_frames)
    prompt = encode_prompt(processor, group.question, images, video=is_video(group.media))
    prompt.pop("attention_mask", None)
    tok = getattr(processor, "tokenizer", processor)
    eot = end_of_turn(processor)
    responses = [
        tok(text + eot, add_special_tokens=False, return_tensors="pt").input_ids[
            0, :max_response_tokens
        ]
        for text in group.responses
    ]
    return EncodedQuery(group, prompt, responses)


def _rows_of(eq: EncodedQuery) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, labels, mm_token_type_ids) 1-D rows of one query, one per response."""
    prompt_ids = eq.prompt["input_ids"][0]
    prompt_types = eq.prompt.get("mm_token_type_ids")
    prompt_types = torch.zeros_like(prompt_ids) if prompt_types is None else prompt_types[0]
    rows = []
    for resp in eq.response_ids:
        ids = torch.cat([prompt_ids, resp])
        labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), resp])
        types = torch.cat([prompt_types, torch.zeros_like(resp)])
        rows.append((ids, labels, types))
    return rows


def _pad(seqs: list[torch.Tensor], length: int, value: int) -> torch.Tensor:
    return torch.stack([F.pad(s, (0, length - s.numel()), value=value) for s in seqs])


def collate_groups(encoded: list[EncodedQuery], pad_token_id: int) -> GroupedBatch:
    """Stack the K_q rows of every query (right-padded) and index the pairs into them."""
    if not encoded:
        raise ValueError("collate_groups: no queries")
    ids, labels, types, media = [], [], [], []
    for eq in encoded:
        for r_ids, r_labels, r_types in _rows_of(eq):
            ids.append(r_ids), labels.append(r_labels), types.append(r_types)
        media.append(
            {
                k: v
                for k, v in eq.prompt.items()
                if k not in TEXT_KEYS and isinstance(v, torch.Tensor)
            }
        )
    length = max(s.numel() for s in ids)
    return GroupedBatch(
        input_ids=_pad(ids, length, pad_token_id),
        attention_mask=_pad([torch.ones_like(s) for s in ids], length, 0),
        labels=_pad(labels, length, IGNORE_INDEX),
        mm_token_type_ids=_pad(types, length, 0),
        query_media=media,
        **index_pairs(encoded),
    )
