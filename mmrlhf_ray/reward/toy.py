"""Preference pairs with ground-truth critiques from the shapes world (tests, benchmarks).

Each query of the toy pool gets three responses of strictly graded quality, written by
the toy world's response styles, so every pair's preference is known exactly:

* benign queries: ``correct`` (rank 1) > ``wrong_attribute`` or ``hallucination``
  (rank 2) > ``off_topic`` or a needless ``refusal`` (rank 3);
* harmful (safety) queries: ``refusal`` (1) > ``off_topic`` (2) > ``unsafe`` (3).

Every response carries a short "human" reason (like the annotators' ``score_reasons``)
and a longer "expanded" critique that, like a Table 7 expansion, restates the reason
with the specifics of the image (the reference answer). The rows follow
``PAIR_SCHEMA`` and go through the same code as pairs from the pipeline.
"""

from __future__ import annotations

import random
from itertools import combinations
from typing import Any

from mmrlhf_ray.toyworld.queries import ground_truth, make_row
from mmrlhf_ray.toyworld.responses import respond

_HUMAN = {
    "correct": "Correct and faithful to the image.",
    "wrong_attribute": "Wrong: one detail does not match the image.",
    "hallucination": "Mentions an object that is not in the image.",
    "off_topic": "Off topic: does not answer the question.",
    "refusal": "Needless refusal of a harmless question.",
    "refusal_harmful": "Rightly refuses a harmful request.",
    "unsafe": "Unsafe: helps with a harmful request.",
}


def _expanded(style: str, reference: str) -> str:
    if style == "correct":
        return f"The response is correct. It matches the image: {reference} Good answer."
    if style == "wrong_attribute":
        return f"The response is wrong. The image shows otherwise: {reference} Bad answer."
    if style == "hallucination":
        return f"The response is wrong. It adds an object not in the image: {reference} Bad answer."
    if style == "off_topic":
        return "The response is off topic. It does not answer the question. Bad answer."
    if style == "refusal":
        return (
            f"The response is a needless refusal. The question is harmless: {reference} Bad answer."
        )
    if style == "refusal_harmful":
        return "The response is safe. It refuses to help cause harm. Good answer."
    if style == "unsafe":
        return "The response is unsafe. It helps to cause harm. Bad answer."
    raise ValueError(f"style: {style!r} unknown")


def _styles(category: str, rng: random.Random) -> list[str]:
    """Three styles of strictly decreasing quality for a query of ``category``."""
    if category == "safety":
        return ["refusal", "off_topic", "unsafe"]
    return [
        "correct",
        rng.choice(["wrong_attribute", "hallucination"]),
        rng.choice(["off_topic", "refusal"]),
    ]


def _pool_rows(n: int, seed: int, mix: dict[str, float]) -> list[dict[str, Any]]:
    """The first ``n`` pool rows the toy world can draw (an index it cannot is skipped)."""
    out, index = [], 0
    while len(out) < n and index < 4 * n + 16:
        try:
            out.append(make_row("reward", seed, index, mix))
        except ValueError:  # a query the generator cannot pose for this scene
            pass
        index += 1
    return out


SUBTLE_FRAME = (
    "Let me look at the picture carefully before answering. {answer} "
    "That is what the image shows, as far as I can tell from looking at it."
)


def toy_pairs(
    n_queries: int, seed: int = 0, mix: dict[str, float] | None = None, subtle: bool = False
) -> list[dict[str, Any]]:
    """``3 * n_queries`` pair rows (PAIR_SCHEMA dicts) from the first pool rows.

    ``subtle``: one pair per query whose quality difference needs reading against the
    image: ``correct`` > ``wrong_attribute`` (one colour / count / position / option
    wrong), both inside the same long frame (``SUBTLE_FRAME``), so length, refusals and
    topic give nothing away; benign categories only (no safety).
    """
    mix = mix or {"long": 0.2, "short": 0.3, "mcq": 0.2, "safety": 0.15, "video": 0.15}
    if subtle:
        mix = {k: v for k, v in mix.items() if k != "safety"}
    rows = []
    for row in _pool_rows(n_queries, seed, mix):
        gt = ground_truth(row)
        category = gt["category"]
        rng = random.Random(f"{row['sample_id']}|{seed}")
        reference = row.get("reference_answer") or ""
        styles = ["correct", "wrong_attribute"] if subtle else None
        styles = styles or _styles(category, rng)
        texts = [respond(gt, reference, s, rng) for s in styles]
        if subtle:
            texts = [SUBTLE_FRAME.format(answer=t) for t in texts]
        keys = [s + ("_harmful" if category == "safety" and s == "refusal" else "") for s in styles]
        for a, b in combinations(range(len(styles)), 2):
            rows.append(
                {
                    "pair_id": f"{row['sample_id']}::{a}>{b}",
                    "query_id": row["sample_id"],
                    "question": row["question"],
                    "image": row.get("image"),
                    "video_frames": row.get("video_frames"),
                    "category": category,
                    "chosen_id": f"{row['sample_id']}#{a}",
                    "rejected_id": f"{row['sample_id']}#{b}",
                    "chosen": texts[a],
                    "rejected": texts[b],
                    "chosen_rank": a + 1,
                    "rejected_rank": b + 1,
                    "chosen_reason": _HUMAN[keys[a]],
                    "rejected_reason": _HUMAN[keys[b]],
                    "chosen_critique": _expanded(keys[a], reference),
                    "rejected_critique": _expanded(keys[b], reference),
                    "is_tie": False,
                }
            )
    return rows
