"""Candidate generation and critique expansion: configs, requests, output rows, checks.

Pure library code for ``mmrlhf generate`` and ``mmrlhf expand`` (the Ray actors in
``actors/generator.py`` and the jobs only move these objects around):

* ``ModelSpec``: one policy "model" of a run (vLLM, transformers or a simulated
  toy-world responder) with its sampling settings and its pool / TP / GPU resources;
* ``GenerateConfig`` / ``ExpandConfig``: the two stages' typed configs;
* ``GenRequest`` / ``Sample``: what an actor receives and returns per prompt;
* ``generation_rows``: one output row per (query, model, sample index), with the
  settings recorded and empty / truncated generations flagged;
* ``check_expansion``: flags Table 7 expansions that contradict (or fail to restate)
  the original annotator's verdict.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import pyarrow as pa

from mmrlhf_ray.core.config import Choices, ConfigError
from mmrlhf_ray.core.quarantine import quarantine_row

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


def stable_seed(base: int, *keys: Any) -> int:
    """A 31-bit seed from ``base`` and keys: re-runs and retries sample the same text."""
    digest = hashlib.sha256(json.dumps([base, *map(str, keys)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------- requests
@dataclass
class GenRequest:
    """One prompt for an actor: chat messages plus the decoded media they refer to."""

    key: str  # unique id of the unit of work (e.g. sample_id)
    messages: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)  # PIL images, in message order
    video: list[Any] | None = None  # PIL frames of one video
    n: int = 1
    seed: int = 0


@dataclass
class Sample:
    """One generated sample."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    token_logprobs: list[float] | None = None
    prompt: str = ""  # the rendered prompt (chat template applied)
    prompt_tokens: int = 0


def query_messages(row: dict[str, Any], n_images: int, is_video: bool) -> list[dict[str, Any]]:
    from mmrlhf_ray.data.prompts import chat_messages

    return chat_messages(row["question"], n_images=n_images, video=is_video)


def build_request(row: dict[str, Any], spec: ModelSpec) -> GenRequest:
    """The request for one pool row; raises ``MediaError`` naming a bad media field."""
    from mmrlhf_ray.data.media import is_video, row_images

    video_row = is_video(row)
    media = row_images(row, max_frames=spec.max_frames, max_side=spec.max_side)
    images, video = ([], media) if video_row else (media, None)
    messages = query_messages(row, len(images), video_row)
    return GenRequest(
        key=row["sample_id"],
        messages=messages,
        images=images,
        video=video,
        n=spec.n,
        seed=stable_seed(spec.seed, spec.name, row["sample_id"]),
    )


# --------------------------------------------------------------------------- output rows
GENERATE_SCHEMA = pa.schema(
    [
        pa.field("response_id", pa.string(), nullable=False),  # sample_id/model/index
        pa.field("sample_id", pa.string(), nullable=False),  # the query (join key to curate)
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_kind", pa.string()),  # vllm | transformers | simulated
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("category", pa.string()),
        pa.field("question", pa.string()),
        pa.field("reference_answer", pa.string()),
        pa.field("ground_truth", pa.string()),
        pa.field("prompt", pa.string()),  # rendered prompt, chat template applied
        pa.field("text", pa.string()),
        pa.field("num_tokens", pa.int32()),
        pa.field("finish_reason", pa.string()),
        pa.field("is_empty", pa.bool_()),
        pa.field("is_truncated", pa.bool_()),
        pa.field("token_logprobs", pa.list_(pa.float32())),  # null unless asked
        pa.field("settings", pa.string()),  # JSON of the generation settings
    ]
)
QUERY_COLUMNS = ("source", "category", "question", "reference_answer", "ground_truth")


def generation_rows(
    row: dict[str, Any], spec: ModelSpec, kind: str, samples: list[Sample]
) -> list[dict[str, Any]]:
    """One GENERATE_SCHEMA row per sample of one (query, model)."""
    settings = json.dumps({**spec.settings(), "kind": kind, "path": spec.path}, sort_keys=True)
    out = []
    for i, s in enumerate(samples):
        out.append(
            {
                "response_id": f"{row['sample_id']}/{spec.name}/{i}",
                "sample_id": row["sample_id"],
                "model": spec.name,
                "model_kind": kind,
                "sample_index": i,
                **{c: row.get(c) for c in QUERY_COLUMNS},
                "prompt": s.prompt,
                "text": s.text,
                "num_tokens": len(s.token_ids),
                "finish_reason": s.finish_reason,
                "is_empty": not s.text.strip(),
                "is_truncated": s.finish_reason == "length",
                "token_logprobs": s.token_logprobs if spec.logprobs else None,
                "settings": settings,
            }
        )
    return out


