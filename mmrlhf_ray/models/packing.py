"""One forward per query: a shared prefix (prompt + media) and its K branches, packed.

A query's K sequences ``prefix + branch_i`` share the prefix (the chat prompt with every
image/video token). Instead of K rows that each recompute the prefix, the query becomes
one segment ``[prefix, branch_1, ..., branch_K]`` of a packed row:

* **block mask**: token q may attend token k iff ``k <= q``, both in the same query, and
  k is in the prefix or in q's own branch (never another branch, never another query);
* **positions**: the prefix keeps the positions it has alone (M-RoPE rows from the
  model's rope-index helper for the Qwen families, ``arange`` otherwise); every branch
  continues at ``position(last prefix token) + 1`` on every row, as if it were alone;
* **response-only LM head**: only the hidden states that predict a labelled token go
  through the LM head, in chunks (``chunked_token_logps``), so the logits never exist
  for the prefix and never for more than ``chunk`` positions at a time.

Several queries share a row when they fit within the longest query's length (first-fit
decreasing), so packing adds no row width. Everything family-specific sits in three small
functions at the bottom (``language_parts``, ``prompt_positions``) and ``_media_inputs``,
all three asking the model's ``Family`` (``mmrlhf_ray.models.families``).

    rows = pack_queries([PackedQuery(prefix_ids, prefix_types, media, items), ...], pad_id)
    hidden = packed_hidden(model, rows)                      # (B, L, H)
    logps = chunked_token_logps(lm_head, hidden[rows.target_row, rows.target_pos], rows.target_token)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

from mmrlhf_ray.models.attention import (
    allowed_pairs,
    packed_attention_of,
    resolve_attention,
    segment_block_mask,
    use_block_sparse,
)
from mmrlhf_ray.models.encoding import IGNORE_INDEX
from mmrlhf_ray.models.families import TEXT_KEYS, family_of, unwrap

LOGITS_BUDGET = 64 << 20  # bytes of fp32 logits alive at once in the chunked LM head


@dataclass
class PackedQuery:
    """One query: its shared prefix and the full token sequences of its items.

    ``items[i] = (ids, labels)`` are whole sequences ``prefix + branch_i`` (1-D) whose
    first ``len(prefix_ids)`` tokens equal the prefix; ``labels`` are ``-100`` where no
    log-prob is wanted. ``media`` is the query's media once, as the family's processor
    gave it (pixels, grids, sizes ...; ``{}`` for a text-only query).
    """

    prefix_ids: torch.Tensor  # (P,)
    prefix_types: torch.Tensor  # (P,) 0 text, 1 image, 2 video (0 for 1-D families)
    media: dict[str, torch.Tensor]
    items: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class PackedRows:
    """Packed rows of Q queries and their N items, and where each item is read."""

    input_ids: torch.Tensor  # (B, L)
    mm_token_type_ids: torch.Tensor  # (B, L)
    seg_query: torch.Tensor  # (B, L) query index of each token, -1 on padding
    seg_branch: torch.Tensor  # (B, L) item index (global) of a branch token, -1 prefix/pad
    prefix_at: list[tuple[int, int, int]]  # per query (row, start, P)
    branch_at: list[tuple[int, int, int, int]]  # per item (row, start, length, query)
    target_row: torch.Tensor  # (T,) row of the position predicting each labelled token
    target_pos: torch.Tensor  # (T,)
    target_token: torch.Tensor  # (T,)
    target_item: torch.Tensor  # (T,) item of each labelled token
    last_row: torch.Tensor  # (N,) row of each item's last token
    last_pos: torch.Tensor  # (N,)
    media: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per query

    @property
    def n_items(self) -> int:
        return int(self.last_row.numel())

    def to(self, device) -> PackedRows:
        moved = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v
            for k, v in self.__dict__.items()
            if k != "media"
        }
        media = [{k: v.to(device) for k, v in q.items()} for q in self.media]
        return PackedRows(**moved, media=media)


def media_tensors(encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The media tensors of a processor output (everything but the per-token text keys)."""
    return {k: v for k, v in encoded.items() if k not in TEXT_KEYS and isinstance(v, torch.Tensor)}


