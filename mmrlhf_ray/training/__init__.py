"""Pure training pieces: configs, data order, checkpoint bookkeeping, freezing, SFT data.

The Ray Train + DeepSpeed harness that runs them is ``harness/trainer.py``.
"""

from mmrlhf_ray.training.checkpoint import append_metrics, read_metrics, read_state, write_state
from mmrlhf_ray.training.config import TrainConfig, deepspeed_config, lr_factor
from mmrlhf_ray.training.data import micro_batches, rank_indices
from mmrlhf_ray.training.freeze import freeze_vision, vision_tower

__all__ = [
    "TrainConfig",
    "append_metrics",
    "deepspeed_config",
    "freeze_vision",
    "lr_factor",
    "micro_batches",
    "rank_indices",
    "read_metrics",
    "read_state",
    "vision_tower",
    "write_state",
]
