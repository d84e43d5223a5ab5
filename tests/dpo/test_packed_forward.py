"""The packed forward (prompt + media once, K responses behind a block mask, LM head at
response positions only) == the grouped forward (K rows per query), in fp32."""

import pytest
import torch

from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.dpo import losses as L
from mmrlhf_ray.dpo.batching import collate_groups, encode_group
from mmrlhf_ray.dpo.forward import grouped_logps
from mmrlhf_ray.dpo.packed import collate_packed, packed_logps
from mmrlhf_ray.dpo.reference import check_reference_logps, reference_logps
from mmrlhf_ray.models import load_policy
from mmrlhf_ray.models.families import FAMILIES, load_model
from mmrlhf_ray.models.packing import block_mask, chunked_token_logps, common_prefix_length
from mmrlhf_ray.training.freeze import freeze_vision
from tests.dpo.helpers import make_pairs

TOL = {"atol": 1e-5, "rtol": 1e-5}  # fp32: sums of 10-90 token log-probs of size ~2


def _rows(k: int, tag: str, video: bool = False, text_only: bool = False) -> list[dict]:
    rows = make_pairs(n_queries=1, k=k, seed=k, video_every=1 if video else 0)
    for r in rows:
        r["query_id"] = f"{tag}"
        r["pair_id"] = f"{tag}-{r['pair_id']}"
        r["chosen_id"], r["rejected_id"] = f"{tag}-{r['chosen_id']}", f"{tag}-{r['rejected_id']}"
        if text_only:
            r.pop("image", None)
    return rows


@pytest.fixture(scope="module")
def setup(policy_dir):
    torch.manual_seed(0)
    model, processor = load_policy(policy_dir)
    rows = (
        _rows(2, "img-k2")
        + _rows(3, "vid-k3", video=True)
        + _rows(4, "img-k4")
        + _rows(5, "vid-k5", video=True)
        + _rows(6, "img-k6")
        + _rows(3, "txt-k3", text_only=True)
    )
    groups, quarantine = group_pairs(rows)  # sorted by query id: put back in row order
    order = list(dict.fromkeys(r["query_id"] for r in rows))
    groups.sort(key=lambda g: order.index(g.query_id))
    assert not quarantine and [len(g.responses) for g in groups] == [2, 3, 4, 5, 6, 3]
    return model, processor, groups


def _both(processor, groups, max_response_tokens=256, max_row_tokens=0):
    enc = [encode_group(processor, g, max_response_tokens) for g in groups]
    pad = processor.tokenizer.pad_token_id
    return collate_groups(enc, pad), collate_packed(enc, pad, max_row_tokens)


def test_packed_logps_equal_grouped_images_video_k2_to_6(setup):
    model, processor, groups = setup
    grouped, packed = _both(processor, groups)
    assert packed.n_rows == grouped.n_rows == 23 and packed.n_pairs == grouped.n_pairs == 38
    assert torch.equal(packed.chosen_idx, grouped.chosen_idx)
    lengths = (grouped.labels != -100).sum(1)
    assert len(set(lengths.tolist())) > 5  # responses of unequal length
    # every prompt token is computed once: packed tokens = sum of prompts + responses
    prompt_tokens = sum(p for _, _, p in packed.rows.prefix_at)
    assert int((packed.rows.seg_query >= 0).sum()) == prompt_tokens + int(lengths.sum())
    with torch.no_grad():
        ref, n_ref = grouped_logps(model, grouped)
        got, n_got = packed_logps(model, packed)
    assert torch.equal(n_got, n_ref)
    torch.testing.assert_close(got, ref, **TOL)


def test_several_queries_per_row_and_truncation(setup):
    model, processor, groups = setup
    grouped, packed = _both(processor, groups, max_response_tokens=7, max_row_tokens=4096)
    assert packed.rows.input_ids.shape[0] == 1  # all six queries in one row
    with torch.no_grad():
        ref, n_ref = grouped_logps(model, grouped)
        got, n_got = packed_logps(model, packed)
    assert n_ref.max() == 7 and torch.equal(n_got, n_ref)  # truncated at 7 tokens
    torch.testing.assert_close(got, ref, **TOL)


