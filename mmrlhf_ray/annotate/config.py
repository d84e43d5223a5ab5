"""The configs of the `annotate` and `pairs` stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from mmrlhf_ray.core.config import Choices

Source = Literal["oracle", "human"]


SOURCES = get_args(Source)


@dataclass
class AnnotateConfig(Choices):
    """Config of the ``annotate`` stage: generated responses -> annotated records."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (path or URI)"})
    source: Source = field(default="oracle", metadata={"help": "oracle (shapes world) | human"})
    labels_jsonl: str = field(
        default="", metadata={"help": "human labels in the official data.jsonl format"}
    )
    media_root: str = field(
        default="", metadata={"help": "folder the labels' media paths are under"}
    )
    seed: int = field(default=0, metadata={"help": "oracle seed (constructed responses)"})
    tie_rule: bool = field(
        default=True,
        metadata={"help": "oracle applies the paper's tie rule (adds a positive/negative)"},
    )
    queries_per_part: int = field(default=500, metadata={"help": "queries per Parquet part"})
    export_tasks: bool = field(
        default=False, metadata={"help": "also write tasks.jsonl (unlabelled, official format)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source == "human" and not self.labels_jsonl:
            raise ValueError("annotate.labels_jsonl: required when source=human")
