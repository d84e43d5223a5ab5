"""The reward model's packed forward (items sharing question + images computed once) gives
the scores, the joint loss and its gradients of the unpacked forward (one row per item)."""

import torch

from mmrlhf_ray.reward.data import collate_reward_pairs, pairs_from_rows, reward_loss_fn
from mmrlhf_ray.reward.losses import RewardLossWeights
from mmrlhf_ray.reward.packed import pack_items

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _pairs(toy_rows, n_queries=3):
    pairs, bad = pairs_from_rows(toy_rows[: 3 * n_queries], "auto")
    assert not bad and len(pairs) == 3 * n_queries
    return pairs


def test_packed_scores_equal_unpacked_and_prefix_is_shared(fresh_reward_model, toy_rows):
    model = fresh_reward_model.eval()
    pairs = _pairs(toy_rows)
    items = [p.chosen for p in pairs] + [p.rejected for p in pairs]  # 18 items, 9 unique
    rows, index, weight = pack_items(model.processor, model.meta, items)
    assert rows.n_items == 9 and len(rows.prefix_at) == 3  # 3 queries x 3 responses
    assert weight.sum() == 18 and index.shape == (18,)
    distinct = {(i.question, i.response, i.critique): i for i in items}.values()
    unique = sum(int(model.encode([i])["input_ids"].shape[1]) for i in distinct)
    prefixes = [p for _, _, p in rows.prefix_at]
    assert min(prefixes) > 40  # instruction + image + question: computed once per query
    assert int((rows.seg_query >= 0).sum()) == unique - 2 * sum(prefixes)
    model.forward_kind = "grouped"
    ref = model.score(items, batch_size=18)
    model.forward_kind = "packed"
    got = model.score(items, batch_size=18)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), **TOL)


def test_packed_joint_loss_and_gradients_equal_unpacked(fresh_reward_model, toy_rows):
    model = fresh_reward_model.train()
    model.head.dropout.p = 0.0  # deterministic for the comparison
    pairs = _pairs(toy_rows, n_queries=2)
    pairs[1].is_tie = True
    weights = RewardLossWeights()
    params = [p for p in model.parameters() if p.requires_grad]

    def run(forward):
        batch = collate_reward_pairs(pairs, model.processor, model.meta, forward=forward)
        model.zero_grad()
        loss, parts = reward_loss_fn(model, batch, weights)
        loss.backward()
        return parts, [p.grad.clone() if p.grad is not None else None for p in params]

    parts_ref, g_ref = run("grouped")
    parts_got, g_got = run("packed")
    for key in ("loss", "critique", "score", "tie", "center"):
        assert abs(parts_got[key] - parts_ref[key]) < 1e-5, key
    for a, b in zip(g_got, g_ref, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    model.head.dropout.p = model.meta.head_dropout
