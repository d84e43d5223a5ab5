"""Config of the ``toyworld`` stage: how big a shapes world to generate, from which seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrlhf_ray.core.config import ConfigError
from mmrlhf_ray.toyworld.responses import SIMULATED_MODELS


@dataclass
class CategoryMix:
    """Relative weights of the pool's query categories (normalised when drawn).

    The default mirrors the paper's raw pool (Sec. 2.2): among image queries about 12%
    long, 84% short, 4% MCQ; plus a few safety and video queries.
    """

    long: float = field(default=0.11, metadata={"help": "describe-the-image queries"})
    short: float = field(default=0.76, metadata={"help": "colour / count / position questions"})
    mcq: float = field(default=0.04, metadata={"help": "multiple choice, options A-D"})
    safety: float = field(
        default=0.045, metadata={"help": "harmful instructions (refusal is right)"}
    )
    video: float = field(default=0.045, metadata={"help": "direction of motion over 4 frames"})

    def __post_init__(self) -> None:
        weights = self.as_dict()
        negative = [k for k, w in weights.items() if w < 0]
        if negative:
            raise ConfigError(f"mix.{negative[0]}: weights must be >= 0")
        if sum(weights.values()) <= 0:
            raise ConfigError("mix: at least one category needs a positive weight")

    def as_dict(self) -> dict[str, float]:
        return {
            "long": self.long,
            "short": self.short,
            "mcq": self.mcq,
            "safety": self.safety,
            "video": self.video,
        }


@dataclass
class ToyWorldConfig:
    """Everything the ``toyworld`` stage writes is a pure function of these fields."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (path or URI)"})
    seed: int = field(default=0, metadata={"help": "world seed: same seed, identical bytes"})
    pool_size: int = field(default=3000, metadata={"help": "queries in the raw pool"})
    rows_per_shard: int = field(
        default=500, metadata={"help": "rows per Parquet part (memory bound)"}
    )
    benchmark_size: int = field(default=200, metadata={"help": "held-out benchmark queries"})
    image_size: int = field(default=64, metadata={"help": "side of the square images, pixels"})
    video_frames: int = field(default=4, metadata={"help": "frames per video"})
    mix: CategoryMix = field(default_factory=CategoryMix)
    records_size: int = field(
        default=0,
        metadata={
            "help": "also annotate this many pool queries answered by the simulated models "
            "(toyworld/records), for stages that want records without generate"
        },
    )
    record_models: list[str] = field(
        default_factory=lambda: ["sim-strong", "sim-medium", "sim-weak", "sim-unsafe"],
        metadata={"help": "simulated models answering the records' queries"},
    )
    responses_per_model: int = field(default=1, metadata={"help": "responses per model per query"})
    workers: int = field(
        default=1,
        metadata={"help": "Ray tasks writing shards in parallel (1 = in-process, no Ray)"},
    )

    def __post_init__(self) -> None:
        for name in ("pool_size", "benchmark_size", "records_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        minimum = {
            "rows_per_shard": 1,
            "image_size": 16,
            "video_frames": 2,
            "workers": 1,
            "responses_per_model": 1,
        }
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name}: must be >= {low}, got {getattr(self, name)}")
        if self.records_size > self.pool_size:
            raise ConfigError(
                f"records_size: {self.records_size} exceeds pool_size {self.pool_size}"
            )
        unknown = [m for m in self.record_models if m not in SIMULATED_MODELS]
        if unknown:
            raise ConfigError(
                f"record_models: {unknown[0]!r} is not one of {', '.join(SIMULATED_MODELS)}"
            )
