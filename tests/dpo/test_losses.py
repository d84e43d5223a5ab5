"""Losses on hand-computed values (mmrlhf_ray/dpo/losses.py)."""

import math

import pytest
import torch

from mmrlhf_ray.dpo import losses as L


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_dynamic_beta_hand_values_and_bounds():
    # beta(d) = 0.1 * (1 + 0.5 * (1 - exp(-0.5 d)))
    # d=0 -> 0.1; d=2 -> 0.1*(1+0.5*(1-e^-1)) = 0.131606; d=-3 (clamped) -> 0.1
    beta = L.dynamic_beta(t(0.0, 2.0, -3.0, 1e6), beta_ori=0.1, w=0.5, k=0.5)
    assert beta[0].item() == pytest.approx(0.1)
    assert beta[1].item() == pytest.approx(0.1 * (1 + 0.5 * (1 - math.exp(-1.0))), abs=1e-12)
    assert beta[1].item() == pytest.approx(0.131606, abs=1e-6)
    assert beta[2].item() == pytest.approx(0.1)  # negative margin gives beta_ori
    assert beta[3].item() == pytest.approx(0.15)  # upper bound (1 + w) beta_ori
    deltas = torch.linspace(-10, 50, 500, dtype=torch.float64)
    for w, k in [(0.5, 0.5), (1.0, 5.0), (0.1, 0.01)]:
        b = L.dynamic_beta(deltas, 0.2, w, k)
        assert (b >= 0.2 - 1e-12).all() and (b <= (1 + w) * 0.2 + 1e-12).all()
        assert (b[1:] >= b[:-1] - 1e-15).all()  # monotone in delta


def test_dynamic_beta_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        L.dynamic_beta(t(1.0, float("nan")))


def test_dpo_loss_hand_value():
    # log-ratios: chosen -1 - (-2) = 1, rejected -3 - (-2.5) = -0.5, h = 1.5
    # loss = -log sigmoid(0.1 * 1.5) = log(1 + e^-0.15) = 0.621091...
    losses, cr, rj = L.dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.1)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.15)), abs=1e-12)
    assert losses.item() == pytest.approx(0.6209570, abs=1e-6)
    assert cr.item() == pytest.approx(0.1) and rj.item() == pytest.approx(-0.05)


def test_policy_equal_reference_gives_log2():
    losses, _, _ = L.dpo_loss(t(-4.0, -1.0), t(-2.0, -9.0), t(-4.0, -1.0), t(-2.0, -9.0))
    assert torch.allclose(losses, torch.full_like(losses, math.log(2)))


def test_mm_dpo_hand_value_and_w0_equals_dpo():
    # delta = 2 -> beta = 0.131606; h = 1.5 -> loss = log(1 + exp(-0.197409))
    pc, pr, rc, rr = t(-1.0, -5.0), t(-3.0, -4.0), t(-2.0, -5.5), t(-2.5, -3.0)
    delta = t(2.0, 0.5)
    losses, _, _, beta = L.mm_dpo_loss(pc, pr, rc, rr, delta)
    b0 = 0.1 * (1 + 0.5 * (1 - math.exp(-1.0)))
    assert beta[0].item() == pytest.approx(b0)
    assert losses[0].item() == pytest.approx(math.log1p(math.exp(-b0 * 1.5)), abs=1e-12)
    w0, _, _, beta0 = L.mm_dpo_loss(pc, pr, rc, rr, delta, beta_ori=0.1, w=0.0)
    dpo, _, _ = L.dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert torch.equal(w0, dpo) and torch.equal(beta0, torch.full_like(beta0, 0.1))


def test_mm_dpo_larger_margin_gives_larger_gradient():
    pc = t(-1.0, -1.0).requires_grad_()
    losses, *_ = L.mm_dpo_loss(pc, t(-3.0, -3.0), t(-2.0, -2.0), t(-2.5, -2.5), t(0.0, 5.0))
    losses.sum().backward()
    assert abs(pc.grad[1]) > abs(pc.grad[0])  # the confident pair pushes harder


def test_ipo_simpo_sft_hand_values():
    # IPO: h = 1.5, tau = 0.1 -> (1.5 - 5)^2 = 12.25
    assert L.ipo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), 0.1).item() == pytest.approx(12.25)
    # SimPO: -log sigmoid(2 * (-0.5 - -1.0) - 0.5) = -log sigmoid(0.5) = 0.474077
    assert L.simpo_loss(t(-0.5), t(-1.0), 2.0, 0.5).item() == pytest.approx(0.4740770, abs=1e-6)
    # SFT: -(-6) / 3 = 2
    assert L.sft_nll(t(-6.0), torch.tensor([3])).item() == pytest.approx(2.0)


def test_beta_dpo_and_implicit_reward_beta():
    # M = 0.1 * h = [0.2, 0.4] mean 0.3; M0 = 0.9*0 + 0.1*0.3 = 0.03
    # beta = 0.1 * (1 + 0.5 * (0.3 - 0.03)) = 0.1135
    beta, m0 = L.beta_dpo_beta(t(2.0, 4.0), running_mean=0.0, beta_0=0.1, alpha=0.5)
    assert m0 == pytest.approx(0.03)
    assert torch.allclose(beta, t(0.1135, 0.1135))
    # per pair: beta_i = 0.1 * (1 + 0.5 * (M_i - 0)), capped at 0.15
    b = L.implicit_reward_beta(t(2.0, 40.0, -400.0), 0.0, 0.1, 0.5)
    assert b[0].item() == pytest.approx(0.11) and b[1].item() == pytest.approx(0.15)
    assert b[2].item() == pytest.approx(1e-3)


def test_mpo_quality_loss_hand_value():
    # -log sigmoid(1) - log sigmoid(-(-1)) = 2 * log(1 + e^-1)
    q = L.mpo_quality_loss(t(1.0), t(-1.0), shift=0.0)
    assert q.item() == pytest.approx(2 * math.log1p(math.exp(-1.0)))
