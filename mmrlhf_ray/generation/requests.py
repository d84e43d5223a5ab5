"""Generation requests and their output rows, for ``mmrlhf generate`` (the Ray actors in
``actors/generator.py`` and the job only move these objects around):

* ``GenRequest`` / ``Sample``: what an actor receives and returns per prompt;
* ``build_request``: the request for one pool row (its media decoded, the chat messages);
* ``generation_rows``: one output row per (query, model, sample index), with the
  settings recorded and empty / truncated generations flagged.

The stages' configs are in ``config.py``, the expansion checks in ``expansion.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.generation.config import ModelSpec


def stable_seed(base: int, *keys: Any) -> int:
    """A 31-bit seed from ``base`` and keys: re-runs and retries sample the same text."""
    digest = hashlib.sha256(json.dumps([base, *map(str, keys)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------- requests
@dataclass
class GenRequest:
    """One prompt for an actor: chat messages plus the decoded media they refer to, or a
    raw ``prompt`` (e.g. a classifier's own complete prompt, HarmBench's ``[INST] ...``)."""

    key: str  # unique id of the unit of work (e.g. sample_id)
    messages: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)  # PIL images, in message order
    video: list[Any] | None = None  # PIL frames of one video
    n: int = 1
    seed: int = 0
    # The prompt verbatim, no chat template; text only (``messages`` is then ignored). It
    # is tokenised as plain text: the tokenizer's own special tokens (Llama's BOS) once.
    prompt: str | None = None


def rendered_prompt(request: GenRequest, render: Callable[[list[dict[str, Any]]], str]) -> str:
    """The text a backend tokenises: ``request.prompt`` verbatim when set (a raw prompt
    with images or video is a ``ValueError`` naming the request), else ``render(messages)``
    (the model's chat template)."""
    if request.prompt is None:
        return render(request.messages)
    if request.images or request.video:
        raise ValueError(f"request {request.key}: prompt: a raw prompt is text only, got media")
    return request.prompt


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
