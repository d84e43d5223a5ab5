"""Config of `mmrlhf curate` (one dataclass, loaded from configs/curate.yaml + overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrlhf_ray.curation.decontaminate import DecontaminateConfig


@dataclass
class EmbedConfig:
    """The CLIP embedding step (Ray Data actor pool)."""

    model_name: str = field(
        default="mmrlhf-tiny-clip", metadata={"help": "open_clip model name (ViT-B-32 on GPUs)"}
    )
    model_path: str | None = field(
        default=None,
        metadata={"help": "dir with <model_name>.json and/or open_clip_model.safetensors"},
    )
    weights: str | None = field(
        default=None,
        metadata={"help": "weights file (safetensors or torch); random seeded weights if unset"},
    )
    model_seed: int = field(
        default=0, metadata={"help": "seed of the random weights when no weights are given"}
    )
    pool_size: int = field(
        default=2, metadata={"help": "embedding actors (ActorPoolStrategy size)"}
    )
    batch_size: int = field(default=64, metadata={"help": "rows per map_batches call"})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs reserved per actor"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per actor (GPU profile: 1)"})
    threads: int = field(default=1, metadata={"help": "torch threads per actor"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    max_side: int = field(
        default=512, metadata={"help": "downscale images larger than this (pixels)"}
    )
    max_pixels: int = field(
        default=4096 * 4096, metadata={"help": "quarantine images with more pixels"}
    )
    fail_marker: str | None = field(
        default=None, metadata={"help": "tests only: an actor exits once if this file exists"}
    )


@dataclass
class ClusterConfig:
    """faiss spherical k-means and streamed assignment."""

    k: int = field(
        default=100, metadata={"help": "k-means centres (paper: image-similarity clusters)"}
    )
    sample_size: int = field(default=100_000, metadata={"help": "rows the centres are trained on"})
    niter: int = field(default=20, metadata={"help": "k-means iterations"})
    threads: int = field(default=2, metadata={"help": "threads: parts assigned one per thread"})
    batch_size: int = field(default=65536, metadata={"help": "rows per assignment chunk"})


@dataclass
class RatioConfig:
    """Sampling weights of the image-query categories (paper: long:short:MCQ = 4:5:1)."""

    long: float = 4.0
    short: float = 5.0
    mcq: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {"long": self.long, "short": self.short, "mcq": self.mcq}


@dataclass
class CurateConfig:
    """`mmrlhf curate`: embed, cluster, categorise and ratio-sample the pool."""

    run_dir: str = field(
        default="runs/demo", metadata={"help": "run directory (local path or URI)"}
    )
    input_stage: str = field(
        default="toyworld", metadata={"help": "stage whose parts are the pool"}
    )
    seed: int = field(default=0, metadata={"help": "seed of k-means and sampling"})
    image_size: int = field(
        default=600, metadata={"help": "image queries to select (long+short+mcq)"}
    )
    ratio: RatioConfig = field(default_factory=RatioConfig)
    image_counts: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "explicit {long, short, mcq} counts (they replace the ratio; must sum "
            "to image_size); {} = split image_size by the ratio"
        },
    )
    safety_count: int = field(default=60, metadata={"help": "safety queries to select"})
    video_count: int = field(default=60, metadata={"help": "video queries to select"})
    long_threshold: int = field(
        default=128, metadata={"help": "reference answers longer than this are 'long'"}
    )
    image_dedup: bool = field(
        default=False,
        metadata={
            "help": "keep only the first row per identical image (text dedup is off, as in the paper)"
        },
    )
    map_points: int = field(default=5000, metadata={"help": "points drawn on the cluster map"})
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)

    def __post_init__(self) -> None:
        if not self.image_counts:
            return
        if set(self.image_counts) != {"long", "short", "mcq"}:
            raise ValueError(
                f"image_counts: needs exactly long, short, mcq, got {sorted(self.image_counts)}"
            )
        total = sum(int(n) for n in self.image_counts.values())
        if total != self.image_size:
            raise ValueError(f"image_counts: sum {total} differs from image_size {self.image_size}")
