"""Optional assist: the critique reward model's critique as a draft reason.

Before raters start, ``draft_critiques`` asks a critic for one critique per response of
every query that has none yet and stores them. The rater's page then shows each as the
reason's starting text, marked as a reward-model draft; on submit the store records how
many drafts were shown and how many were kept unchanged, so the lead sees the share of
drafts raters accepted (a reason to trust, or not, the reward model as a co-annotator,
paper App. D).

A critic is any ``list[AssistItem] -> list[str]``: ``scorer_critic`` wraps the plain
``serving.RewardScorer`` (the model in this process); ``service_request`` /
``service_critiques`` build and read the reward service's ``POST /v1/score`` body.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmrlhf_ray.annotate_app.store import Store


@dataclass
class AssistItem:
    question: str
    response: str
    image: bytes | None = None
    frames: list[bytes] = field(default_factory=list)


Critic = Callable[[list[AssistItem]], list[str]]


def query_items(store: Store, query_id: str) -> list[AssistItem]:
    """One item per response of the query, with its image or video frames."""
    task = store.query(query_id).task
    image = store.media(query_id, "image", 0)
    rows = store.read(
        "SELECT data FROM media WHERE query_id = ? AND kind = 'frame' ORDER BY idx", (query_id,)
    )
    frames = [r["data"] for r in rows]
    return [AssistItem(task["question"], r["text"], image, frames) for r in task["responses"]]


def draft_critiques(store: Store, critic: Critic, batch_queries: int = 8) -> int:
    """Critiques for every query without drafts, stored per query; returns how many
    queries got drafts. Empty critiques are stored as no draft."""
    todo = [q.query_id for q in store.queries() if store.assist(q.query_id) is None]
    for start in range(0, len(todo), batch_queries):
        ids = todo[start : start + batch_queries]
        items = [query_items(store, qid) for qid in ids]
        flat = [item for group in items for item in group]
        texts = critic(flat)
        if len(texts) != len(flat):
            raise RuntimeError(f"critic returned {len(texts)} critiques for {len(flat)} responses")
        at = 0
        for qid, group in zip(ids, items, strict=True):
            store.set_assist(qid, [t.strip() for t in texts[at : at + len(group)]])
            at += len(group)
    return len(todo)


def kept_counts(drafts: Sequence[str] | None, reasons: Sequence[str]) -> tuple[int, int]:
    """(drafts shown, drafts kept unchanged) for one submission."""
    if not drafts:
        return 0, 0
    shown = [(d, r) for d, r in zip(drafts, reasons, strict=True) if d]
    return len(shown), sum(d == r.strip() for d, r in shown)


# ---- critics ------------------------------------------------------------------------------
def scorer_critic(scorer: Any) -> Critic:
    """A critic over ``serving.RewardScorer`` (its ``score`` returns (score, critique))."""
    from PIL import Image

    from mmrlhf_ray.service.server import ScoringInput

    def critic(items: list[AssistItem]) -> list[str]:
        inputs = []
        for item in items:
            raw = [item.image] if item.image else item.frames[:1]
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in raw]
            inputs.append(ScoringInput(item.question, item.response, images))
        return [critique for _, critique in scorer.score(inputs)]

    return critic


def service_request(items: list[AssistItem]) -> dict:
    """The reward service's ``POST /v1/score`` body for ``items`` (media as base64)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    out = []
    for item in items:
        entry: dict[str, Any] = {"question": item.question, "response": item.response}
        if item.image:
            entry["image"] = b64(item.image)
        elif item.frames:
            entry["video_frames"] = [b64(f) for f in item.frames]
        out.append(entry)
    return {"items": out}


def service_critiques(answer: dict) -> list[str]:
    return [str(r["critique"]) for r in answer["results"]]
