"""Config of the ``build-models`` stage (``configs/build-models.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrlhf_ray.models.policy import TinyPolicySpec


@dataclass
class BuildModelsConfig:
    """Build the tiny offline tokenizer and Qwen2-VL policy into ``<run_dir>/build-models/``."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (local path)"})
    seed: int = field(default=0, metadata={"help": "seed of the corpus and of the random weights"})
    vocab_size: int = field(
        default=2000, metadata={"help": "BPE vocabulary incl. bytes + specials"}
    )
    corpus_size: int = field(
        default=20000, metadata={"help": "toy-world texts the BPE is trained on"}
    )
    policy: TinyPolicySpec = field(default_factory=TinyPolicySpec)
