"""Online margin scoring, without Ray: pairs grouped per query, margins, retries.

The ``score`` stage asks the reward service for δ = r(chosen) − r(rejected) of every
preference pair (the signal of the paper's Dynamic Reward Scaling, Sec. 4). A query
with K responses has up to C(K, 2) pairs but only K distinct responses, so the pairs
are grouped per query and each distinct response is scored once, in one
``/v1/compare`` call per query (K forwards, not 2·C(K, 2)).

* ``groups.group_pairs(rows, keep_rows=True)`` -> (``QueryGroup`` list, quarantined
  rows): pairs per ``query_id``, bad rows quarantined with the field named.
* ``compare_payload(group)`` -> the JSON body of ``POST /v1/compare``.
* ``group_margins(group, scores)`` -> one margin per pair row.
* ``RetryPolicy`` + ``call_with_retries``: exponential backoff with jitter for
  ``ServiceUnavailable`` (5xx, 429, connection errors); ``RequestRejected`` (a 4xx:
  the input is wrong) is not retried and quarantines the query; anything else, or
  exhausted retries, raises ``ScoringFailed``. Never a silent reward of 0.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from mmrlhf_ray.data.groups import QueryGroup, pair_quarantine
from mmrlhf_ray.data.media import frame_paths, sample_uniform
from mmrlhf_ray.service.config import RetryPolicy
from mmrlhf_ray.service.wire import CompareRequest

T = TypeVar("T")
MARGIN_SOURCE = "reward-service"


class ServiceUnavailable(RuntimeError):
    """The service failed or could not be reached (5xx, 429, timeout): worth a retry."""


class RequestRejected(ValueError):
    """The service refused the input (4xx): retrying cannot help; ``field`` names why."""

    def __init__(self, status: int, field: str, reason: str):
        super().__init__(f"HTTP {status}: {field}: {reason}")
        self.status, self.field, self.reason = status, field, reason


class ScoringFailed(RuntimeError):
    """Scoring could not be completed; the stage stops (finished parts are kept)."""


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    what: str = "request",
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, Exception], None] | None = None,
) -> T:
    """``fn()``, retried on ``ServiceUnavailable`` with backoff.

    ``RequestRejected`` propagates at once (the caller quarantines); any other error or
    running out of attempts raises ``ScoringFailed`` naming ``what``.
    """
    last: Exception | None = None
    for attempt in range(policy.max_attempts):
        try:
            return fn()
        except RequestRejected:
            raise
        except ServiceUnavailable as exc:
            last = exc
            if attempt + 1 < policy.max_attempts:
                if on_retry:
                    on_retry(attempt + 1, exc)
                sleep(policy.delay(attempt))
        except Exception as exc:  # a bug or a malformed answer: stop, loudly
            raise ScoringFailed(f"{what}: {type(exc).__name__}: {exc}") from exc
    raise ScoringFailed(f"{what}: gave up after {policy.max_attempts} attempts: {last}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def compare_payload(group: QueryGroup, max_frames: int = 8) -> dict[str, Any]:
    """The ``POST /v1/compare`` body for one query (media sent inline as base64), built
    with the service's own request model (``wire.CompareRequest``): one wire format."""
    media = group.media
    image, frames = None, None
    if media.get("image") is not None:
        image = _b64(media["image"])
    elif media.get("image_path"):
        image = _b64(Path(media["image_path"]).read_bytes())
    elif media.get("video_frames"):
        frames = [_b64(f) for f in sample_uniform(list(media["video_frames"]), max_frames)]
    elif media.get("video_path"):
        frames = [
            _b64(p.read_bytes())
            for p in sample_uniform(frame_paths(media["video_path"]), max_frames)
        ]
    critiques = list(group.critiques) if any(c is not None for c in group.critiques) else None
    request = CompareRequest(
        question=group.question,
        responses=list(group.responses),
        critiques=critiques,
        image=image,
        video_frames=frames,
    )
    return request.model_dump(exclude_none=True)


def check_scores(group: QueryGroup, answer: Any) -> list[float]:
    """The service's scores for ``group``, or ``ScoringFailed`` if they are not K finite numbers."""
    scores = answer.get("scores") if isinstance(answer, dict) else None
    if not isinstance(scores, list) or len(scores) != len(group.responses):
        raise ScoringFailed(
            f"query {group.query_id}: expected {len(group.responses)} scores, "
            f"got {str(answer)[:200]}"
        )
    if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
        raise ScoringFailed(f"query {group.query_id}: non-finite score in {scores}")
    return [float(s) for s in scores]