def common_prefix_length(seqs: list[torch.Tensor]) -> int:
    """Length of the longest common prefix of 1-D token tensors."""
    n = min(int(s.numel()) for s in seqs)
    first = seqs[0][:n]
    same = torch.ones(n, dtype=torch.bool)
    for s in seqs[1:]:
        same &= s[:n] == first
    diff = (~same).nonzero()
    return int(diff[0]) if diff.numel() else n


def _first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Query indices per row: first-fit decreasing into rows of ``capacity`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for q in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[q] <= free:
                rows[r].append(q)
                room[r] -= lengths[q]
                break
        else:
            rows.append([q])
            room.append(capacity - lengths[q])
    return rows


def _check_query(q: int, query: PackedQuery) -> int:
    p = int(query.prefix_ids.numel())
    if p < 1:
        raise ValueError(f"query {q}: empty prefix")
    for i, (ids, labels) in enumerate(query.items):
        if ids.numel() <= p or not torch.equal(ids[:p], query.prefix_ids):
            raise ValueError(f"query {q} item {i}: does not extend the prefix by >= 1 token")
        if labels.shape != ids.shape:
            raise ValueError(f"query {q} item {i}: labels and ids differ in shape")
    if query.prefix_types[-1] != 0:
        raise ValueError(f"query {q}: the prefix must end with a text token")
    return p + sum(int(ids.numel()) - p for ids, _ in query.items)


def _place(
    query: PackedQuery, q: int, r: int, start: int, first: int, cols: dict, out: dict
) -> int:
    """Write query ``q`` into row ``r`` from column ``start`` (its items are numbered from
    ``first``); record its prefix, branches, labelled tokens and last tokens. Returns the
    column after it."""
    p = int(query.prefix_ids.numel())
    cols["ids"][r, start : start + p] = query.prefix_ids
    cols["types"][r, start : start + p] = query.prefix_types
    cols["seg_q"][r, start : start + p] = q
    out["prefix_at"][q] = (r, start, p)
    at = start + p
    for n, (item_ids, labels) in enumerate(query.items, start=first):
        t = int(item_ids.numel()) - p
        cols["ids"][r, at : at + t] = item_ids[p:]
        cols["seg_q"][r, at : at + t] = q
        cols["seg_b"][r, at : at + t] = n
        out["branch_at"][n] = (r, at, t, q)

        def column(j: int, at: int = at) -> int:  # packed column of the item's token j
            return start + j if j < p else at + j - p

        for j in (labels[1:] != IGNORE_INDEX).nonzero().flatten().tolist():
            out["targets"].append((r, column(j), int(labels[j + 1]), n))
        out["last"][n] = (r, column(int(item_ids.numel()) - 1))
        at += t
    return at


def pack_queries(
    queries: list[PackedQuery], pad_token_id: int, max_row_tokens: int = 0
) -> PackedRows:
    """Lay the queries out in packed rows (see the module docstring).

    ``max_row_tokens`` 0: rows as wide as the longest query (queries share a row only
    where they fit in that width, so packing never widens the attention).
    """
    if not queries:
        raise ValueError("pack_queries: no queries")
    lengths = [_check_query(q, query) for q, query in enumerate(queries)]
    width = max(max(lengths), max_row_tokens)
    layout = _first_fit(lengths, width)
    shape = (len(layout), width)
    cols = {
        "ids": torch.full(shape, pad_token_id, dtype=torch.long),
        "types": torch.zeros(shape, dtype=torch.long),
        "seg_q": torch.full(shape, -1, dtype=torch.long),
        "seg_b": torch.full(shape, -1, dtype=torch.long),
    }
    first = [sum(len(x.items) for x in queries[:q]) for q in range(len(queries))]
    n_items = sum(len(x.items) for x in queries)
    out = {
        "prefix_at": [None] * len(queries),
        "branch_at": [None] * n_items,
        "targets": [],
        "last": [None] * n_items,
    }
    for r, members in enumerate(layout):
        start = 0
        for q in sorted(members):
            start = _place(queries[q], q, r, start, first[q], cols, out)
    tgt = torch.tensor(out["targets"], dtype=torch.long).reshape(-1, 4)
    last = torch.tensor(out["last"], dtype=torch.long).reshape(-1, 2)
    return PackedRows(
        cols["ids"], cols["types"], cols["seg_q"], cols["seg_b"],
        out["prefix_at"], out["branch_at"],
        tgt[:, 0], tgt[:, 1], tgt[:, 2], tgt[:, 3], last[:, 0], last[:, 1],
        media=[q.media for q in queries],
    )  # fmt: skip


def block_mask(rows: PackedRows, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``(B, 1, L, L)`` mask: 0 where a query may attend a key, dtype-min elsewhere.

    Allowed: key <= query, same query segment, key in the prefix or in the query's own
    branch. Padding attends to itself only. Additive float is exact for sdpa and eager.
    The dense reference of ``attention.segment_block_mask`` (the same rule in tiles).
    """
    allowed = allowed_pairs(rows.seg_query, rows.seg_branch)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def packed_positions(model, rows: PackedRows) -> torch.Tensor:
    """Position ids of the packed rows: ``(D, B, L)`` for M-RoPE (D = 3), else ``(B, L)``."""
    per_query = [prompt_positions(model, rows, q) for q in range(len(rows.prefix_at))]
    d = per_query[0].shape[0]
    b, length = rows.input_ids.shape
    pos = torch.zeros((d, b, length), dtype=torch.long, device=rows.input_ids.device)
    pos += torch.arange(length, device=pos.device)  # padding: harmless increasing ids
    for (r, start, p), prompt_pos in zip(rows.prefix_at, per_query, strict=True):
        pos[:, r, start : start + p] = prompt_pos
    for r, start, t, q in rows.branch_at:
        nxt = per_query[q][:, -1:] + 1  # the text after the prompt continues from its end
        pos[:, r, start : start + t] = nxt + torch.arange(t, device=pos.device)
    return pos if d > 1 else pos[0]


def _media_inputs(model, rows: PackedRows) -> dict:
    """``mm_encoder_outputs`` (tower + projector once per query, ``Family.encode_vision``)
    and the per-media tensors the forward takes, in the order the queries' placeholder
    tokens appear in the packed rows."""
    family = family_of(model)
    order = sorted(range(len(rows.prefix_at)), key=lambda q: rows.prefix_at[q][:2])
    media = [rows.media[q] for q in order]
    feats = [family.encode_vision(model, m) if m else {} for m in media]
    encoder_outputs = family.repeat_for_rows(feats, range(len(order)))
    return {
        "mm_encoder_outputs": encoder_outputs or None,
        **family.row_inputs(media, range(len(order))),
    }


def packed_mask(model, rows: PackedRows, attention: str | None = None):
    """The block mask the LLM gets: a FlexAttention ``BlockMask`` (``flex``; the language
    model's attention is switched to take it) or the dense additive mask (``dense``);
    ``None``: the model's own setting (``attention.configure_attention``, default auto)."""
    attention = attention or packed_attention_of(model)
    base, _ = language_parts(model)
    weight = next(base.parameters())
    if resolve_attention(attention, rows.input_ids.device) == "dense":
        return block_mask(rows, weight.dtype)
    use_block_sparse(family_of(model).language_model(model))
    return segment_block_mask(rows.seg_query, rows.seg_branch)


def packed_hidden(
    model, rows: PackedRows, frozen_vision: bool = True, attention: str | None = None
) -> torch.Tensor:
    """Final hidden states ``(B, L, H)`` of the packed rows (one LLM forward).

    Under autograd the call goes through ``model`` itself (a DeepSpeed engine runs its
    hooks) with an empty ``logits_to_keep``, reading the last hidden states; without
    autograd the base model is called and no per-layer states are kept. The vision
    tower keeps no activations when its parameters are frozen (``freeze_vision``), so
    ``frozen_vision`` only documents the caller's intent, as in ``grouped_logps``.
    ``attention``: the block mask dense or block-sparse (``packed_mask``).
    """
    del frozen_vision
    base, _ = language_parts(model)
    kwargs = dict(
        input_ids=rows.input_ids,
        attention_mask=packed_mask(model, rows, attention),
        position_ids=packed_positions(model, rows),
        use_cache=False,
        **_media_inputs(model, rows),
    )
    if not torch.is_grad_enabled():
        return base(**kwargs).last_hidden_state
    none = torch.zeros(0, dtype=torch.long, device=rows.input_ids.device)
    return model(**kwargs, logits_to_keep=none, output_hidden_states=True).hidden_states[-1]


def _chunk_logps(lm_head, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    logits = lm_head(h).float()
    return logits.gather(1, tokens[:, None]).squeeze(1) - logits.logsumexp(-1)


def chunked_token_logps(
    lm_head, hidden: torch.Tensor, tokens: torch.Tensor, chunk: int = 0
) -> torch.Tensor:
    """``log softmax(lm_head(hidden))[token]`` per row of ``hidden`` (T, H) -> (T,).

    The LM head runs on ``chunk`` rows at a time (default: as many as fit in
    ``LOGITS_BUDGET`` bytes of fp32 logits); under autograd each chunk is checkpointed,
    so its logits are recomputed in backward instead of kept: peak logits memory is one
    chunk in both passes.
    """
    weight = getattr(lm_head, "weight", None)
    shape = getattr(weight, "ds_shape", None) or getattr(weight, "shape", None)  # ZeRO-3
    vocab = int(shape[0]) if shape and int(shape[0]) else 32768
    chunk = chunk or max(16, LOGITS_BUDGET // (4 * vocab))
    grad = torch.is_grad_enabled() and hidden.requires_grad
    parts = []
    for s in range(0, hidden.shape[0], chunk):
        h, t = hidden[s : s + chunk], tokens[s : s + chunk]
        if grad:
            parts.append(checkpoint(_chunk_logps, lm_head, h, t, use_reentrant=False))
        else:
            parts.append(_chunk_logps(lm_head, h, t))
    if not parts:
        return hidden.new_zeros(0, dtype=torch.float32)
    return torch.cat(parts)


def head_logps(lm_head, hidden: torch.Tensor, tokens: torch.Tensor, chunk: int = 0):
    """``log softmax(lm_head(hidden))[token]`` (T,): Liger's fused linear + cross-entropy
    where it runs (``fused_head.fused_token_logps``: CUDA, liger-kernel installed, the
    head's weight not partitioned by ZeRO-3), the chunked torch head elsewhere."""
    from mmrlhf_ray.models.fused_head import fused_token_logps

    fused = fused_token_logps(lm_head, hidden, tokens)
    return fused if fused is not None else chunked_token_logps(lm_head, hidden, tokens, chunk)


def item_logps(
    model,
    rows: PackedRows,
    frozen_vision: bool = True,
    chunk: int = 0,
    attention: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of each item's labelled tokens and their count: ``((N,), (N,))``."""
    hidden = packed_hidden(model, rows, frozen_vision, attention)
    _, lm_head = language_parts(model)
    picked = hidden[rows.target_row, rows.target_pos]
    logps = head_logps(lm_head, picked, rows.target_token, chunk)
    sums = logps.new_zeros(rows.n_items).index_add(0, rows.target_item, logps)
    counts = torch.bincount(rows.target_item, minlength=rows.n_items)
    return sums, counts


# ---- family-specific: the only places that know a model family --------------------------
def language_parts(model):
    """(the family's ``*Model`` returning ``last_hidden_state``, its LM head)."""
    hf = unwrap(model)  # through DeepSpeed / reward-model wrappers
    return getattr(hf, "model", hf), hf.get_output_embeddings()


def prompt_positions(model, rows: PackedRows, q: int) -> torch.Tensor:
    """Positions ``(D, P)`` of query ``q``'s prefix as if it were alone in a sequence:
    M-RoPE rows (D = 3) from the model's rope-index helper for the Qwen families,
    ``arange`` (D = 1) for the others (``Family.prompt_position_ids``)."""
    r, start, p = rows.prefix_at[q]
    inputs = {
        "input_ids": rows.input_ids[r, start : start + p][None],
        "mm_token_type_ids": rows.mm_token_type_ids[r, start : start + p][None],
        **rows.media[q],
    }
    pos = family_of(model).prompt_position_ids(model, inputs)
    return pos[:, 0] if pos.dim() == 3 else pos
