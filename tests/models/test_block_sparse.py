"""The packed forward's block mask as a FlexAttention BlockMask == the dense mask (fp32, CPU).

Tiles of 16 tokens (``attention.BLOCK`` set small) so the tiny models' rows span many
tiles: empty, full and partial ones. On CPU, PyTorch's FlexAttention runs the forward
(no gradient); under autograd the BlockMask is expanded tile by tile and run by sdpa
(PyTorch's CPU FlexAttention has no backward), so the gradient check here is of the
tile structure; the kernel's own backward is checked by ``benchmarks/gpu_check.py``.

Tolerance: per-response log-prob sums of 15-140 tokens are of size 30-300 in fp32, whose
rounding is ~1e-7 relative, so ``atol=1e-5, rtol=1e-5`` (about 100 ulps of the sum);
gradients of the MM-DPO loss (entries up to ~1) at ``atol=1e-5, rtol=1e-4`` as in
``tests/dpo/test_packed_forward.py``.
"""

import pytest
import torch

from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.dpo import losses as L
from mmrlhf_ray.dpo.batching import encode_group
from mmrlhf_ray.dpo.packed import collate_packed, packed_logps
from mmrlhf_ray.models import attention
from mmrlhf_ray.models.attention import (
    allowed_pairs,
    expand_block_mask,
    resolve_attention,
    segment_block_mask,
    use_block_sparse,
)
from mmrlhf_ray.models.families import FAMILIES, load_model
from mmrlhf_ray.models.packing import PackedQuery, pack_queries
from mmrlhf_ray.training.freeze import freeze_vision
from tests.dpo.helpers import make_pairs

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _random_rows(seed: int, n_queries: int, width: int):
    """Packed rows of random queries: prefixes of 3-40 tokens, K = 2..6 branches of 1-30."""
    g = torch.Generator().manual_seed(seed)
    queries = []
    for _ in range(n_queries):
        p = int(torch.randint(3, 40, (1,), generator=g))
        prefix = torch.randint(5, 50, (p,), generator=g)
        items = []
        for _ in range(int(torch.randint(2, 7, (1,), generator=g))):
            t = int(torch.randint(1, 30, (1,), generator=g))
            ids = torch.cat([prefix, torch.randint(5, 50, (t,), generator=g)])
            items.append((ids, torch.cat([torch.full((p,), -100), ids[p:]])))
        queries.append(PackedQuery(prefix, torch.zeros(p, dtype=torch.long), {}, items))
    return pack_queries(queries, pad_token_id=0, max_row_tokens=width)


@pytest.mark.parametrize("seed,block", [(0, 8), (1, 16), (2, 32), (3, 16)])
def test_tiles_reproduce_the_dense_rule_exactly(seed, block):
    rows = _random_rows(seed, n_queries=7, width=400)
    assert rows.input_ids.shape[0] >= 2 and len({r for r, *_ in rows.prefix_at}) >= 2
    mask = segment_block_mask(rows.seg_query, rows.seg_branch, block=block)
    dense = allowed_pairs(rows.seg_query, rows.seg_branch)[:, None]
    assert torch.equal(expand_block_mask(mask), dense)
    n = -(-rows.input_ids.shape[1] // block)
    assert mask.kv_indices.shape == (rows.input_ids.shape[0], 1, n, n)
    partial = int(mask.kv_num_blocks.sum())
    full = int(mask.full_kv_num_blocks.sum())
    below_diagonal = rows.input_ids.shape[0] * n * (n + 1) // 2
    assert full > 0 and partial > 0 and full + partial < below_diagonal  # tiles skipped


def test_the_dense_rule_by_hand():
    """One row: prefix of 3, branches of 2 and 1, then 2 padding tokens."""
    sq = torch.tensor([[0, 0, 0, 0, 0, 0, -1, -1]])
    sb = torch.tensor([[-1, -1, -1, 0, 0, 1, -1, -1]])
    got = allowed_pairs(sq, sb)[0].int().tolist()
    assert got == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 1, 0, 0],  # branch 1 never sees branch 0
        [0, 0, 0, 0, 0, 0, 1, 0],  # padding: itself only
        [0, 0, 0, 0, 0, 0, 0, 1],
    ]
    mask = segment_block_mask(sq, sb, block=4)
    assert expand_block_mask(mask)[0, 0].int().tolist() == got


