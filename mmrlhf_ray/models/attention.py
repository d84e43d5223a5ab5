"""The packed rows' block mask as block-sparse attention (FlexAttention), or as a dense mask.

A packed row (``mmrlhf_ray.models.packing``) lets token q attend token k iff ``k <= q``,
both in the same query, and k is in the prefix or in q's own branch (padding attends to
itself). Two ways to hand that rule to the language model:

* ``dense``: an additive ``(B, 1, L, L)`` float mask (``packing.block_mask``) through the
  model's own attention (sdpa / eager). Exact everywhere; the reference, and the CPU
  default. On a GPU an arbitrary dense mask takes sdpa off FlashAttention, costs L^2
  memory per row and still spends the FLOPs of every masked block.
* ``flex``: a FlexAttention ``BlockMask`` built from the rows' segment ids
  (``segment_block_mask``): the mask exists only per tile of ``BLOCK`` x ``BLOCK`` tokens
  (empty tiles skipped, full tiles unmasked, the ``mask_mod`` rule evaluated only inside
  partial tiles); no L x L tensor is ever made. On CUDA the language model's attention
  becomes transformers' ``flex_attention_forward`` (the compiled Triton kernel); the
  default there (``auto``).

The switch is one attention function, ``PACKED_ATTENTION_IMPL``, registered with
transformers' ``AttentionInterface``: given a ``BlockMask`` it runs FlexAttention, given
anything else it runs sdpa (with the mask transformers built). ``use_block_sparse(model)``
sets it on the language model's config only (the vision tower keeps its own
implementation), so the grouped forward and generation are unchanged.

On CPU PyTorch's FlexAttention has no backward (it raises ``NotImplementedError``), so on
CPU a ``BlockMask`` runs PyTorch's FlexAttention when no gradient is needed and, under
autograd, sdpa over the BlockMask expanded tile by tile (``expand_block_mask``: what the
kernel computes, as a mask). That is the CPU check of the tile structure, not of the kernel.

    kind = resolve_attention("auto", device)      # "flex" on CUDA, "dense" elsewhere
    mask = segment_block_mask(rows)               # BlockMask, (B, 1, L, L) in tiles
    use_block_sparse(model)                       # once: the LM's attention takes it
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from transformers import AttentionInterface
from transformers.integrations.flex_attention import flex_attention_forward, repeat_kv
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from mmrlhf_ray.models.families import unwrap

PackedAttention = Literal["auto", "flex", "dense"]
PACKED_ATTENTION = get_args(PackedAttention)
PACKED_ATTENTION_HELP = (
    "packed forward's block mask: flex (FlexAttention BlockMask, block-sparse) | dense "
    "(additive L x L mask, the reference) | auto (flex on CUDA, dense elsewhere)"
)
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
ATTN_IMPLEMENTATIONS = get_args(AttnImplementation)
PACKED_ATTENTION_IMPL = "mmrlhf_packed"  # sdpa, or FlexAttention when the mask is a BlockMask
BLOCK = 128  # FlexAttention's tile (query and key blocks)


def set_packed_attention(model: torch.nn.Module, kind: str) -> None:
    """Record the model's packed-forward attention (``auto``/``flex``/``dense``): what
    ``packing.packed_hidden`` uses when its caller names none."""
    resolve_attention(kind, "cpu")  # validates the name
    unwrap(model)._mmrlhf_packed_attention = kind


def packed_attention_of(model: torch.nn.Module) -> str:
    """The model's packed-forward attention (``set_packed_attention``; default ``auto``)."""
    return getattr(unwrap(model), "_mmrlhf_packed_attention", "auto")


def configure_attention(
    model: torch.nn.Module, attn_implementation: str = "", packed_attention: str = "auto"
) -> torch.nn.Module:
    """Set a loaded model's attention: ``attn_implementation`` (transformers' own, for the
    unpacked/grouped forward and the vision tower; '' keeps the load-time one) and the
    packed forward's ``packed_attention``. Returns the model."""
    hf = unwrap(model)
    if not hasattr(hf, "set_attn_implementation"):  # not a transformers model
        return model
    if attn_implementation and attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation: {attn_implementation!r} is not one of "
            f"{', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    if attn_implementation and hf.config._attn_implementation != attn_implementation:
        hf.set_attn_implementation(attn_implementation)
    set_packed_attention(hf, packed_attention)
    return model