def quarantine_rows(
    row: dict[str, Any], spec: ModelSpec, field_name: str, reason: str
) -> list[dict[str, Any]]:
    """One quarantine row per lost (query, model, sample index) unit, so counts add up."""
    raw = json.dumps({k: row.get(k) for k in ("sample_id", "question", "category")})
    return [
        quarantine_row("curate", f"{row.get('sample_id')}/{spec.name}/{i}", field_name, reason, raw)
        for i in range(spec.n)
    ]


# --------------------------------------------------------------------------- expansion check
_NEG = re.compile(
    r"\b(incorrect|wrong|inaccurate|not (?:correct|accurate|right|faithful|helpful)|fails?|"
    r"hallucinat\w*|mistak\w*|error\w*|unsafe|harmful|irrelevant|off-topic|misses|missing|"
    r"does not|doesn't|is not|isn't|poor|bad|refus\w*|should have)\b",
    re.I,
)
_POS = re.compile(
    r"\b(correct\w*|accurate\w*|right|faithful\w*|helpful|good|well|"
    r"appropriate\w*|safe|complete|precise\w*|excellent)\b",
    re.I,
)
_NEGATED_POS = re.compile(
    r"\b(?:not|n't|in)\s*(?:correct|accurate|right|faithful|helpful|safe|complete)", re.I
)


def verdict(text: str | None) -> str | None:
    """'positive', 'negative' or None (no clear verdict) from a critique's wording.

    A lexicon count: negative cues (incorrect, hallucinated, refuses, ...) against
    positive ones (correct, accurate, faithful, ...), with negated positives ("not
    correct") counted as negative. Crude, but a contradiction of the verdict is
    exactly what a lexicon sees: "incorrect" in the reason and "correct" in the
    expansion.
    """
    if not text or not text.strip():
        return None
    neg = len(_NEG.findall(text))
    pos = len(_POS.findall(text)) - len(_NEGATED_POS.findall(text))
    if neg > pos:
        return "negative"
    if pos > neg:
        return "positive"
    return None


def looks_like_text(text: str, min_word_share: float = 0.6) -> bool:
    """True when most whitespace-separated tokens are plain words (not byte soup)."""
    tokens = text.split()
    if not tokens:
        return False
    words = sum(1 for t in tokens if re.fullmatch(r"[A-Za-z][A-Za-z'\-]*[.,;:!?)]*", t))
    return words / len(tokens) >= min_word_share


def check_expansion(original: str, expansion: str) -> str:
    """'ok' or why the expansion is flagged: 'empty', 'junk', 'contradicts', 'no_verdict'.

    ``contradicts``: both texts carry a verdict and they differ (original says
    incorrect, expansion says correct). ``no_verdict``: the original has a verdict the
    expansion does not restate (an expansion must keep the original's strengths and
    weaknesses, paper Sec. 3.2).
    """
    if not expansion or not expansion.strip():
        return "empty"
    if not looks_like_text(expansion):
        return "junk"
    v_orig, v_exp = verdict(original), verdict(expansion)
    if v_orig and v_exp and v_orig != v_exp:
        return "contradicts"
    if v_orig and not v_exp:
        return "no_verdict"
    return "ok"


def choose_critique(original: str, expansion: str, status: str, fallback: str) -> tuple[str, bool]:
    """(critique to store, fell_back): flagged expansions follow the fallback policy."""
    if status == "ok" or fallback == "keep":
        return (expansion.strip() if expansion.strip() else original), not expansion.strip()
    return original, True


def expansion_requests(
    record: dict[str, Any], spec: ModelSpec, template: str, overwrite: bool, images: list[Any]
) -> list[tuple[int, GenRequest]]:
    """(response index, request) for every response with a reason to expand."""
    from mmrlhf_ray.data.prompts import EXPANSION_PROMPT, chat_messages, expansion_prompt

    out = []
    for i, resp in enumerate(record.get("responses") or []):
        reason = (resp.get("score_reason") or "").strip()
        if not reason or (resp.get("critique") and not overwrite):
            continue
        text = expansion_prompt(
            record["question"], resp.get("text") or "", reason, template or EXPANSION_PROMPT
        )
        key = f"{record['query_id']}/{resp.get('response_id') or i}"
        out.append(
            (
                i,
                GenRequest(
                    key=key,
                    messages=chat_messages(text, n_images=len(images)),
                    images=list(images),
                    n=1,
                    seed=stable_seed(spec.seed, key),
                ),
            )
        )
    return out


def critique_request(
    question: str, response: str, images: list[Any] | None = None, key: str = "", template: str = ""
) -> GenRequest:
    """A request for the reward model's critique of one (question, image, response)."""
    from mmrlhf_ray.data.prompts import CRITIQUE_PROMPT, chat_messages, critique_prompt

    text = critique_prompt(question, response, template or CRITIQUE_PROMPT)
    images = list(images or [])
    return GenRequest(
        key=key or hashlib.sha1(text.encode()).hexdigest()[:12],
        messages=chat_messages(text, n_images=len(images)),
        images=images,
        n=1,
    )


def spec_dict(spec: ModelSpec) -> dict[str, Any]:
    return asdict(spec)
