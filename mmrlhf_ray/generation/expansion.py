"""Critique expansion (paper Table 7): the requests that ask a model to expand an\nannotator's short reason (or to write a critique), and the checks an expansion must pass\nbefore it replaces the reason (a verdict it must not contradict, text that reads as text)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from mmrlhf_ray.generation.config import ModelSpec
from mmrlhf_ray.generation.requests import GenRequest, stable_seed

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