def test_resolve_and_refusals():
    assert resolve_attention("auto", "cpu") == "dense"
    assert resolve_attention("auto", "cuda") == "flex"
    assert resolve_attention("flex", "cpu") == "flex"
    with pytest.raises(ValueError, match="packed_attention: 'sparse' is not one of"):
        resolve_attention("sparse", "cpu")

    class Lm(torch.nn.Module):
        def __init__(self, impl):
            super().__init__()
            from transformers import Qwen2Config

            self.config = Qwen2Config(num_hidden_layers=1, hidden_size=8)
            self.config._attn_implementation = impl

    with pytest.raises(ValueError, match="attn_implementation=sdpa"):
        use_block_sparse(Lm("flash_attention_2"))
    lm = Lm("sdpa")
    use_block_sparse(lm)
    assert lm.config._attn_implementation == attention.PACKED_ATTENTION_IMPL


def _queries(tag: str, k: int, video: bool) -> list[dict]:
    rows = make_pairs(n_queries=1, k=k, seed=k, video_every=1 if video else 0)
    for r in rows:
        r["query_id"] = tag
        r["pair_id"] = f"{tag}-{r['pair_id']}"
        r["chosen_id"], r["rejected_id"] = f"{tag}-{r['chosen_id']}", f"{tag}-{r['rejected_id']}"
    return rows


def _mm_dpo_grads(model, logps, batch, params):
    ci, ri = batch.chosen_idx, batch.rejected_idx
    ref_c, ref_r = torch.full_like(logps[ci], -60.0), torch.full_like(logps[ri], -70.0)
    loss = L.mm_dpo_loss(logps[ci], logps[ri], ref_c, ref_r, batch.margins)[0].mean()
    return torch.autograd.grad(loss, params)


FAMILY_CASES = [
    pytest.param(name, marks=() if name == "qwen2-vl" else pytest.mark.slow) for name in FAMILIES
]


@pytest.mark.parametrize("name", FAMILY_CASES)
def test_flex_equals_dense_logps_and_gradients(name, family_models, monkeypatch):
    """Every family; images and videos; K = 2..6; several queries per row. Qwen2-VL in
    the default suite (~15 s: CPU FlexAttention is the unfused reference), the other four
    families ``-m slow`` (~15-25 s each)."""
    monkeypatch.setattr(attention, "BLOCK", 16)
    model, processor = load_model(family_models(name)["policy"])
    freeze_vision(model)
    rows = []
    for k, video in ((2, False), (3, True), (4, False), (5, True), (6, False)):
        rows += _queries(f"{name}-k{k}", k, video)
    groups, bad = group_pairs(rows)
    assert not bad and sorted(len(g.responses) for g in groups) == [2, 3, 4, 5, 6]
    enc = [encode_group(processor, g, max_response_tokens=16) for g in groups]
    width = max(len(e.prompt["input_ids"][0]) for e in enc) + 16 * 6 + 40
    batch = collate_packed(enc, processor.tokenizer.pad_token_id, max_row_tokens=width)
    per_row = [sum(1 for r, *_ in batch.rows.prefix_at if r == row) for row in range(2)]
    assert batch.rows.input_ids.shape[0] < 5 and max(per_row) >= 2  # queries share rows
    with torch.no_grad():
        dense, n_dense = packed_logps(model, batch, attention="dense")
        flex, n_flex = packed_logps(model, batch, attention="flex")  # PyTorch FlexAttention
    assert torch.equal(n_flex, n_dense) and dense.abs().min() > 1
    torch.testing.assert_close(flex, dense, **TOL)
    params = [p for p in model.parameters() if p.requires_grad]
    g_dense = _mm_dpo_grads(model, packed_logps(model, batch, attention="dense")[0], batch, params)
    g_flex = _mm_dpo_grads(model, packed_logps(model, batch, attention="flex")[0], batch, params)
    assert sum(float(g.abs().sum()) for g in g_dense) > 0
    for a, b in zip(g_flex, g_dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
