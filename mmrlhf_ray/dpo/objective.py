"""The training objective of one grouped batch: pick the pairs' log-probs, apply a loss.

``preference_loss(cfg, policy_logps, n_tokens, batch, ref_logps, state)`` turns the
per-row log-probs of ``forward.grouped_logps`` into per-pair tensors (each pair takes
its chosen/rejected row) and applies the loss of ``cfg.kind``'s row in the loss table
(``dpo/loss_specs.py``: MM-DPO or one of the Table 4 baselines), plus the SFT term. It
returns the scalar loss, the per-pair beta, and the step's metrics (loss, reward
accuracy and margins, mean/std of beta, pair and query counts).

The SFT term (paper App. G) is the token-averaged NLL of each *distinct* chosen response
of the batch, once: a query's rank-1 response of four is the chosen side of three pairs
but enters the SFT mean once (a rank-2 response that is chosen against rank 3 enters
once as well).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmrlhf_ray.dpo import losses as L
from mmrlhf_ray.dpo.batching import GroupedBatch
from mmrlhf_ray.dpo.config import LossConfig
from mmrlhf_ray.dpo.loss_specs import LossState, PairLogps, loss_spec

__all__ = ["LossState", "preference_loss", "sft_term", "step_metrics"]


def sft_term(policy_logps: Tensor, n_tokens: Tensor, chosen_idx: Tensor) -> Tensor:
    """Per-response SFT NLL (U,) of the U distinct rows that are chosen in some pair."""
    rows = torch.unique(chosen_idx)
    return L.sft_nll(policy_logps[rows], n_tokens[rows].clamp(min=1))


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
    (reference-free kinds only).
    """
    spec = loss_spec(cfg.kind)
    ci, ri = batch.chosen_idx, batch.rejected_idx
    pairs = PairLogps(
        pc=policy_logps[ci],
        pr=policy_logps[ri],
        nc=n_tokens[ci].clamp(min=1),
        nr=n_tokens[ri].clamp(min=1),
        margins=batch.margins.to(policy_logps.device),
    )
    if spec.reference:
        if ref_logps is None or torch.isnan(ref_logps).any():
            raise ValueError(f"loss {cfg.kind} needs reference log-probs for every response")
        pairs.rc, pairs.rr = ref_logps[ci], ref_logps[ri]
    out = spec.loss(pairs, cfg, state)
    sft_weight = spec.sft_weight(cfg)
    sft = sft_term(policy_logps, n_tokens, ci)
    loss = out.losses.mean() + (sft_weight * sft.mean() if sft_weight > 0 else 0.0)
    state.steps += 1
    metrics = step_metrics(
        loss, out.losses, sft, out.chosen_rewards, out.rejected_rewards, out.beta, batch
    )
    return loss, out.beta.detach(), metrics


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
