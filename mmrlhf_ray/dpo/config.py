"""Configs of the `ref-logps` and `train-dpo` stages (one typed dataclass each).

cfg = load_config(DpoConfig, "configs/train-dpo.yaml", ["loss.kind=dpo", "run_dir=runs/x"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from mmrlhf_ray.core.config import Choices
from mmrlhf_ray.dpo.loss_specs import LOSS_KIND_NAMES, loss_spec
from mmrlhf_ray.models.attention import PACKED_ATTENTION_HELP, AttnImplementation, PackedAttention
from mmrlhf_ray.training.config import TrainConfig
from mmrlhf_ray.training.tracking import TrackingConfig

LossKind = Literal[LOSS_KIND_NAMES]  # type: ignore[valid-type]  # the loss table's rows
PairStage = Literal["auto", "score", "pairs", "ref-logps"]
LOSS_KINDS, PAIR_STAGES = get_args(LossKind), get_args(PairStage)
ForwardKind = Literal["packed", "grouped"]
FORWARD_KINDS = get_args(ForwardKind)
FORWARD_HELP = (
    "packed (prompt + media once per query, K responses behind a block mask) | "
    "grouped (K rows per query: the reference implementation)"
)


@dataclass
class LossConfig(Choices):
    """Which preference loss, and its hyperparameters (paper Sec. 4.2, App. G, Table 4)."""

    kind: LossKind = field(default="mm_dpo", metadata={"help": f"one of {', '.join(LOSS_KINDS)}"})
    beta_ori: float = field(default=0.1, metadata={"help": "beta of DPO / beta_ori of MM-DPO"})
    w: float = field(default=0.5, metadata={"help": "MM-DPO: weight of the dynamic part of beta"})
    k: float = field(default=0.5, metadata={"help": "MM-DPO: sensitivity of beta to the margin"})
    sft_weight: float = field(
        default=0.1,
        metadata={"help": "SFT term weight (App. G grid {0,.1,.25,.5,1}; 0 = pure preference)"},
    )
    simpo_beta: float = field(default=2.0, metadata={"help": "SimPO beta"})
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO target margin gamma"})
    ipo_tau: float = field(default=0.1, metadata={"help": "IPO regularisation tau (its 'beta')"})
    beta_dpo_alpha: float = field(default=0.5, metadata={"help": "beta-DPO / implicit: alpha"})
    mpo_weights: list[float] = field(
        default_factory=lambda: [0.8, 0.2, 1.0],
        metadata={"help": "MPO weights of (DPO, quality, SFT)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_ori <= 0:
            raise ValueError(f"loss.beta_ori: must be > 0, got {self.beta_ori}")
        if self.w < 0 or self.k < 0:
            raise ValueError("loss.w and loss.k must be >= 0")

    @property
    def needs_margin(self) -> bool:
        """The kind's row uses the reward margin delta (MM-DPO with w > 0)."""
        return loss_spec(self.kind).needs_margin(self)

    @property
    def needs_reference(self) -> bool:
        """The kind's row needs pi_ref log-probs (all but SimPO)."""
        return loss_spec(self.kind).reference


@dataclass
class DpoConfig(Choices):
    """`mmrlhf train-dpo`: MM-DPO (or a Table 4 baseline) on Ray Train + DeepSpeed."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    policy: str = field(
        default="", metadata={"help": "policy checkpoint (HF dir); '' = the run's sft output"}
    )
    pairs_stage: PairStage = field(
        default="auto",
        metadata={"help": "input: ref-logps | score | pairs | auto (first finished of these)"},
    )
    reference: Literal["auto", "precomputed", "online"] = field(
        default="auto",
        metadata={
            "help": "precomputed (ref-logps stage) | online (frozen copy: 2 models) | "
            "auto (precomputed when ref-logps finished, else online, with a warning)"
        },
    )
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            num_workers=1,
            lr=1e-4,
            micro_batch_size=4,
            max_steps=50,
            warmup_steps=5,
            checkpoint_every=50,
        ),
        metadata={"help": "optimisation + Ray Train/DeepSpeed (micro_batch_size = queries)"},
    )
    tracking: TrackingConfig = field(
        default_factory=TrackingConfig,
        metadata={"help": "TensorBoard / MLflow / W&B curves of the run (rank 0 logs)"},
    )
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "fraction of queries held out for preference accuracy"}
    )
    max_response_tokens: int = field(default=256, metadata={"help": "truncate responses"})
    max_frames: int = field(default=4, metadata={"help": "video frames per query"})
    forward: ForwardKind = field(default="packed", metadata={"help": FORWARD_HELP})


@dataclass
class RefLogpsConfig(Choices):
    """`mmrlhf ref-logps`: reference log-probs per response, once, with Ray Data."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    policy: str = field(
        default="", metadata={"help": "reference policy (HF dir); '' = the run's sft output"}
    )
    pairs_stage: Literal["auto", "score", "pairs"] = field(
        default="auto", metadata={"help": "score | pairs | auto"}
    )
    num_actors: int = field(default=2, metadata={"help": "size of the scorer actor pool"})
    queries_per_batch: int = field(default=8, metadata={"help": "queries per inference batch"})
    queries_per_part: int = field(default=64, metadata={"help": "queries per output part"})
    max_response_tokens: int = field(default=256, metadata={"help": "truncate responses"})
    max_frames: int = field(default=4, metadata={"help": "video frames per query"})
    use_gpu: bool = field(default=False, metadata={"help": "one GPU per scorer actor"})
    bf16: bool = field(default=False, metadata={"help": "bf16 weights (GPU only)"})
    forward: ForwardKind = field(default="packed", metadata={"help": FORWARD_HELP})
    attn_implementation: AttnImplementation = field(
        default="sdpa", metadata={"help": "transformers attention (grouped forward, vision)"}
    )
    packed_attention: PackedAttention = field(
        default="auto", metadata={"help": PACKED_ATTENTION_HELP}
    )
