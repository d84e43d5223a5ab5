"""Config of ``mmrlhf pipeline``: which stages run, with which profile and overrides.

The order is the stage registry's (``mmrlhf_ray.core.stages``); ``jobs/pipeline.py`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from mmrlhf_ray.core.config import Choices
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


PairMode = Literal["all", "best-vs-worst"]


PAIR_MODES = get_args(PairMode)


@dataclass
class SelfImproveConfig(Choices):
    """`mmrlhf self-improve`: N rounds of sample -> score -> pairs -> MM-DPO -> evaluate."""

    run_dir: str = field(
        default="runs/demo", metadata={"help": "run directory (rounds go under self-improve/)"}
    )
    rounds: int = field(default=1, metadata={"help": "number of rounds"})
    start_policy: str = field(
        default="{run_dir}/train-dpo/policy", metadata={"help": "policy of round 1"}
    )
    queries_per_round: int = field(
        default=48, metadata={"help": "curated queries sampled per round"}
    )
    n: int = field(default=4, metadata={"help": "responses sampled per query"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_tokens: int = field(default=48, metadata={"help": "new tokens per response"})
    backend: str = field(default="auto", metadata={"help": "auto | vllm | transformers"})
    pair_mode: PairMode = field(default="all", metadata={"help": "all | best-vs-worst"})
    min_margin: float = field(
        default=0.0, metadata={"help": "drop pairs whose reward gap is <= this"}
    )
    seed: int = field(default=0, metadata={"help": "query sampling seed (rounds differ)"})
    service_url: str = field(
        default="", metadata={"help": "reward service URL ('' = serve-reward's manifest)"}
    )
    token_env: str = field(
        default="", metadata={"help": "env var with the service's bearer token ('' = none)"}
    )
    profile: str = field(
        default="",
        metadata={"help": "config suffix of each round's ref-logps and train-dpo: '' or '.gpu'"},
    )
    dpo_overrides: list[str] = field(
        default_factory=list, metadata={"help": "extra train-dpo key=value"}
    )
    ref_logps_overrides: list[str] = field(
        default_factory=list, metadata={"help": "extra ref-logps key=value"}
    )
    evaluate: bool = field(default=True, metadata={"help": "toy benchmark after each round"})
    benchmarks: list[str] = field(
        default_factory=lambda: ["shapes"],
        metadata={"help": "what each round's evaluate runs (evaluate's benchmarks=)"},
    )
    evaluate_overrides: list[str] = field(
        default_factory=list,
        metadata={"help": "extra evaluate key=value (e.g. safety.tasks=, lmms_include=)"},
    )
    benchmark_limit: int = field(default=0, metadata={"help": "first N benchmark rows (0 = all)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 1 or self.n < 2:
            raise ValueError("rounds must be >= 1 and n >= 2 (pairs need two responses)")
