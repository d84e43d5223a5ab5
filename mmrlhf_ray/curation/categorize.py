"""The paper's query categories (Sec. 2.2, "Predefined Sampling Weights").

Image queries fall into three categories:

* ``mcq``: questions with options such as A, B, C or D;
* ``long``: the strong model's reply (our ``reference_answer``) exceeds 128 characters;
* ``short``: the reply is 128 characters or fewer.

Safety and video queries are their own domains (the paper does not re-balance them):
``category_hint`` names them, and any row whose media is a video is ``video``.
"""

from __future__ import annotations

import re
from typing import Any

from mmrlhf_ray.data.schemas import CATEGORIES

LONG_THRESHOLD = 128
# An option marker at a line start or after whitespace: "A.", "A)", "(A)", "A:".
_OPTION = r"(?:^|\s)\(?{letter}[\.\):]\s*\S"
_OPTION_RE = {letter: re.compile(_OPTION.format(letter=letter), re.MULTILINE) for letter in "ABCD"}
CATEGORY_CODES = {name: code for code, name in enumerate(CATEGORIES)}


class CategoryError(ValueError):
    """A row cannot be categorised; ``field`` names the column to blame."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def is_mcq(question: str) -> bool:
    """True when the question lists at least options A and B (the paper's A-D options)."""
    return bool(_OPTION_RE["A"].search(question) and _OPTION_RE["B"].search(question))


def categorize(row: dict[str, Any], long_threshold: int = LONG_THRESHOLD) -> str:
    """The category of one pool row: one of ``mmrlhf_ray.data.schemas.CATEGORIES``.

    Raises ``CategoryError`` when the row lacks what the decision needs (an image query
    that is not MCQ and has no reference answer cannot be called long or short).
    """
    hint = (row.get("category_hint") or "").strip().lower()
    if hint and hint not in CATEGORIES:
        raise CategoryError("category_hint", f"{hint!r} is not one of {', '.join(CATEGORIES)}")
    if hint in ("safety", "video"):
        return hint
    if row.get("video_frames") or row.get("video_path"):
        return "video"
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise CategoryError("question", "missing or empty")
    if hint == "mcq" or is_mcq(question):
        return "mcq"
    if hint in ("long", "short"):
        return hint
    answer = row.get("reference_answer")
    if not isinstance(answer, str) or not answer.strip():
        raise CategoryError("reference_answer", "missing: needed to tell long from short")
    return "long" if len(answer) > long_threshold else "short"
