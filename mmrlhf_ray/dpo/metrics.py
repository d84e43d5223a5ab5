"""The beta(delta) histogram and batch preference accuracy (step metrics: objective.py;
the harness writes them to metrics.csv and ray.train.report)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch

from mmrlhf_ray.dpo.batching import GroupedBatch


def plot_beta_histogram(
    betas: Iterable[float], margins: Iterable[float], path: str, beta_ori: float, w: float
) -> str:
    """PNG: the distribution of beta(delta) over the training pairs, and beta vs delta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas, margins = list(betas), list(margins)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.hist(betas, bins=30, color="#3b6ea8")
    for x in (beta_ori, (1 + w) * beta_ori):
        ax1.axvline(x, color="grey", linestyle="--", linewidth=1)
    ax1.set_xlabel("beta(delta)")
    ax1.set_ylabel("pairs")
    ax1.set_title(f"beta over {len(betas)} pairs (bounds dashed)")
    finite = [(m, b) for m, b in zip(margins, betas, strict=True) if not math.isnan(m)]
    if finite:
        ax2.scatter([m for m, _ in finite], [b for _, b in finite], s=6, alpha=0.5)
    ax2.set_xlabel("reward margin delta")
    ax2.set_ylabel("beta")
    ax2.set_title("Dynamic Reward Scaling")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.no_grad()
def preference_accuracy(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, batch: GroupedBatch
) -> tuple[int, int]:
    """(correct, total) pairs whose implicit reward ranks chosen above rejected.

    Implicit reward r(y) = log pi(y|x) - log pi_ref(y|x) (beta > 0 does not change the order).
    """
    r = policy_logps - ref_logps
    correct = (r[batch.chosen_idx] > r[batch.rejected_idx]).sum()
    return int(correct), batch.n_pairs


UPPER_TOLERANCE = 0.01  # "at the upper bound": within 1% of the range [beta_ori, (1+w) beta_ori]


@torch.no_grad()
def beta_statistics(beta: torch.Tensor, margins: torch.Tensor, beta_ori: float, w: float) -> dict:
    """Step metrics of Dynamic Reward Scaling over a batch's pairs (P,).

    ``beta_upper_share``: share of pairs whose beta is within ``UPPER_TOLERANCE`` of the
    range below its bound ``(1 + w) beta_ori`` (the bound itself is only approached:
    ``1 - exp(-k delta) < 1``); with ``w = 0`` the range is empty and every pair is there.
    ``delta_mean``: the mean reward margin of the pairs that have one (NaN if none).
    """
    upper = (1.0 + w) * beta_ori
    at_upper = beta >= upper - UPPER_TOLERANCE * w * beta_ori - 1e-12
    known = margins[~torch.isnan(margins)] if margins.numel() else margins
    return {
        "beta_upper_share": float(at_upper.float().mean()) if beta.numel() else float("nan"),
        "delta_mean": float(known.mean()) if known.numel() else float("nan"),
    }
