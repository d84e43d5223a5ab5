"""The critique-based reward model (paper Sec. 3): model, losses, data, RewardBench.

    from mmrlhf_ray.reward import load_reward_model, build_tiny_reward_model
    path = build_tiny_reward_model("runs/demo/build-models/policy", "/tmp/rm", seed=0)
    rm = load_reward_model(path)
    rm.score_with_critique([{"question": q, "images": [img], "response": r}], mode="generate")

Modules: ``model`` (CritiqueRewardModel, save/load), ``losses`` (Eq. 2, Eq. 3, tie,
centering), ``data`` (pairs -> batches, harness adapters), ``bench`` (ACC / ACC+, the
official jsonl), ``config`` (stage configs), ``toy`` (shapes-world pairs with critiques).
"""

from mmrlhf_ray.reward.items import RewardItem, RewardMeta
from mmrlhf_ray.reward.model import (
    CritiqueRewardModel,
    RewardHead,
    build_tiny_reward_model,
    load_reward_model,
    new_reward_model,
    save_reward_model,
)

__all__ = [
    "CritiqueRewardModel",
    "RewardHead",
    "RewardItem",
    "RewardMeta",
    "build_tiny_reward_model",
    "load_reward_model",
    "new_reward_model",
    "save_reward_model",
]
