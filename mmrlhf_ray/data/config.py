"""The configs of the stages that read and write the official release's formats:\n`import` and `export`."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrlhf_ray.core.config import Choices


@dataclass
class ImportConfig:
    """Config of the ``import`` stage: official release files -> Parquet."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (path or URI)"})
    data_jsonl: str = field(default="", metadata={"help": "official data.jsonl ('' = skip)"})
    dpo_pairs_jsonl: str = field(
        default="", metadata={"help": "official dpo_pairs.jsonl ('' = skip)"}
    )
    reward_bench_jsonl: str = field(
        default="", metadata={"help": "official mm_reward_bench.jsonl ('' = skip)"}
    )
    media_root: str = field(
        default="", metadata={"help": "folder the release's image/video paths are relative to"}
    )
    default_category: str = field(
        default="", metadata={"help": "category when the path names none ('' = quarantine)"}
    )
    pool_jsonl: str = field(
        default="",
        metadata={
            "help": "a raw query pool to curate, one {id, question, image|video, "
            "source?, answer?, category_hint?} per line ('' = skip)"
        },
    )
    rows_per_part: int = field(default=5000, metadata={"help": "rows per Parquet part"})


@dataclass
class ExportConfig(Choices):
    """`mmrlhf export`: pairs and scores to Hugging Face datasets, TRL, the official files."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    pairs_stage: str = field(
        default="auto",
        metadata={"help": "stage with the pairs: ref-logps | score | pairs | import/pairs | auto"},
    )
    records_stage: str = field(
        default="auto",
        metadata={"help": "records for data.jsonl: expand | annotate | import/records | auto | ''"},
    )
    betas_stage: str = field(
        default="auto",
        metadata={"help": "train-dpo (the beta each pair got) | auto (if finished) | ''"},
    )
    formats: list[str] = field(
        default_factory=lambda: list(FORMATS), metadata={"help": "any of hf, trl, official"}
    )
    max_frames: int = field(default=4, metadata={"help": "a video's frames in the TRL format"})

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"formats: {unknown or '[]'} not within {', '.join(FORMATS)}")


FORMATS = ("hf", "trl", "official")
