"""The training objective of one grouped batch: pick the pairs' log-probs, apply a loss.

``preference_loss(cfg, policy_logps, n_tokens, batch, ref_logps, state)`` turns the
per-row log-probs of ``forward.grouped_logps`` into per-pair tensors (each pair takes
its chosen/rejected row) and applies the loss named by ``cfg.kind`` (MM-DPO or one of
the Table 4 baselines), plus the SFT term. It returns the scalar loss, the per-pair
beta, and the step's metrics (loss, reward accuracy and margins, mean/std of beta,
pair and query counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmrlhf_ray.dpo import losses as L
from mmrlhf_ray.dpo.batching import GroupedBatch
from mmrlhf_ray.dpo.config import LossConfig


@dataclass
class LossState:
    """Running statistics some baselines keep between steps (beta-DPO, MPO)."""

    implicit_margin_mean: float = 0.0  # beta-DPO / implicit-reward beta: M_0
    reward_shift: float = 0.0  # MPO quality loss: running mean of the rewards
    steps: int = 0


def _dpo_family(
    cfg: LossConfig,
    pc: Tensor,
    pr: Tensor,
    rc: Tensor,
    rr: Tensor,
    margins: Tensor,
    state: LossState,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(per-pair losses, beta, chosen_rewards, rejected_rewards) of the DPO-style losses."""
    h = L.log_ratio_difference(pc, pr, rc, rr).detach()
    if cfg.kind == "mm_dpo":
        delta = margins if cfg.needs_margin else torch.zeros_like(margins)
        losses, cr, rj, beta = L.mm_dpo_loss(pc, pr, rc, rr, delta, cfg.beta_ori, cfg.w, cfg.k)
        return losses, beta, cr, rj
    if cfg.kind == "beta_dpo":
        beta, state.implicit_margin_mean = L.beta_dpo_beta(
            h, state.implicit_margin_mean, cfg.beta_ori, cfg.beta_dpo_alpha
        )
    elif cfg.kind == "implicit_reward":
        beta = L.implicit_reward_beta(
            h, state.implicit_margin_mean, cfg.beta_ori, cfg.beta_dpo_alpha
        )
        state.implicit_margin_mean = 0.9 * state.implicit_margin_mean + 0.1 * float(
            (cfg.beta_ori * h).mean()
        )
    else:  # dpo, mpo
        beta = torch.full_like(pc, cfg.beta_ori)
    losses, cr, rj = L.dpo_loss(pc, pr, rc, rr, beta)
    if cfg.kind == "mpo":
        wp, wq, _ = cfg.mpo_weights
        q = L.mpo_quality_loss(beta * (pc - rc), beta * (pr - rr), state.reward_shift)
        state.reward_shift = 0.9 * state.reward_shift + 0.1 * float(torch.cat([cr, rj]).mean())
        losses = wp * losses + wq * q
    return losses, beta, cr, rj


def preference_loss(
    cfg: LossConfig,
    policy_logps: Tensor,
    n_tokens: Tensor,
    batch: GroupedBatch,
    ref_logps: Tensor | None,
    state: LossState,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Mean loss over the batch's pairs, the per-pair beta (P,), and the step metrics.

    ``policy_logps``/``n_tokens`` (R,) are per row; ``ref_logps`` (R,) per row or None
    (reference-free SimPO only).
    """
    ci, ri = batch.chosen_idx, batch.rejected_idx
    pc, pr = policy_logps[ci], policy_logps[ri]
    nc, nr = n_tokens[ci].clamp(min=1), n_tokens[ri].clamp(min=1)
    if cfg.kind == "simpo":
        losses = L.simpo_loss(pc / nc, pr / nr, cfg.simpo_beta, cfg.simpo_gamma)
        beta = torch.full_like(pc, cfg.simpo_beta)
        cr, rj = (beta * pc / nc).detach(), (beta * pr / nr).detach()
    else:
        if ref_logps is None or torch.isnan(ref_logps).any():
            raise ValueError(f"loss {cfg.kind} needs reference log-probs for every response")
        rc, rr = ref_logps[ci], ref_logps[ri]
        if cfg.kind == "ipo":
            losses = L.ipo_loss(pc / nc, pr / nr, rc / nc, rr / nr, cfg.ipo_tau)
            beta = torch.full_like(pc, cfg.ipo_tau)
            cr, rj = (pc - rc).detach() / nc, (pr - rr).detach() / nr
        else:
            losses, beta, cr, rj = _dpo_family(cfg, pc, pr, rc, rr, batch.margins, state)
    sft_weight = cfg.mpo_weights[2] if cfg.kind == "mpo" else cfg.sft_weight
    sft = L.sft_loss(pc, nc)
    loss = losses.mean() + (sft_weight * sft.mean() if sft_weight > 0 else 0.0)
    state.steps += 1
    metrics = step_metrics(loss, losses, sft, cr, rj, beta, batch)
    return loss, beta.detach(), metrics


def step_metrics(
    loss: Tensor,
    losses: Tensor,
    sft: Tensor,
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    beta: Tensor,
    batch: GroupedBatch,
) -> dict[str, float]:
    """Loss, reward accuracy/margin, beta mean/std, pair/query/row counts of one step."""
    margin = chosen_rewards - rejected_rewards
    return {
        "loss": float(loss.detach()),
        "pref_loss": float(losses.detach().mean()),
        "sft_nll": float(sft.detach().mean()),
        "reward_accuracy": float((margin > 0).float().mean()),
        "reward_margin": float(margin.mean()),
        "chosen_reward": float(chosen_rewards.mean()),
        "rejected_reward": float(rejected_rewards.mean()),
        "beta_mean": float(beta.detach().mean()),
        "beta_std": float(beta.detach().std()) if beta.numel() > 1 else 0.0,
        "pairs": float(batch.n_pairs),
        "queries": float(batch.n_queries),
        "responses": float(batch.n_rows),
    }
