"""Config of ``mmrlhf pipeline``: which stages run, with which profile and overrides.

The order is the stage registry's (``mmrlhf_ray.core.stages``); ``jobs/pipeline.py`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrlhf_ray.core.stages import OPTIONAL_STAGES, PIPELINE_STAGES


def _default_stages() -> list[str]:
    return [s for s in PIPELINE_STAGES if s not in OPTIONAL_STAGES]


@dataclass
class PipelineConfig:
    """`mmrlhf pipeline`: every stage in one run directory, resuming where it stopped."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (path or URI)"})
    stages: list[str] = field(
        default_factory=_default_stages,
        metadata={"help": "stages to run, in pipeline order (`import`: only when listed)"},
    )
    profile: str = field(default="", metadata={"help": "config suffix: '' (tiny CPU) or '.gpu'"})
    overrides: dict[str, list[str]] = field(
        default_factory=dict, metadata={"help": "per-stage key=value overrides"}
    )
    self_improve_rounds: int = field(
        default=0, metadata={"help": "self-improvement rounds after evaluate"}
    )
    stop_service: bool = field(
        default=True, metadata={"help": "stop the reward service at the end"}
    )
    report: bool = field(default=True, metadata={"help": "write <run_dir>/report.md and .html"})
    family: str = field(
        default="",
        metadata={
            "help": "model family build-models builds ('' = its config's: qwen2-vl); "
            "later stages follow the built model"
        },
    )

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in PIPELINE_STAGES]
        if unknown:
            raise ValueError(
                f"pipeline.stages: unknown stage(s) {unknown}; known: {PIPELINE_STAGES}"
            )