def test_mm_dpo_gradients_equal_grouped(setup):
    model, processor, groups = setup
    freeze_vision(model)
    grouped, packed = _both(processor, groups)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def grads(logps, batch):
        ci, ri = batch.chosen_idx, batch.rejected_idx
        ref_c, ref_r = torch.full_like(logps[ci], -60.0), torch.full_like(logps[ri], -70.0)
        loss = L.mm_dpo_loss(logps[ci], logps[ri], ref_c, ref_r, batch.margins)[0].mean()
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for _, p in params]

    g_ref = grads(grouped_logps(model, grouped)[0], grouped)
    g_got = grads(packed_logps(model, packed)[0], packed)
    merger = [i for i, (n, _) in enumerate(params) if "merger" in n]
    assert merger and g_got[merger[0]].abs().sum() > 0  # the projector gets gradients
    for (name, _), a, b in zip(params, g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_block_mask_rule(setup):
    _, processor, groups = setup
    _, packed = _both(processor, groups[:1])  # one query, K = 2
    rows = packed.rows
    (_r, start, p), (_, a0, t0, _), (_, a1, t1, _) = rows.prefix_at[0], *rows.branch_at
    allowed = block_mask(rows, torch.float32)[0, 0] == 0
    assert allowed[a0 + t0 - 1, : start + p].all()  # a response sees the whole prompt
    assert not allowed[a1, a0 : a0 + t0].any()  # ... never another response
    assert allowed[a1 + t1 - 1, a1 : a1 + t1].all() and not allowed[a1, a1 + 1]  # causal
    assert not allowed[start + p - 1, a0]  # the prompt never sees a response


def test_chunked_head_equals_full_log_softmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    h = torch.randn(37, 16, requires_grad=True)
    tokens = torch.randint(0, 50, (37,))
    full = head(h).log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)
    chunked = chunked_token_logps(head, h, tokens, chunk=8)
    torch.testing.assert_close(chunked, full)
    (g_full,) = torch.autograd.grad(full.sum(), h)
    (g_chunk,) = torch.autograd.grad(chunked.sum(), h)
    torch.testing.assert_close(g_chunk, g_full)


def test_common_prefix_length():
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 5])
    assert common_prefix_length([a, b]) == 2 and common_prefix_length([a, a]) == 4


@pytest.mark.parametrize("name", list(FAMILIES))
def test_packed_equals_grouped_for_every_family(name, family_models):
    """Every family of the family layer: images, a video query, K = 3 (fp32)."""
    model, processor = load_model(family_models(name)["policy"])
    groups, bad = group_pairs(make_pairs(n_queries=3, k=3, video_every=3))
    assert not bad
    grouped, packed = _both(processor, groups)
    with torch.no_grad():
        ref, n_ref = grouped_logps(model, grouped)
        got, n_got = packed_logps(model, packed)
    assert torch.equal(n_got, n_ref)
    torch.testing.assert_close(got, ref, **TOL)


def test_reference_from_the_other_forward_kind_is_checked_equal(setup):
    """train-dpo with forward=packed over ref-logps made with forward=grouped: re-scored
    queries must agree, a wrong stored value is named."""
    model, processor, groups = setup
    scored = reference_logps(model, processor, groups[:2], forward="grouped")
    by_id = {(s["query_id"], s["response_id"]): s["ref_logp"] for s in scored}
    for g in groups[:2]:
        g.ref_logps = [by_id[(g.query_id, r)] for r in g.response_ids]
    assert check_reference_logps(model, processor, groups[:2], "packed") < 1e-4
    groups[1].ref_logps[2] += 0.5
    with pytest.raises(ValueError, match=f"response {groups[1].response_ids[2]}"):
        check_reference_logps(model, processor, groups[:2], "packed")
    for g in groups[:2]:
        g.ref_logps = [None] * len(g.response_ids)
