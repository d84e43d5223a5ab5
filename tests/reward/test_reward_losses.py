"""The reward losses (Eq. 2, Eq. 3, tie, centering) on hand-computed values."""

import math

import pytest
import torch

from mmrlhf_ray.reward.losses import (
    IGNORE_INDEX,
    RewardLossWeights,
    bradley_terry_loss,
    centering_loss,
    critique_nll,
    reward_loss,
    tie_loss,
)

LOG2 = math.log(2.0)


def test_bradley_terry_hand_values():
    # -log sigma(2) = log(1 + e^-2) = 0.126928; -log sigma(0) = log 2; mean of the two.
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2.0)) + LOG2) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.410038, abs=1e-6)


def test_bradley_terry_gradient_pushes_chosen_up():
    rc, rr = torch.tensor([0.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(rc, rr).backward()
    # d/dr_c of -log sigma(r_c - r_r) at 0 = -(1 - sigma(0)) = -0.5
    assert rc.grad.item() == pytest.approx(-0.5)
    assert rr.grad.item() == pytest.approx(0.5)


def test_tie_loss_is_minimal_at_equal_scores():
    assert tie_loss(torch.tensor([0.3]), torch.tensor([0.3])).item() == pytest.approx(LOG2)
    # d = 2: 0.5 * (log(1 + e^-2) + log(1 + e^2)) = 1.126928
    value = tie_loss(torch.tensor([2.0]), torch.tensor([0.0])).item()
    assert value == pytest.approx(0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))))
    assert value == pytest.approx(1.126928, abs=1e-6)


def test_centering_loss_hand_values():
    # (1 + 1)^2 = 4 and (-1 + 1)^2 = 0 -> mean 2
    assert centering_loss(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0])).item() == 2.0


def test_critique_nll_flat_logits_and_masking():
    # uniform logits over V = 4: -log(1/4) = log 4 per labelled token
    logits = torch.zeros(3, 4)
    labels = torch.tensor([1, IGNORE_INDEX, 3])
    assert critique_nll(logits, labels).item() == pytest.approx(math.log(4))
    # logits [0, ln 3]: p(label 1) = 3/4 -> -ln 0.75 = 0.287682
    two = torch.tensor([[0.0, math.log(3.0)]])
    assert critique_nll(two, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))


def test_critique_nll_shifts_sequence_logits():
    # [B=1, L=3, V=2]: position t predicts label t+1; label 0 is prompt (-100)
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(3.0), 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    # p(1 | pos 0) = 3/4, p(0 | pos 1) = 3/4 -> mean NLL = -ln 0.75; pos 2 predicts nothing
    assert critique_nll(logits, labels).item() == pytest.approx(-math.log(0.75))


def test_critique_nll_with_no_labels_is_zero_not_nan():
    logits = torch.zeros(2, 4, requires_grad=True)
    loss = critique_nll(logits, torch.full((2,), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()  # still differentiable


def test_reward_loss_combines_terms_with_weights():
    rc = torch.tensor([2.0, 0.0, 1.0])
    rr = torch.tensor([0.0, 0.0, 1.0])
    tie = torch.tensor([False, False, True])
    nll = torch.tensor(1.5)
    w = RewardLossWeights(critique=2.0, score=1.0, tie=0.5, center=0.01)
    total, parts = reward_loss(rc, rr, tie, nll, w)
    bt = (math.log1p(math.exp(-2.0)) + LOG2) / 2  # non-tied pairs only
    tied = LOG2  # equal scores
    center = (4 + 0 + 4) / 3  # (2+0)^2, (0+0)^2, (1+1)^2
    expected = 2.0 * 1.5 + bt + 0.5 * tied + 0.01 * center
    assert total.item() == pytest.approx(expected, abs=1e-6)
    assert parts["score"] == pytest.approx(bt, abs=1e-6)
    assert parts["acc"] == pytest.approx(0.5)  # 2 > 0 right, 0 > 0 wrong (strict)


def test_reward_loss_all_ties_does_not_crash():
    total, parts = reward_loss(
        torch.tensor([0.0]),
        torch.tensor([0.0]),
        torch.tensor([True]),
        torch.tensor(0.0),
        RewardLossWeights(),
    )
    assert parts["score"] == 0.0
    assert total.item() == pytest.approx(0.5 * LOG2)
    assert math.isnan(parts["acc"])
