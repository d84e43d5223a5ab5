"""Typed configs for training with the Ray Train + DeepSpeed harness, and the DeepSpeed dict.

``TrainConfig`` is the optimisation half that SFT, reward-model and DPO training share;
each stage's config embeds it as ``train:``. ``deepspeed_config(cfg, world_size, gpu)``
turns it into DeepSpeed's JSON config. Pure Python: no ray, no deepspeed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmrlhf_ray.core.config import Choices
from mmrlhf_ray.training.tracking import TrackingConfig


@dataclass
class TrainConfig(Choices):
    """Optimisation and distribution settings of one training run."""

    num_workers: int = field(
        default=2, metadata={"help": "Ray Train workers (data-parallel ranks)"}
    )
    use_gpu: bool = field(default=False, metadata={"help": "one GPU per worker; bf16 when true"})
    dtype: Literal["auto", "bfloat16", "float32"] = field(
        default="auto",
        metadata={"help": "training precision: auto (bfloat16 on GPU, float32 on CPU) | ..."},
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = field(
        default="sdpa",
        metadata={"help": "transformers attention of the unpacked forward and the vision tower"},
    )
    packed_attention: Literal["auto", "flex", "dense"] = field(
        default="auto",
        metadata={
            "help": "packed forward's block mask: flex (FlexAttention, block-sparse) | dense "
            "(L x L mask) | auto (flex on CUDA, dense on CPU)"
        },
    )
    cpus_per_worker: int = field(default=1, metadata={"help": "CPUs reserved per worker"})
    zero_stage: Literal[2, 3] = field(default=2, metadata={"help": "DeepSpeed ZeRO stage: 2 or 3"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up, optimizer steps"})
    schedule: Literal["cosine", "constant"] = field(
        default="cosine", metadata={"help": "'cosine' or 'constant' after warm-up"}
    )
    micro_batch_size: int = field(
        default=4, metadata={"help": "examples per worker per micro-batch"}
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps in total"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clip (0 = off)"})
    freeze_vision: bool = field(
        default=True, metadata={"help": "freeze the family's vision tower (App. G.1)"}
    )
    freeze_projector: bool = field(
        default=False, metadata={"help": "also freeze the vision-language projector"}
    )
    checkpoint_every: int = field(
        default=50, metadata={"help": "Ray Train checkpoint every N steps"}
    )
    report_every: int = field(
        default=10,
        metadata={"help": "ray.train.report every N steps (each report syncs with the controller)"},
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept in storage"})
    max_failures: int = field(
        default=2, metadata={"help": "worker-group restarts before giving up"}
    )
    threads_per_worker: int = field(
        default=1, metadata={"help": "torch.set_num_threads per worker"}
    )
    seed: int = field(default=0, metadata={"help": "seed of init order, data order, dropout"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "num_workers",
            "micro_batch_size",
            "grad_accum",
            "max_steps",
            "checkpoint_every",
            "report_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}: must be >= 1, got {getattr(self, name)}")


def deepspeed_config(cfg: TrainConfig, world_size: int, gpu: bool | None = None) -> dict[str, Any]:
    """DeepSpeed's config dict for ``cfg``: ZeRO 2/3, ``cfg.dtype`` (auto: fp32 on CPU, bf16 on GPU).

    A torch ``AdamW`` is passed to ``deepspeed.initialize`` (DeepSpeed's own optimisers
    compile C++ ops for a minute on CPU), hence ``zero_allow_untested_optimizer``.
    """
    gpu = cfg.use_gpu if gpu is None else gpu
    bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and bool(gpu))
    zero: dict[str, Any] = {
        "stage": cfg.zero_stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
    }
    if cfg.zero_stage == 3:
        # Gathered 16-bit weights let rank 0 write a consolidated HF checkpoint.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,  # the harness logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step``: linear warm-up, then cosine/constant."""
    import math

    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _sft_train_defaults() -> TrainConfig:
    return TrainConfig(
        lr=3e-3,
        warmup_steps=10,
        micro_batch_size=8,
        grad_accum=1,
        max_steps=200,
        checkpoint_every=50,
        zero_stage=2,
    )


@dataclass
class SftConfig:
    """Config of the ``sft`` stage (``configs/sft.yaml``)."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (path or URI)"})
    policy_path: str = field(
        default="", metadata={"help": "model to fine-tune; '' = <run_dir>/build-models/policy"}
    )
    input_stage: str = field(
        default="toyworld", metadata={"help": "stage whose parts are the pool"}
    )
    max_rows: int = field(
        default=1024, metadata={"help": "use at most this many pool rows (0 = all)"}
    )
    max_frames: int = field(default=4, metadata={"help": "video frames per video row"})
    max_response_tokens: int = field(default=128, metadata={"help": "truncate long references"})
    benchmark_size: int = field(
        default=40, metadata={"help": "toy benchmark rows scored (0 = skip)"}
    )
    benchmark_seed: int = field(default=0, metadata={"help": "seed of the held-out benchmark"})
    max_new_tokens: int = field(default=64, metadata={"help": "generation budget per answer"})
    train: TrainConfig = field(default_factory=_sft_train_defaults)
    tracking: TrackingConfig = field(
        default_factory=TrackingConfig,
        metadata={"help": "TensorBoard / MLflow / W&B curves of the run (rank 0 logs)"},
    )
