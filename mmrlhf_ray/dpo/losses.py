"""Preference-optimisation losses: MM-DPO (paper Sec. 4) and the baselines of Table 4.

Every function is pure torch on per-pair tensors of shape ``(P,)`` (P pairs) and
returns per-pair values; the caller takes the mean. Log-probabilities are *summed*
over the response tokens unless a docstring says otherwise (SimPO and IPO take the
per-token average, as their papers do). Notation, for a pair (x, y_w, y_l)::

    h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]

``h`` is the log-ratio difference; the implicit reward of a response is
``beta * (log pi(y|x) - log pi_ref(y|x))`` (Rafailov et al., 2023).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def log_ratio_difference(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
) -> Tensor:
    """h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)), shape (P,)."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dynamic_beta(delta: Tensor, beta_ori: float = 0.1, w: float = 0.5, k: float = 0.5) -> Tensor:
    """Dynamic Reward Scaling (paper Sec. 4.2): the per-pair beta from the reward margin.

        beta(delta) = beta_ori * (1 + w * (1 - exp(-k * delta)))

    ``delta`` (P,) is the reward model's margin r(y_w) - r(y_l). ``1 - exp(-k delta)`` lies in
    [0, 1) for delta >= 0, so beta lies in [beta_ori, (1 + w) beta_ori]; the paper constrains
    beta to that interval, so a negative margin (the reward model disagrees with the label)
    is clamped to delta = 0 and gives beta_ori. NaN margins are rejected: a pair without a
    margin must be handled by the caller (plain DPO or quarantine), never guessed.
    """
    if torch.isnan(delta).any():
        raise ValueError("dynamic_beta: delta contains NaN (a pair without a reward margin)")
    scale = 1.0 - torch.exp(-k * delta.clamp(min=0.0))
    return beta_ori * (1.0 + w * scale)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float | Tensor = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Standard DPO (Rafailov et al., 2023), per pair.

        l_DPO = -log sigma(beta * h)

    ``beta`` is a float or a (P,) tensor (per-pair beta). Returns ``(losses, chosen_rewards,
    rejected_rewards)``, each (P,); the rewards are ``beta * log-ratio``, detached.
    """
    h = log_ratio_difference(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = -F.logsigmoid(beta * h)
    chosen_rewards = (beta * (policy_chosen_logps - ref_chosen_logps)).detach()
    rejected_rewards = (beta * (policy_rejected_logps - ref_rejected_logps)).detach()
    return losses, chosen_rewards, rejected_rewards


def mm_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    delta: Tensor,
    beta_ori: float = 0.1,
    w: float = 0.5,
    k: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MM-DPO (paper Sec. 4.2): DPO whose beta grows with the reward margin delta.

        l_MM-DPO = -log sigma(beta(delta) * h),
        beta(delta) = beta_ori * (1 + w * (1 - exp(-k * delta)))

    Pairs the reward model separates confidently (large delta) get a larger beta, hence
    a stronger update; beta stays within [beta_ori, (1 + w) beta_ori]. With ``w = 0`` this
    is exactly standard DPO with beta = beta_ori. Returns ``(losses, chosen_rewards,
    rejected_rewards, beta)``, each (P,).
    """
    beta = dynamic_beta(delta, beta_ori=beta_ori, w=w, k=k)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return losses, chosen_rewards, rejected_rewards, beta


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
) -> Tensor:
    """IPO (Azar et al., 2023), per pair: a squared loss that cannot push h to infinity.

        l_IPO = (h - 1 / (2 beta))^2

    Following the IPO paper (and TRL), pass per-token *average* log-probs.
    """
    h = log_ratio_difference(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    return (h - 1.0 / (2.0 * beta)) ** 2


def simpo_loss(
    policy_chosen_avg_logps: Tensor,
    policy_rejected_avg_logps: Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
) -> Tensor:
    """SimPO (Meng et al., 2024), per pair: reference-free, length-normalised.

        l_SimPO = -log sigma(beta * (avg log pi(y_w) - avg log pi(y_l)) - gamma)

    ``*_avg_logps`` are per-token averages; ``gamma`` is the target reward margin.
    """
    return -F.logsigmoid(beta * (policy_chosen_avg_logps - policy_rejected_avg_logps) - gamma)


def beta_dpo_beta(
    implicit_margins: Tensor,
    running_mean: float,
    beta_0: float = 0.1,
    alpha: float = 0.5,
    momentum: float = 0.9,
) -> tuple[Tensor, float]:
    """beta-DPO (Wu et al., 2024a): one beta per *batch* from the implicit-reward margins.

        M_i = beta_0 * h_i (detached),  M_0 <- momentum * M_0 + (1 - momentum) * mean(M)
        beta_batch = beta_0 * (1 + alpha * (mean(M) - M_0)),  clamped to >= 1e-3

    Returns ``(beta, new_running_mean)``; the caller keeps ``M_0`` between steps (this is
    the beta-calibration part of beta-DPO; its Gaussian data filtering is not used).
    """
    batch_mean = float((beta_0 * implicit_margins.detach()).mean())
    new_running_mean = momentum * running_mean + (1.0 - momentum) * batch_mean
    beta = beta_0 * (1.0 + alpha * (batch_mean - new_running_mean))
    return torch.full_like(implicit_margins, max(beta, 1e-3)), new_running_mean


def implicit_reward_beta(
    implicit_margins: Tensor,
    running_mean: float,
    beta_0: float = 0.1,
    alpha: float = 0.5,
) -> Tensor:
    """The "+Implicit Reward" ablation of Fig. 11(a): a per-pair beta from the policy's own
    implicit-reward margin instead of an external reward model.

        M_i = beta_0 * h_i (detached),  beta_i = beta_0 * (1 + alpha * (M_i - M_0))

    clamped to [1e-3, (1 + alpha) beta_0]. The paper reports this does not help on MLLMs.
    """
    margins = beta_0 * implicit_margins.detach()
    beta = beta_0 * (1.0 + alpha * (margins - running_mean))
    return beta.clamp(min=1e-3, max=(1.0 + alpha) * beta_0)


def mpo_quality_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, shift: float) -> Tensor:
    """MPO's quality loss (Wang et al., 2024; BCO form), per pair: absolute quality.

        l_q = -log sigma(r_w - shift) - log sigma(-(r_l - shift))

    ``r_* = beta * log-ratio`` (with gradient) and ``shift`` a running mean of the rewards.
    MPO = 0.8 l_DPO + 0.2 l_q + 1.0 l_SFT in the MPO paper.
    """
    return -F.logsigmoid(chosen_rewards - shift) - F.logsigmoid(-(rejected_rewards - shift))


def sft_nll(chosen_logps: Tensor, chosen_token_counts: Tensor) -> Tensor:
    """The SFT stabiliser (paper App. G): token-averaged NLL of the chosen response.

        l_SFT = -log pi(y_w|x) / |y_w|

    Weight it with the grid {0, 0.1, 0.25, 0.5, 1.0}. Shapes (P,) -> (P,).
    """
    return -chosen_logps / chosen_token_counts.clamp(min=1).to(chosen_logps.dtype)
