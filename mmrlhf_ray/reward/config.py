"""Configs of `mmrlhf train-reward` and `mmrlhf evaluate reward-bench`.

One documented dataclass per stage; YAMLs in configs/ (tiny CPU default + 7B GPU
profile). Field help texts show up in ``mmrlhf train-reward --help``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from mmrlhf_ray.core.config import Choices
from mmrlhf_ray.reward.losses import RewardLossWeights
from mmrlhf_ray.training.config import TrainConfig
from mmrlhf_ray.training.tracking import TrackingConfig

CritiqueSource = Literal["expanded", "human", "auto", "none"]
InferMode = Literal["generate", "given", "none"]
CRITIQUE_SOURCES, INFER_MODES = get_args(CritiqueSource), get_args(InferMode)


def _h(default, text):
    return field(default=default, metadata={"help": text})


def _reward_train_defaults() -> TrainConfig:
    """Harness settings that suit the tiny reward model on 2 CPU workers."""
    return TrainConfig(
        lr=5e-4,
        warmup_steps=5,
        micro_batch_size=4,
        max_steps=60,
        checkpoint_every=20,
        schedule="constant",
    )


@dataclass
class TrainRewardConfig(Choices):
    """`mmrlhf train-reward`: critique reward model (Eq. 2 + Eq. 3) on preference pairs."""

    run_dir: str = _h("runs/demo", "run directory (local path or pyarrow URI)")
    backbone: str = _h("", "VLM checkpoint dir; '' = the run's build-models policy")
    pairs_stage: str = _h("pairs", "stage whose pairs to read: 'pairs' or 'expand'")
    critique_source: CritiqueSource = _h(
        "auto",
        "ground-truth critiques: expanded (*_critique), human (*_reason), "
        "auto (expanded, else human), none (score-only ablation, no Task 1)",
    )
    heldout_fraction: float = _h(0.2, "share of queries held out for evaluation")
    split_seed: int = _h(0, "seed of the query-level train/held-out split")
    folds: int = _h(
        0,
        "k >= 2: also train k models on disjoint query folds (model j without fold j), "
        "for `score margins=out-of-fold`; 0 = off",
    )
    fold_seed: int = _h(0, "seed of the query -> fold hash")
    seed: int = _h(0, "seed of the scoring head init and data order")
    head_dropout: float = _h(0.1, "dropout of the scoring head")
    prompt_template: str = _h(
        "", "critique prompt with {question} {response}; '' = prompts.CRITIQUE_PROMPT"
    )
    max_length: int = _h(512, "max tokens of prompt + critique (longer critiques cut)")
    max_frames: int = _h(4, "video frames given to the model (uniformly sampled)")
    max_side: int = _h(0, "downscale images to this longest side (0 = as is)")
    loss: RewardLossWeights = field(default_factory=RewardLossWeights)  # l_Total weights
    epochs: float = _h(0.0, "if > 0: train.max_steps = epochs over the training pairs")
    train: TrainConfig = field(default_factory=_reward_train_defaults)
    tracking: TrackingConfig = field(
        default_factory=TrackingConfig,
        metadata={"help": "TensorBoard / MLflow / W&B curves of the run (rank 0 logs)"},
    )
    eval_mode: InferMode = _h("generate", "held-out scoring after training: generate|given|none")
    max_new_tokens: int = _h(40, "critique length cap when generating")
    forward: Literal["packed", "grouped"] = _h(
        "packed",
        "packed (items sharing question + images computed once) | "
        "grouped (one padded row per item: the reference)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction: {self.heldout_fraction} not in [0, 1)")
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds: {self.folds}: use 0 (off) or k >= 2")


@dataclass
class EvaluateRewardBenchConfig(Choices):
    """`mmrlhf evaluate reward-bench`: ACC / ACC+ per category of a reward model."""

    run_dir: str = _h("runs/demo", "run directory (results go under evaluate/reward-bench)")
    model: str = _h("", "reward model dir; '' = <run_dir>/train-reward/model")
    input: str = _h(
        "",
        "official mm_reward_bench.jsonl; '' = the held-out pairs of the run's train-reward",
    )
    image_root: str = _h("", "folder the jsonl's image/video paths are relative to")
    output: str = _h("", "jsonl written back with rewards + critic; '' = under run_dir")
    mode: InferMode = _h("generate", "generate a critique | given (chosen/rejected_reason) | none")
    use_existing_rewards: bool = _h(
        False, "only compute ACC/ACC+ from a `rewards` field already in the file"
    )
    batch_size: int = _h(8, "sequences per forward")
    max_new_tokens: int = _h(
        0, "critique length cap when generating (0 = the model's reward_config.json)"
    )
    max_frames: int = _h(0, "video frames given to the model (0 = its reward_config.json)")
    max_length: int = _h(0, "max tokens of prompt + critique (0 = its reward_config.json)")
    max_side: int = _h(0, "downscale images to this longest side (0 = as is)")
