"""All pairs of a query from one forward per response == each pair forwarded alone."""

import pytest
import torch

from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.dpo import losses as L
from mmrlhf_ray.dpo.batching import collate_groups, encode_group
from mmrlhf_ray.dpo.config import LossConfig
from mmrlhf_ray.dpo.forward import grouped_logps, per_pair_logps
from mmrlhf_ray.dpo.objective import LossState, preference_loss
from mmrlhf_ray.models import load_policy
from mmrlhf_ray.training.freeze import freeze_vision
from tests.dpo.helpers import make_pairs


@pytest.fixture(scope="module")
def setup(policy_dir):
    torch.manual_seed(0)
    model, processor = load_policy(policy_dir)
    groups, quarantine = group_pairs(make_pairs(n_queries=3, k=4, video_every=3))
    assert not quarantine
    return model, processor, groups


def _batch(processor, groups):
    return collate_groups(
        [encode_group(processor, g) for g in groups], processor.tokenizer.pad_token_id
    )


def test_grouped_forward_equals_per_pair(setup):
    model, processor, groups = setup
    batch = _batch(processor, groups)
    assert (batch.n_queries, batch.n_rows, batch.n_pairs) == (3, 12, 18)
    assert "pixel_values_videos" in batch.query_media[2]  # q2 is a video query
    assert "pixel_values" in batch.query_media[0]
    with torch.no_grad():
        logps, n_tokens = grouped_logps(model, batch)
        chosen, rejected = zip(*[per_pair_logps(model, processor, g) for g in groups], strict=True)
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    torch.testing.assert_close(logps[batch.chosen_idx], chosen, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(logps[batch.rejected_idx], rejected, atol=1e-4, rtol=1e-5)
    # per-pair MM-DPO losses match too (reference: a fixed offset so h != 0)
    ref_c, ref_r = chosen.detach() - 0.3, rejected.detach() + 0.2
    delta = batch.margins
    grouped_loss = L.mm_dpo_loss(
        logps[batch.chosen_idx], logps[batch.rejected_idx], ref_c, ref_r, delta
    )[0]
    pair_loss = L.mm_dpo_loss(chosen, rejected, ref_c, ref_r, delta)[0]
    torch.testing.assert_close(grouped_loss, pair_loss, atol=1e-6, rtol=1e-5)
    assert (n_tokens > 3).all()


def test_grouped_gradients_equal_per_pair(setup):
    model, processor, groups = setup
    freeze_vision(model)
    batch = _batch(processor, groups[:2])
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in params]

    logps, _ = grouped_logps(model, batch)
    g1 = grads(
        L.dpo_loss(
            logps[batch.chosen_idx],
            logps[batch.rejected_idx],
            torch.full((12,), -40.0),
            torch.full((12,), -45.0),
        )[0].sum()
    )
    chosen, rejected = zip(*[per_pair_logps(model, processor, g) for g in groups[:2]], strict=True)
    g2 = grads(
        L.dpo_loss(
            torch.cat(chosen),
            torch.cat(rejected),
            torch.full((12,), -40.0),
            torch.full((12,), -45.0),
        )[0].sum()
    )
    merger = [
        i for i, (n, p) in enumerate(model.named_parameters()) if p.requires_grad and "merger" in n
    ]
    assert merger and g1[merger[0]].abs().sum() > 0  # the projector does get gradients
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_training_moves_llm_and_projector_not_vision_tower(policy_dir):
    torch.manual_seed(0)
    model, processor = load_policy(policy_dir)
    model.train()
    counts = freeze_vision(model)
    assert counts["frozen"] > 0 and counts["trainable"] > 0
    groups, _ = group_pairs(make_pairs(n_queries=2, k=4))
    batch = _batch(processor, groups)
    with torch.no_grad():
        ref, _ = grouped_logps(model, batch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    cfg, state, history = LossConfig(kind="mm_dpo", sft_weight=0.0), LossState(), []
    for _ in range(6):
        logps, n_tok = grouped_logps(model, batch)
        loss, beta, metrics = preference_loss(cfg, logps, n_tok, batch, ref, state)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(metrics)
    assert history[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference
    assert history[-1]["loss"] < history[0]["loss"] - 0.05
    assert history[-1]["reward_accuracy"] == 1.0
    assert 0.1 <= history[0]["beta_mean"] <= 0.15 and history[0]["beta_std"] > 0
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    vision = {n for n in before if ".visual." in n and ".merger." not in n}
    assert vision and not (moved & vision), "frozen vision tower changed"
    assert any(".merger." in n for n in moved) and any("language_model" in n for n in moved)
