"""The `evaluate` stage's config: which policies, which benchmarks, how answers are\ngenerated and how intervals are computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmrlhf_ray.core.stage import StageInputError
from mmrlhf_ray.evaluation.safety_judges import SafetyConfig
from mmrlhf_ray.evaluation.shapes import repeat_label
from mmrlhf_ray.generation.config import ModelSpec
from mmrlhf_ray.training.tracking import TrackingConfig


@dataclass
class EvaluateConfig:
    """Toy benchmark of each policy (answers generated greedily), plus RewardBench."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    policies: dict[str, str] = field(
        default_factory=lambda: {
            "random": "{run_dir}/build-models/policy",
            "sft": "{run_dir}/sft/policy",
            "mm-dpo": "{run_dir}/train-dpo/policy",
        },
        metadata={"help": "name -> HF model dir ({run_dir} expands); missing dirs are an error"},
    )
    benchmark_run_dir: str = field(
        default="", metadata={"help": "run dir holding toyworld/benchmark ('' = run_dir)"}
    )
    backend: str = field(default="auto", metadata={"help": "auto | vllm | transformers"})
    max_tokens: int = field(default=48, metadata={"help": "new tokens per answer"})
    benchmark_limit: int = field(default=0, metadata={"help": "first N benchmark rows (0 = all)"})
    chunk_size: int = field(default=64, metadata={"help": "queries per written part (resume unit)"})
    pool_size: int = field(default=1, metadata={"help": "generator actors per policy"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per generator actor"})
    dtype: str = field(default="float32", metadata={"help": "float32 on CPU, bfloat16 on GPU"})
    reward_bench: bool = field(
        default=True,
        metadata={"help": "RewardBench ACC/ACC+ of the trained reward model on held-out pairs"},
    )
    bootstrap_resamples: int = field(
        default=2000, metadata={"help": "bootstrap resamples per 95% interval / paired test"}
    )
    repeats: int = field(
        default=1,
        metadata={
            "help": "1 = one greedy answer per query; N > 1 = N sampled answer sets per policy "
            "(seeds 0..N-1 at repeat_temperature): mean and t-interval over seeds as well"
        },
    )
    repeat_temperature: float = field(
        default=0.7, metadata={"help": "sampling temperature of the repeats (repeats > 1)"}
    )
    benchmarks: list[str] = field(
        default_factory=lambda: ["shapes", "reward-bench"],
        metadata={
            "help": "shapes | reward-bench | safetybench | any lmms-eval task name (registered, "
            "or in a folder of lmms_include; mmrlhf_shapes = the shapes world via lmms-eval)"
        },
    )
    lmms_include: list[str] = field(
        default_factory=list, metadata={"help": "local lmms-eval task folders (include path)"}
    )
    lmms_actors: int = field(default=1, metadata={"help": "lmms-eval actors (one per GPU)"})
    lmms_limit: int = field(default=0, metadata={"help": "first N documents per task (0 = all)"})
    eval_python: str = field(
        default="", metadata={"help": "evaluation env's python ('' = .venv-eval's)"}
    )
    safety: SafetyConfig = field(default_factory=SafetyConfig)  # SafetyBench data and judges
    # the metrics (points, interval bounds, n, paired differences) as scalars, as training logs
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats: {self.repeats} (need >= 1)")
        asked = (self.safety.tasks and "safety.tasks") or (
            self.safety.responses and "safety.responses"
        )
        if asked and "safetybench" not in self.benchmarks:
            raise ValueError(f"{asked} is set but benchmarks has no safetybench: add it")


def policy_spec(cfg: EvaluateConfig, name: str, path: str, seed: int | None = None) -> ModelSpec:
    """Greedy, one answer per query, the same actor pool the generate stage uses; with a
    ``seed`` (``repeats`` > 1) one sampled answer at ``repeat_temperature``."""
    resolved = path.replace("{run_dir}", cfg.run_dir.rstrip("/"))
    if not Path(resolved).is_dir():
        raise StageInputError(f"evaluate: policy '{name}' has no model at {resolved}")
    return ModelSpec(
        name=repeat_label(name, seed),
        kind=cfg.backend,
        path=resolved,
        n=1,
        temperature=0.0 if seed is None else cfg.repeat_temperature,
        seed=seed or 0,
        max_tokens=cfg.max_tokens,
        pool_size=cfg.pool_size,
        num_gpus=cfg.num_gpus,
        dtype=cfg.dtype,
        batch_size=16,
    )
