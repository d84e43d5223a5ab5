"""Losses of the critique reward model (paper Sec. 3.2, Eq. 2-3), as short pure functions.

The model reads a sequence "prompt(x, y) + critique c" and has two heads: the LM head
(the critique head h_l) and a scalar scoring head h_r read at the last non-pad token.
Training is joint:

    l_Total = w_c * l_Critique + w_s * l_Score  [+ w_tie * l_Tie + w_ctr * l_Center]

Everything here is plain torch on tensors; no model, process group or Ray in sight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mmrlhf_ray.models.encoding import IGNORE_INDEX


def critique_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Critique NLL, Eq. 2: ``l_Critique = E_{x,y,c}[ -sum_t log pi(c_t | c_<t, x, y) ]``.

    Teacher forcing on the ground-truth critique: only critique tokens (and the end
    token after them) carry labels, everything else is ``IGNORE_INDEX`` (-100). As in
    language-model training (and the official code) the sum over tokens is normalised by
    the number of labelled tokens in the batch, so the value is a per-token NLL.

    Args:
        logits: ``[N, V]`` logits that PREDICT the labels (already shifted), or
            ``[B, L, V]`` sequence logits, in which case position t predicts label t+1.
        labels: ``[N]`` or ``[B, L]`` token ids, ``-100`` where no loss is taken.
    Returns:
        scalar mean NLL over labelled tokens; 0 (with grad) when nothing is labelled.
    """
    if logits.dim() == 3:
        logits, labels = logits[:, :-1, :], labels[:, 1:]
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Score loss, Eq. 3: ``l_Score = E[ -log sigma( r(x, y_w, c_w) - r(x, y_l, c_l) ) ]``.

    Args:
        r_chosen, r_rejected: ``[P]`` scalar rewards of the preferred / less preferred
            response of each pair (scored with the ground-truth critiques).
    Returns:
        scalar mean over the P pairs (0 when P = 0). ``-log sigma(0) = log 2``.
    """
    if r_chosen.numel() == 0:
        return r_chosen.sum() * 0.0
    return -F.logsigmoid(r_chosen.float() - r_rejected.float()).mean()


def tie_loss(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry for a tie: each side wins with probability 1/2.

    ``l_Tie = E[ -(1/2) log sigma(r_a - r_b) - (1/2) log sigma(r_b - r_a) ]``, smallest
    (= log 2) when ``r_a = r_b``, so tied pairs pull their scores together instead of
    crashing training (the official code references an undefined ``tie_weight``).
    """
    if r_a.numel() == 0:
        return r_a.sum() * 0.0
    d = r_a.float() - r_b.float()
    return -(0.5 * F.logsigmoid(d) + 0.5 * F.logsigmoid(-d)).mean()


def centering_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Reward centering (official code): ``l_Center = E[ (r_w + r_l)^2 ]``.

    Keeps the scores of a pair centred on 0 so the scale of the reward stays put (the
    Bradley-Terry loss only sees differences). Weighted by a small coefficient (0.01).
    """
    if r_chosen.numel() == 0:
        return r_chosen.sum() * 0.0
    return ((r_chosen.float() + r_rejected.float()) ** 2).mean()


@dataclass
class RewardLossWeights:
    """Weights of the joint loss; setting ``critique=0`` is the score-only ablation."""

    critique: float = field(
        default=1.0, metadata={"help": "w_c, critique NLL (Eq. 2, Task 1); 0 = score-only ablation"}
    )
    score: float = field(default=1.0, metadata={"help": "w_s, Bradley-Terry loss (Eq. 3)"})
    tie: float = field(default=0.5, metadata={"help": "w_tie, tied pairs' term"})
    center: float = field(
        default=0.01,
        metadata={"help": "w_ctr, reward centering mean((r_w + r_l)^2) (official: 0.01)"},
    )


def reward_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    is_tie: torch.Tensor,
    nll: torch.Tensor,
    weights: RewardLossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The joint objective ``w_c*l_Critique + w_s*l_Score + w_tie*l_Tie + w_ctr*l_Center``.

    Args:
        r_chosen, r_rejected: ``[P]`` rewards; ``is_tie``: ``[P]`` bool, ties use l_Tie.
        nll: the scalar critique NLL of the batch (from ``critique_nll``).
    Returns:
        (total loss, float parts for logging: critique, score, tie, center, acc).
    """
    tie = is_tie.bool()
    score = bradley_terry_loss(r_chosen[~tie], r_rejected[~tie])
    tied = tie_loss(r_chosen[tie], r_rejected[tie])
    center = centering_loss(r_chosen, r_rejected)
    total = (
        weights.critique * nll
        + weights.score * score
        + weights.tie * tied
        + weights.center * center
    )
    strict = (r_chosen[~tie] > r_rejected[~tie]).float()
    parts = {
        "loss": float(total.detach()),
        "critique": float(nll.detach()),
        "score": float(score.detach()),
        "tie": float(tied.detach()),
        "center": float(center.detach()),
        "acc": float(strict.mean()) if strict.numel() else float("nan"),
    }
    return total, parts