def resolve_attention(kind: str, device: torch.device | str) -> str:
    """``flex`` or ``dense`` for the packed forward on ``device`` (``auto``: flex on CUDA)."""
    if kind not in PACKED_ATTENTION:
        raise ValueError(f"packed_attention: {kind!r} is not one of {', '.join(PACKED_ATTENTION)}")
    if kind == "auto":
        return "flex" if torch.device(device).type == "cuda" else "dense"
    return kind


def allowed_pairs(seg_query: torch.Tensor, seg_branch: torch.Tensor) -> torch.Tensor:
    """The rule as a dense bool ``(B, L, L)`` (True = attend): tests and the dense mask."""
    length = seg_query.shape[1]
    pos = torch.arange(length, device=seg_query.device)
    return _rule(seg_query, seg_branch, 0, pos[:, None], pos[None, :])


def _rule(sq: torch.Tensor, sb: torch.Tensor, b, q, k) -> torch.Tensor:
    """May token ``q`` of row ``b`` attend token ``k`` (broadcasting indices)."""
    if isinstance(b, int):  # whole rows: (B, Lq, Lk)
        sq_q, sq_k, sb_q, sb_k = sq[:, q], sq[:, k], sb[:, q], sb[:, k]
        q, k = q[None], k[None]
    else:  # FlexAttention's mask_mod: scalar-like index tensors
        sq_q, sq_k, sb_q, sb_k = sq[b, q], sq[b, k], sb[b, q], sb[b, k]
    ok = (k <= q) & (sq_q == sq_k) & (sq_k >= 0) & ((sb_k == -1) | (sb_k == sb_q))
    return ok | (q == k)