def group_margins(group: QueryGroup, scores: list[float]) -> list[dict[str, Any]]:
    """The group's pair rows with margin = r(chosen) − r(rejected), source reward-service."""
    return [
        dict(row, margin=scores[p.chosen] - scores[p.rejected], margin_source=MARGIN_SOURCE)
        for row, p in zip(group.rows, group.pairs, strict=True)
    ]


def chunk(items: list[T], size: int) -> list[list[T]]:
    """``items`` cut into consecutive lists of ``size`` (the resume units of the stage)."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [items[i : i + size] for i in range(0, len(items), size)]


def _score_group(
    group: QueryGroup, compare: Callable[[dict], dict], policy: RetryPolicy, max_frames: int
) -> tuple[list[dict], list[dict]]:
    """(scored rows, quarantined rows) of one query; ``ScoringFailed`` propagates."""
    try:
        body = compare_payload(group, max_frames)
    except (OSError, ValueError) as exc:  # unreadable media file / frame folder
        fld = next(iter(group.media), "image")
        return [], [
            pair_quarantine(r, "pairs", fld, f"cannot read media: {exc}") for r in group.rows
        ]
    try:
        answer = call_with_retries(lambda: compare(body), policy, what=f"query {group.query_id}")
    except RequestRejected as exc:
        refused = re.fullmatch(r"(?:responses|critiques)\[(\d+)\]", exc.field or "")
        if refused is None or int(refused.group(1)) >= len(group.responses):
            reason = f"service refused the query (HTTP {exc.status}): {exc.reason}"
            return [], [pair_quarantine(r, "reward-service", exc.field, reason) for r in group.rows]
        # One response (or its critique) refused: only its pairs are lost; the other
        # responses' scores do not depend on it, so the rest of the query is re-sent.
        i = int(refused.group(1))
        reason = (
            f"service refused response {group.response_ids[i]} (HTTP {exc.status}, "
            f"{exc.field}): {exc.reason}"
        )
        rest, lost = without_response(group, i)
        bad = [pair_quarantine(r, "reward-service", exc.field, reason) for r in lost]
        if not rest.pairs:
            return [], bad
        scored, more = _score_group(rest, compare, policy, max_frames)
        return scored, bad + more
    return group_margins(group, check_scores(group, answer)), []


def without_response(group: QueryGroup, i: int) -> tuple[QueryGroup, list[dict]]:
    """(the group without response ``i`` and its pairs, the pair rows that involved it)."""
    keep = [j for j in range(len(group.responses)) if j != i]
    index = {j: n for n, j in enumerate(keep)}

    def kept(values: list) -> list:
        return [values[j] for j in keep] if len(values) == len(group.responses) else values

    pairs, rows, lost = [], [], []
    for p, row in zip(group.pairs, group.rows, strict=True):
        if i in (p.chosen, p.rejected):
            lost.append(row)
        else:
            pairs.append(replace(p, chosen=index[p.chosen], rejected=index[p.rejected]))
            rows.append(row)
    rest = replace(
        group,
        response_ids=kept(group.response_ids),
        responses=kept(group.responses),
        critiques=kept(group.critiques),
        ref_logps=kept(group.ref_logps),
        pairs=pairs,
        rows=rows,
    )
    return rest, lost


def score_groups(
    groups: list[QueryGroup],
    compare: Callable[[dict], dict],
    policy: RetryPolicy,
    concurrency: int = 8,
    max_frames: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Score every group with ``compare(body) -> answer`` (``concurrency`` in flight).

    Returns (pair rows with margins, quarantined rows), in the groups' order. The first
    ``ScoringFailed`` cancels what has not started and is raised: the caller writes
    nothing for this unit of work, so a re-run redoes it.
    """
    from concurrent.futures import ThreadPoolExecutor

    scored: list[dict] = []
    bad: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(_score_group, g, compare, policy, max_frames) for g in groups]
        try:
            for fut in futures:
                ok, rejected = fut.result()
                scored += ok
                bad += rejected
                if progress:
                    progress(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return scored, bad
