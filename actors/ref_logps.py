"""Ray Data batch inference of reference log-probs: an actor pool of frozen policies.

Each actor loads the reference policy once and scores batches of query groups with
``mmrlhf_ray.dpo.reference.reference_logps`` (packed by default: prompt and vision once
per query, its K responses behind it in one sequence). Input rows are one query each (``query_id``, ``question``, media,
``response_ids``, ``responses``, ``part``); output rows are one response each.

    ds = ray.data.from_items(query_rows)
    out = reference_logps_dataset(ds, policy_path, num_actors=2, queries_per_batch=8)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mmrlhf_ray.data.groups import QueryGroup
from mmrlhf_ray.data.schemas import MEDIA_KEYS


def _value(v: Any) -> Any:
    """numpy scalars/arrays from a Ray Data batch back to plain Python."""
    if isinstance(v, np.ndarray):
        return [_value(x) for x in v.tolist()] if v.dtype == object else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def query_row(group: QueryGroup, part: int) -> dict[str, Any]:
    """The Ray Data row of one query group (the unit of work of the actors)."""
    return {
        "part": part,
        "query_id": group.query_id,
        "question": group.question,
        "response_ids": list(group.response_ids),
        "responses": list(group.responses),
        **{k: group.media.get(k) for k in MEDIA_KEYS},
    }


def _present(v: Any) -> bool:
    """Ray Data turns a missing (None) media cell into None or NaN."""
    if v is None:
        return False
    if isinstance(v, (float, np.floating)):
        return not np.isnan(v)
    return not (isinstance(v, np.ndarray) and v.dtype.kind == "f")


def _group_of(row: dict[str, Any]) -> QueryGroup:
    media = {k: _value(row[k]) for k in MEDIA_KEYS if _present(row.get(k))}
    return QueryGroup(
        str(row["query_id"]),
        str(row["question"]),
        media,
        response_ids=[str(x) for x in _value(row["response_ids"])],
        responses=[str(x) for x in _value(row["responses"])],
    )


class RefLogpsScorer:
    """Ray Data callable class: a frozen reference policy on one CPU (or GPU)."""

    def __init__(
        self,
        policy_path: str,
        max_response_tokens: int = 256,
        max_frames: int = 4,
        use_gpu: bool = False,
        bf16: bool = False,
        threads: int = 1,
        forward: str = "packed",
        attn_implementation: str = "sdpa",
        packed_attention: str = "auto",
    ):
        import torch

        from mmrlhf_ray.models.attention import configure_attention
        from mmrlhf_ray.models.families import load_model

        torch.set_num_threads(threads)
        dtype = torch.bfloat16 if bf16 else torch.float32
        self.model, self.processor = load_model(
            policy_path,
            dtype=dtype,
            device="cuda" if use_gpu else "cpu",
            attn_implementation=attn_implementation,
        )
        configure_attention(self.model, packed_attention=packed_attention)
        self.max_response_tokens, self.max_frames = max_response_tokens, max_frames
        self.forward = forward
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from mmrlhf_ray.dpo.reference import reference_logps

        n = len(batch["query_id"])
        rows = [{k: batch[k][i] for k in batch} for i in range(n)]
        groups = [_group_of(r) for r in rows]
        parts = {str(r["query_id"]): int(r["part"]) for r in rows}
        scored = reference_logps(
            self.model,
            self.processor,
            groups,
            self.max_response_tokens,
            self.max_frames,
            self.forward,
        )
        cols = ("query_id", "response_id", "ref_logp", "n_tokens", "error_field", "error")
        out: dict[str, list] = {c: [s[c] for s in scored] for c in cols}
        out["ref_logp"] = [float("nan") if v is None else v for v in out["ref_logp"]]
        out["n_tokens"] = [-1 if v is None else v for v in out["n_tokens"]]
        out["error_field"] = [v or "" for v in out["error_field"]]
        out["error"] = [v or "" for v in out["error"]]
        out["part"] = [parts[q] for q in out["query_id"]]
        out["actor_pid"] = [self.pid] * len(scored)
        return out


def reference_logps_dataset(
    ds,
    policy_path: str,
    num_actors: int = 2,
    queries_per_batch: int = 8,
    max_response_tokens: int = 256,
    max_frames: int = 4,
    use_gpu: bool = False,
    bf16: bool = False,
    forward: str = "packed",
    attn_implementation: str = "sdpa",
    packed_attention: str = "auto",
):
    """``ds`` (one row per query) mapped through a pool of ``num_actors`` scorers."""
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        RefLogpsScorer,
        fn_constructor_kwargs={
            "policy_path": policy_path,
            "max_response_tokens": max_response_tokens,
            "max_frames": max_frames,
            "use_gpu": use_gpu,
            "bf16": bf16,
            "forward": forward,
            "attn_implementation": attn_implementation,
            "packed_attention": packed_attention,
        },
        batch_size=queries_per_batch,
        compute=ActorPoolStrategy(size=num_actors),
        num_cpus=1,
        num_gpus=1 if use_gpu else 0,
        batch_format="numpy",
    )
