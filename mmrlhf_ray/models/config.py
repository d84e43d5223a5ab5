"""Config of the ``build-models`` stage (``configs/build-models.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrlhf_ray.models.families import DEFAULT_FAMILY, get_family
from mmrlhf_ray.models.tiny import TinyPolicySpec


@dataclass
class BuildModelsConfig:
    """Build the tiny offline tokenizer and policy into ``<run_dir>/build-models/``."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (local path)"})
    family: str = field(
        default=DEFAULT_FAMILY,
        metadata={"help": "qwen2-vl | qwen2.5-vl | llava-onevision | internvl | smolvlm"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the corpus and of the random weights"})
    vocab_size: int = field(
        default=2000, metadata={"help": "BPE vocabulary incl. bytes + specials"}
    )
    corpus_size: int = field(
        default=20000, metadata={"help": "toy-world texts the BPE is trained on"}
    )
    policy: TinyPolicySpec = field(default_factory=TinyPolicySpec)

    def __post_init__(self) -> None:
        get_family(self.family)  # an unknown family fails here, naming the supported ones