def _tile_stats(seg: torch.Tensor, pad: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """Per tile of ``n`` tiles: (min, max) of ``seg`` over non-padding tokens."""
    big = torch.iinfo(torch.long).max
    lo = seg.masked_fill(pad, big).view(seg.shape[0], n, -1).amin(-1)
    hi = seg.masked_fill(pad, -big).view(seg.shape[0], n, -1).amax(-1)
    return lo, hi


def segment_block_mask(
    seg_query: torch.Tensor, seg_branch: torch.Tensor, block: int = 0
) -> BlockMask:
    """The packed rows' rule as a FlexAttention ``BlockMask`` (B, 1, L, L), tile by tile.

    From per-tile ranges of the segment ids (never an L x L tensor): a key tile can hold
    an allowed key only if it is not after the query tile, the query ranges overlap, and
    it holds a prefix token or the branch ranges overlap (diagonal tiles always: padding
    attends itself); it is *full* (no ``mask_mod`` evaluated) when it lies strictly before
    the query tile, every token of both tiles is of one query, and the keys are all prefix
    or all of the queries' one branch. Conservative, never wrong: ``mask_mod`` decides
    inside every other non-empty tile. ``block``: tile size (default ``BLOCK``).
    """
    block = block or BLOCK
    b, length = seg_query.shape
    n = -(-length // block)
    extra = n * block - length
    sq = torch.nn.functional.pad(seg_query, (0, extra), value=-1)
    sb = torch.nn.functional.pad(seg_branch, (0, extra), value=-1)
    pad = sq < 0
    q_lo, q_hi = _tile_stats(sq, pad, n)
    bpad = pad | (sb < 0)
    b_lo, b_hi = _tile_stats(sb, bpad, n)
    has_prefix = (~pad & (sb < 0)).view(b, n, block).any(-1)
    any_pad = pad.view(b, n, block).any(-1)
    tile = torch.arange(n, device=sq.device)
    before = tile[None, :, None] >= tile[None, None, :]  # (1, n_q, n_k): k tile not after q
    diagonal = tile[:, None] == tile[None, :]
    overlap_q = (q_lo[:, :, None] <= q_hi[:, None, :]) & (q_lo[:, None, :] <= q_hi[:, :, None])
    overlap_b = (b_lo[:, :, None] <= b_hi[:, None, :]) & (b_lo[:, None, :] <= b_hi[:, :, None])
    some = before & (diagonal[None] | (overlap_q & (has_prefix[:, None, :] | overlap_b)))
    one_query = (q_lo == q_hi) & ~any_pad
    same_query = (
        one_query[:, :, None] & one_query[:, None, :] & (q_lo[:, :, None] == q_lo[:, None, :])
    )
    all_prefix = ~any_pad & (sb < 0).view(b, n, block).all(-1)
    one_branch = ~bpad.view(b, n, block).any(-1) & (b_lo == b_hi)
    same_branch = (
        one_branch[:, :, None] & one_branch[:, None, :] & (b_lo[:, :, None] == b_lo[:, None, :])
    )
    strictly_before = tile[None, :, None] > tile[None, None, :]
    full = strictly_before & same_query & (all_prefix[:, None, :] | same_branch)
    partial = some & ~full

    def mask_mod(bi, _h, qi, ki):  # padded ids: safe for indices up to n * block - 1
        return _rule(sq, sb, bi, qi, ki)

    def indices(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.sort((~tiles).to(torch.int8), dim=-1, stable=True).indices
        return tiles.sum(-1)[:, None].to(torch.int32), order[:, None].to(torch.int32)

    kv_num, kv_idx = indices(partial)
    full_num, full_idx = indices(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod,
        seq_lengths=(length, length),
    )  # fmt: skip


def expand_block_mask(mask: BlockMask) -> torch.Tensor:
    """What FlexAttention computes with ``mask``, as a bool ``(B, 1, L, L)``: full tiles
    True, partial tiles by ``mask_mod``, every other tile False (the CPU autograd path and
    the tests; materialises L x L, so never on the GPU path)."""
    q_len, k_len = mask.seq_lengths
    dense = mask.to_dense()  # (B, H, n_q, n_k) tiles holding any attended pair
    full = torch.zeros_like(dense)
    if mask.full_kv_num_blocks is not None:
        full = BlockMask.from_kv_blocks(
            mask.full_kv_num_blocks, mask.full_kv_indices, BLOCK_SIZE=mask.BLOCK_SIZE
        ).to_dense()
    rep = mask.BLOCK_SIZE

    def grow(t: torch.Tensor) -> torch.Tensor:
        t = t.repeat_interleave(rep[0], dim=-2).repeat_interleave(rep[1], dim=-1)
        return t[..., :q_len, :k_len].bool()

    q = torch.arange(q_len, device=dense.device)[:, None]
    k = torch.arange(k_len, device=dense.device)[None, :]
    b = torch.arange(dense.shape[0], device=dense.device)[:, None, None]
    by_rule = mask.mask_mod(b, 0, q[None], k[None])[:, None]
    return grow(full) | (grow(dense) & ~grow(full) & by_rule)


def _cpu_flex(module, query, key, value, mask: BlockMask, scaling=None, **_kw):
    """FlexAttention on CPU: PyTorch's kernel without autograd, else sdpa over the
    expanded tiles (PyTorch's CPU FlexAttention has no backward)."""
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        bool_mask = expand_block_mask(mask)
        return sdpa_attention_forward(module, query, key, value, bool_mask, scaling=scaling)
    if query.shape[1] != key.shape[1]:
        key = repeat_kv(key, query.shape[1] // key.shape[1])
        value = repeat_kv(value, query.shape[1] // value.shape[1])
    out = flex_attention(query, key, value, block_mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def packed_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """The language model's attention: FlexAttention for a ``BlockMask`` (the packed
    forward), sdpa for every other mask (the grouped forward, generation)."""
    if isinstance(attention_mask, BlockMask):
        if query.device.type == "cuda":
            return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
        return _cpu_flex(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PACKED_ATTENTION_IMPL, packed_attention_forward)
AttentionMaskInterface.register(PACKED_ATTENTION_IMPL, sdpa_mask)


def use_block_sparse(language_model: torch.nn.Module) -> None:
    """Let the language model take a ``BlockMask`` (idempotent; the vision tower and the
    dense path keep sdpa). Refuses FlashAttention-2, which takes no arbitrary mask."""
    config = language_model.config
    current = config._attn_implementation
    if current == PACKED_ATTENTION_IMPL:
        return
    if current not in ("sdpa", "eager", None):
        raise ValueError(
            f"packed_attention=flex: the language model runs {current!r}; load it with "
            "attn_implementation=sdpa (the grouped forward then runs sdpa too)"
        )
    config._attn_implementation_internal = PACKED_ATTENTION_IMPL
