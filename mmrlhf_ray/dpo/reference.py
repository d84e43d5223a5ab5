"""Reference log-probs, once per unique response, before training (pure torch).

``reference_logps`` runs the reference policy over query groups with the forward training
uses (``forward="packed"``: prompt and media once per query, its K responses packed
behind it; ``"grouped"``: K rows per query), so ``log pi_ref(y|x)`` is computed exactly
as ``log pi(y|x)`` will be at step 0.
``fill_pairs`` writes them back into the pair rows (``ref_chosen_logp``,
``ref_rejected_logp``). The Ray Data actor (``actors/ref_logps.py``) wraps this.
"""

from __future__ import annotations

from typing import Any

import torch

from mmrlhf_ray.data.groups import QueryGroup, pair_quarantine, response_id_for
from mmrlhf_ray.data.media import MediaError
from mmrlhf_ray.dpo.batching import encode_group
from mmrlhf_ray.dpo.packed import collate_batch, forward_logps


def _error_rows(group: QueryGroup, fld: str, reason: str) -> list[dict[str, Any]]:
    return [
        {
            "query_id": group.query_id,
            "response_id": rid,
            "ref_logp": None,
            "n_tokens": None,
            "error_field": fld,
            "error": reason,
        }
        for rid in group.response_ids
    ]


@torch.no_grad()
def reference_logps(
    model,
    processor,
    groups: list[QueryGroup],
    max_response_tokens: int = 256,
    max_frames: int = 4,
    forward: str = "packed",
) -> list[dict[str, Any]]:
    """One row per unique response: query_id, response_id, ref_logp, n_tokens, error*.

    A query whose media cannot be decoded yields rows with ``error_field``/``error``
    set (the caller quarantines its pairs) instead of failing the whole batch.
    """
    encoded, out = [], []
    for group in groups:
        try:
            encoded.append(encode_group(processor, group, max_response_tokens, max_frames))
        except MediaError as exc:
            out += _error_rows(group, exc.field, str(exc))
        except (OSError, ValueError) as exc:
            out += _error_rows(group, "image", f"{type(exc).__name__}: {exc}")
    if not encoded:
        return out
    pad = getattr(processor, "tokenizer", processor).pad_token_id
    batch = collate_batch(encoded, pad, forward)
    device = next(model.parameters()).device
    logps, n_tokens = forward_logps(model, batch.to(device), frozen_vision=True)
    row = 0
    for eq in encoded:
        for rid in eq.group.response_ids:
            out.append(
                {
                    "query_id": eq.group.query_id,
                    "response_id": rid,
                    "ref_logp": float(logps[row]),
                    "n_tokens": int(n_tokens[row]),
                    "error_field": None,
                    "error": None,
                }
            )
            row += 1
    return out


def check_reference_logps(
    model,
    processor,
    groups: list[QueryGroup],
    forward: str,
    max_response_tokens: int = 256,
    max_frames: int = 4,
    atol: float = 1e-3,
    rtol: float = 1e-4,
) -> float:
    """Re-score ``groups`` with ``forward`` and compare with their stored reference
    log-probs; returns the largest difference, raises ValueError naming the response
    that disagrees (a reference made by another forward kind must give the same values).
    """
    worst = 0.0
    scored = reference_logps(model, processor, groups, max_response_tokens, max_frames, forward)
    stored = {
        (g.query_id, rid): v
        for g in groups
        for rid, v in zip(g.response_ids, g.ref_logps, strict=True)
    }
    for s in scored:
        ref = stored.get((s["query_id"], s["response_id"]))
        if ref is None or s["ref_logp"] is None:
            continue
        diff = abs(s["ref_logp"] - ref)
        worst = max(worst, diff)
        if diff > atol + rtol * abs(ref):
            raise ValueError(
                f"query {s['query_id']} response {s['response_id']}: ref_logp {ref:.6f} stored, "
                f"{s['ref_logp']:.6f} with forward={forward}: re-run ref-logps with forward={forward}"
            )
    return worst


def fill_pairs(
    rows: list[dict[str, Any]], scored: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pairs with ``ref_*_logp`` filled, and quarantine rows for pairs that failed.

    ``scored`` rows come from ``reference_logps``; a pair fails when either response has
    an error or no score (the quarantine row names the field).
    """
    by_key = {(s["query_id"], s["response_id"]): s for s in scored}
    done, quarantine = [], []
    for row in rows:
        qid = row["query_id"]
        keys = {
            "chosen": (qid, response_id_for(qid, row.get("chosen_id"), row["chosen"])),
            "rejected": (qid, response_id_for(qid, row.get("rejected_id"), row["rejected"])),
        }
        problem = None
        for side, key in keys.items():
            s = by_key.get(key)
            if s is None:
                problem = (f"{side}_id", f"no reference log-prob for response {key[1]}")
            elif s["error"]:
                problem = (s["error_field"], s["error"])
            if problem:
                break
        if problem:
            quarantine.append(pair_quarantine(row, "ref-logps", *problem))
            continue
        done.append(
            {
                **row,
                "ref_chosen_logp": by_key[keys["chosen"]]["ref_logp"],
                "ref_rejected_logp": by_key[keys["rejected"]]["ref_logp"],
            }
        )
    return done, quarantine
