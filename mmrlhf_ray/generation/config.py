"""The `generate` and `expand` stages' configs and the model spec they share: one\npolicy "model" of a run (vLLM, transformers or a simulated shapes-world responder) with\nits sampling settings and its pool / tensor-parallel / GPU resources."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from mmrlhf_ray.core.config import Choices, ConfigError

Kind = Literal["auto", "vllm", "transformers", "simulated"]


Fallback = Literal["original", "keep"]


KINDS, FALLBACKS = get_args(Kind), get_args(Fallback)


@dataclass
class ModelSpec(Choices):
    """One generating model and how to run it (one actor pool per model)."""

    name: str = field(default="policy", metadata={"help": "label written to the `model` column"})
    kind: Kind = field(
        default="auto",
        metadata={"help": "auto (vllm if importable) | vllm | transformers | simulated"},
    )
    path: str = field(
        default="",
        metadata={"help": "HF-layout model dir, may use {run_dir} (empty for simulated)"},
    )
    n: int = field(default=2, metadata={"help": "samples per query"})
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass
    max_tokens: int = 32  # new tokens per sample; hitting it flags the sample truncated
    logprobs: bool = False  # keep per-token log-probs of the sampled tokens
    seed: int = 0  # base seed; each query's seed derives from it and the query id
    pool_size: int = 1  # actors in this model's pool
    tensor_parallel_size: int = 1  # vLLM tensor parallel degree (GPU profile)
    num_gpus: float = 0.0  # GPUs per actor (= tensor_parallel_size on GPU)
    num_cpus: float = 1.0  # CPUs per actor
    batch_size: int = 8  # prompts per Ray Data batch
    max_model_len: int = 1024  # vLLM context length
    dtype: str = "float32"  # float32 on CPU, bfloat16 on GPU
    max_frames: int = 4  # video frames sampled uniformly per video
    max_side: int = 448  # images larger than this are downscaled before the processor
    gpu_memory_utilization: float = 0.9  # vLLM on GPU
    hf_batch_size: int = 8  # transformers backend: prompts per generate call
    enforce_eager: bool = False  # vLLM without compilation / graphs (quick CPU test loads)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1 or self.max_tokens < 1 or self.pool_size < 1:
            raise ValueError(f"model '{self.name}': n, max_tokens and pool_size must be >= 1")

    def resolved(self, run_dir: str) -> ModelSpec:
        """A copy with ``{run_dir}`` in ``path`` replaced (configs name run-local models)."""
        from dataclasses import replace

        return replace(self, path=self.path.replace("{run_dir}", run_dir.rstrip("/")))

    def validate(self) -> None:
        """Checks that need the whole spec (called before a model is loaded)."""
        if self.kind != "simulated" and not self.path:
            raise ConfigError(f"model '{self.name}': path is required for kind {self.kind!r}")

    def settings(self) -> dict[str, Any]:
        """The generation settings recorded with every output row."""
        keys = ("n", "temperature", "top_p", "max_tokens", "logprobs", "seed")
        return {k: getattr(self, k) for k in keys}


@dataclass
class GenerateConfig:
    """`mmrlhf generate`: sample candidate responses for the curated queries."""

    run_dir: str = "runs/demo"
    input_stage: str = field(
        default="curate", metadata={"help": "stage whose rows are the queries"}
    )
    models: list[ModelSpec] = field(default_factory=list, metadata={"help": "policy models"})
    chunk_size: int = field(
        default=16, metadata={"help": "queries per output part (unit of resume)"}
    )
    max_queries: int = field(default=0, metadata={"help": "0 = all; else the first N by sample_id"})
    kill_marker: str = field(
        default="", metadata={"help": "tests only: an actor exits once, mid-run"}
    )


@dataclass
class ExpandConfig(Choices):
    """`mmrlhf expand`: expand annotators' score reasons into critiques (Table 7)."""

    run_dir: str = "runs/demo"
    input_stage: str = "annotate"
    expander: ModelSpec = field(
        default_factory=lambda: ModelSpec(name="expander", n=1, temperature=0.0, max_tokens=96)
    )
    prompt_template: str = field(
        default="", metadata={"help": "empty = the paper's Table 7 prompt"}
    )
    with_image: bool = field(default=False, metadata={"help": "also give the expander the image"})
    fallback: Fallback = field(
        default="original", metadata={"help": "flagged expansion: 'original' reason or 'keep' it"}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "re-expand responses that already have a critique"}
    )
    chunk_size: int = 32
    kill_marker: str = ""


def spec_from_dict(data: dict[str, Any] | ModelSpec) -> ModelSpec:
    return data if isinstance(data, ModelSpec) else ModelSpec(**data)


def resolve_kind(spec: ModelSpec, vllm_available: bool) -> str:
    """``auto`` means vLLM wherever it imports, else transformers."""
    if spec.kind == "auto":
        return "vllm" if vllm_available else "transformers"
    return spec.kind


def spec_dict(spec: ModelSpec) -> dict[str, Any]:
    return asdict(spec)
