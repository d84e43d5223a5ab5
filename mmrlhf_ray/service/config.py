"""The configs of the scoring service (`serve-reward`: its limits and deployment) and of\nthe `score` stage (its client: where, how often, with what retries)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from mmrlhf_ray.core.config import Choices


@dataclass
class ServeLimits:
    """What one request may carry. Anything beyond is a 4xx naming the field."""

    max_body_bytes: int = field(default=8 << 20, metadata={"help": "request body cap (413 above)"})
    max_items: int = field(default=64, metadata={"help": "items per /v1/score request"})
    max_responses: int = field(default=16, metadata={"help": "responses per /v1/compare request"})
    max_text_chars: int = field(
        default=8000, metadata={"help": "chars per question/response/critique"}
    )
    max_image_bytes: int = field(default=4 << 20, metadata={"help": "encoded bytes per image"})
    max_pixels: int = field(
        default=2048 * 2048, metadata={"help": "decoded pixels per image (bombs)"}
    )
    max_frames: int = field(default=8, metadata={"help": "video frames per item"})
    max_request_pixels: int = field(
        default=8 * 2048 * 2048,
        metadata={"help": "decoded pixels per request (items x frames x pixels, from headers)"},
    )
    max_side: int = field(
        default=2048,
        metadata={"help": "images are downsized to this longest side on decode (0 = as sent)"},
    )
    allowed_roots: list[str] = field(
        default_factory=list, metadata={"help": "dirs image_path may point into"}
    )
    allow_urls: bool = field(
        default=False, metadata={"help": "fetch http(s) image URLs (off: refused)"}
    )
    allowed_url_hosts: list[str] = field(
        default_factory=list,
        metadata={"help": "hosts image_url may name ([] = any host with public addresses)"},
    )
    url_timeout_s: float = field(default=10.0, metadata={"help": "image URL fetch timeout"})


@dataclass
class ServeRewardConfig(Choices):
    """`mmrlhf serve-reward`: host the critique reward model over HTTP with Ray Serve."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    model_path: str = field(
        default="", metadata={"help": "reward model dir (default <run_dir>/train-reward/model)"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP bind address"})
    port: int = field(default=8000, metadata={"help": "HTTP port"})
    app_name: str = field(default="reward", metadata={"help": "Serve application name"})
    route_prefix: str = field(default="/", metadata={"help": "HTTP route prefix of the app"})
    token_env: str = field(
        default="", metadata={"help": "env var holding a bearer token ('' = no auth)"}
    )
    max_batch_size: int = field(default=32, metadata={"help": "@serve.batch max batch size"})
    batch_wait_timeout_s: float = field(default=0.01, metadata={"help": "@serve.batch wait"})
    max_ongoing_requests: int = field(default=256, metadata={"help": "per replica (> batch size)"})
    num_replicas: int = field(
        default=1, metadata={"help": "fixed replicas (ignored if autoscaling)"}
    )
    autoscaling: bool = field(default=False, metadata={"help": "use min/max_replicas autoscaling"})
    min_replicas: int = field(default=1, metadata={"help": "autoscaling lower bound"})
    max_replicas: int = field(default=2, metadata={"help": "autoscaling upper bound"})
    target_ongoing_requests: float = field(default=32.0, metadata={"help": "autoscaling target"})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs per replica"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per replica"})
    torch_threads: int = field(default=1, metadata={"help": "torch threads per replica (CPU)"})
    critique_max_new_tokens: int = field(default=32, metadata={"help": "critique length cap"})
    critique_backend: Literal["transformers", "vllm"] = field(
        default="transformers",
        metadata={"help": "transformers | vllm: who generates critiques (scores: transformers)"},
    )
    critique_dtype: str = field(default="float32", metadata={"help": "vLLM critic dtype"})
    critique_max_model_len: int = field(default=2048, metadata={"help": "vLLM critic context"})
    critique_tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM critic TP"})
    critique_gpu_memory_utilization: float = field(
        default=0.5, metadata={"help": "vLLM critic's share of the replica's GPU"}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model repo code"})
    forward: str = field(
        default="packed",
        metadata={
            "help": "scoring forward: packed (items sharing question + media computed "
            "once, e.g. a /v1/compare) | grouped (one row per item)"
        },
    )
    score_dtype: Literal["float32", "bfloat16"] = field(
        default="float32", metadata={"help": "scoring model weights (bfloat16 on GPU)"}
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = field(
        default="sdpa", metadata={"help": "transformers attention of the scoring model"}
    )
    packed_attention: Literal["auto", "flex", "dense"] = field(
        default="auto",
        metadata={"help": "packed scoring's block mask: flex | dense | auto (flex on CUDA)"},
    )
    access_log: bool = field(default=True, metadata={"help": "log every request (replica)"})
    detach: bool | None = field(
        default=None, metadata={"help": "return leaving the app up (null: if Ray outlives us)"}
    )
    limits: ServeLimits = field(default_factory=ServeLimits)


@dataclass
class RetryPolicy:
    """Exponential backoff: delay_n = min(max_delay, base * multiplier**n) * (1 ± jitter)."""

    max_attempts: int = field(default=5, metadata={"help": "attempts per request, first included"})
    base_delay_s: float = field(default=0.2, metadata={"help": "delay before the first retry"})
    multiplier: float = field(default=2.0, metadata={"help": "growth of the delay per retry"})
    max_delay_s: float = field(default=5.0, metadata={"help": "cap on one delay"})
    jitter: float = field(default=0.1, metadata={"help": "relative random spread of a delay"})

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        base = min(self.max_delay_s, self.base_delay_s * self.multiplier**retry)
        spread = (rng or random).uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return max(0.0, base * (1.0 + spread))


@dataclass
class ScoreConfig(Choices):
    """`mmrlhf score`: δ = r(chosen) − r(rejected) for every pair, through the service."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    via: Literal["http", "handle", "local"] = field(
        default="http",
        metadata={"help": "http | handle (in-cluster Serve handle) | local (load the model here)"},
    )
    margins: Literal["in-sample", "out-of-fold"] = field(
        default="in-sample",
        metadata={
            "help": "in-sample: the served model | out-of-fold: each pair's δ from the "
            "train-reward fold model that did not see its query (needs train-reward folds=k)"
        },
    )
    url: str = field(
        default="", metadata={"help": "service URL ('' = from serve-reward's manifest)"}
    )
    app_name: str = field(default="reward", metadata={"help": "Serve app name (via=handle)"})
    token_env: str = field(default="", metadata={"help": "env var with the bearer token"})
    queries_per_part: int = field(
        default=64, metadata={"help": "queries per output part (resume unit)"}
    )
    concurrency: int = field(default=8, metadata={"help": "requests in flight"})
    timeout_s: float = field(default=120.0, metadata={"help": "per request timeout"})
    max_frames: int = field(default=8, metadata={"help": "video frames sent per query"})
    use_pair_critiques: bool = field(
        default=False, metadata={"help": "send the pairs' critiques instead of generating"}
    )
    retry: RetryPolicy = field(default_factory=RetryPolicy)
