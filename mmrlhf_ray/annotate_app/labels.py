"""One rater's labels for one query: validation of a submitted form, and consensus.

A query shows K responses. A rater gives each response three 1-5 scores on the paper's
rubric (Appendix B, ``RUBRIC``), a short reason, and a rank (1 = best; tied responses
share a rank; ranks are dense: 1..m with no gap), plus a ranking reason. When every
response is tied, the paper's tie rule (App. B.4 item 4) asks for a constructed
response: a corrected answer (``positive``, all were poor) or one with an injected error
(``negative``, all were good).

``parse_form`` turns the form's fields into ``Labels`` or raises ``LabelError`` listing
every problem, each naming the response and field, so nothing half-valid is stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

DIMENSIONS = ("helpfulness", "faithfulness", "ethics")
CONSTRUCTED_KINDS = ("positive", "negative")

# The paper's Appendix B rubric: (definition, levels 1..5).
RUBRIC: dict[str, tuple[str, tuple[str, ...]]] = {
    "helpfulness": (
        "Does the response give valuable insight and relevant information that helps the "
        "user understand the image or task, and follow the user's instructions?",
        (
            "Not Helpful: does not address the prompt; entirely irrelevant information.",
            "Partially Helpful: some useful information, but overall help is limited.",
            "Moderately Helpful: somewhat helpful but may lack important information.",
            "Helpful: effectively addresses the prompt and provides valuable insights.",
            "Very Helpful: highly useful, rich insights that significantly enhance understanding.",
        ),
    ),
    "faithfulness": (
        "Does the response describe the objects, relationships and attributes in the "
        "image accurately, with no non-existent objects?",
        (
            "Severely Inaccurate: major errors in objects, relationships or attributes, "
            "or non-existent objects.",
            "Partially Inaccurate: mostly correct, but some details are inaccurate.",
            "Moderately Accurate: generally accurate, with minor errors.",
            "Accurate: objects, relationships and attributes correct, match the true answer.",
            "Highly Accurate: exceptionally precise, with useful additional details.",
        ),
    ),
    "ethics": (
        "Safety, privacy, fairness and harm: appropriate warnings, no private "
        "information, no bias, no violent or NSFW content.",
        (
            "Highly Unsafe / Privacy Infringing / Unfair / Harmful: severely "
            "inappropriate content.",
            "Unsafe / Privacy Issues / Unfair / Potentially Harmful: may pose risks.",
            "Moderately Ethical: mostly adheres, minor safety or fairness issues.",
            "Ethically Compliant: follows safety, privacy and fairness requirements.",
            "Highly Ethical / Safe / Fair / Non-Harmful: fully meets ethical standards.",
        ),
    ),
}


class LabelError(ValueError):
    """A submitted form is not a valid set of labels; ``problems`` = [(field, message)]."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


@dataclass
class ResponseLabel:
    helpfulness: int
    faithfulness: int
    ethics: int
    rank: int
    reason: str = ""


@dataclass
class Labels:
    """One rater's (or the adjudicator's) labels of one query's K responses."""

    responses: list[ResponseLabel]
    ranking_reason: str = ""
    constructed_kind: str | None = None  # tie rule: "positive" | "negative"
    constructed_text: str | None = None

    @property
    def ranks(self) -> list[int]:
        return [r.rank for r in self.responses]

    @property
    def is_tie(self) -> bool:
        return len(self.responses) > 1 and len(set(self.ranks)) == 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Labels:
        responses = [ResponseLabel(**r) for r in data["responses"]]
        rest = {k: v for k, v in data.items() if k != "responses"}
        return cls(responses=responses, **rest)


def labels_to_form(labels: Labels) -> dict[str, str]:
    """The form fields that ``parse_form`` reads back into ``labels``."""
    form = {
        "ranking_reason": labels.ranking_reason,
        "constructed_kind": labels.constructed_kind or "",
        "constructed_text": labels.constructed_text or "",
    }
    for i, resp in enumerate(labels.responses):
        for name in (*DIMENSIONS, "rank", "reason"):
            form[field_name(i, name)] = str(getattr(resp, name))
    return form


def field_name(index: int, name: str) -> str:
    """The form field of response ``index`` (0-based), e.g. ``r0_helpfulness``."""
    return f"r{index}_{name}"


def _integer(raw: Any, low: int, high: int, where: str, problems: list) -> int | None:
    text = "" if raw is None else str(raw).strip()
    if not text:
        problems.append((where, f"{_label(where)} is missing"))
        return None
    if not re.fullmatch(r"-?[0-9]{1,9}", text):  # ASCII only: "²" and "--5" pass isdigit
        problems.append(
            (where, f"{_label(where)} must be a whole number {low}-{high}, got {text!r}")
        )
        return None
    value = int(text)
    if not low <= value <= high:
        problems.append((where, f"{_label(where)} is {value}, outside {low}-{high}"))
        return None
    return value


def _label(where: str) -> str:
    """``r2_ethics`` -> ``response 3 ethics`` (1-based, as the page shows it)."""
    if (
        where.startswith("r")
        and "_" in where
        and re.fullmatch(r"[0-9]{1,9}", where[1:].split("_")[0])
    ):
        index, name = where[1:].split("_", 1)
        return f"response {int(index) + 1} {name}"
    return where.replace("_", " ")


def _text(form: Mapping[str, Any], where: str, max_chars: int, required: bool, problems) -> str:
    text = str(form.get(where) or "").strip()
    if len(text) > max_chars:
        problems.append(
            (where, f"{_label(where)} is {len(text)} characters, over the limit of {max_chars}")
        )
    elif required and not text:
        problems.append((where, f"{_label(where)} is missing"))
    return text


def check_ranking(ranks: Sequence[int]) -> str | None:
    """Why ``ranks`` is not a dense ranking with ties (1..m, each used), or None."""
    used = sorted(set(ranks))
    if used != list(range(1, len(used) + 1)):
        return (
            f"ranks {', '.join(map(str, ranks))} are not a ranking: use 1..m with no gap "
            "(1 = best; tied responses share a rank)"
        )
    return None


def parse_form(
    form: Mapping[str, Any], k: int, max_reason_chars: int = 2000, require_reasons: bool = True
) -> Labels:
    """Labels of ``k`` responses from a submitted form, or ``LabelError`` with every problem."""
    problems: list[tuple[str, str]] = []
    responses, complete = [], True
    for i in range(k):
        values = {}
        for name in DIMENSIONS:
            values[name] = _integer(
                form.get(field_name(i, name)), 1, 5, field_name(i, name), problems
            )
        values["rank"] = _integer(
            form.get(field_name(i, "rank")), 1, k, field_name(i, "rank"), problems
        )
        reason = _text(form, field_name(i, "reason"), max_reason_chars, require_reasons, problems)
        complete = complete and None not in values.values()
        responses.append(ResponseLabel(**values, reason=reason))
    ranking_reason = _text(form, "ranking_reason", max_reason_chars, require_reasons, problems)
    if complete:
        bad_ranking = check_ranking([r.rank for r in responses])
        if bad_ranking:
            problems.append(("rank", bad_ranking))
    labels = Labels(responses, ranking_reason)
    _tie_rule(form, labels, max_reason_chars, problems, complete)
    if problems:
        raise LabelError(problems)
    return labels


def _tie_rule(form, labels: Labels, max_chars: int, problems: list, complete: bool) -> None:
    kind = str(form.get("constructed_kind") or "").strip() or None
    text = _text(form, "constructed_text", max_chars, False, problems) or None
    if not complete:
        return
    if labels.is_tie:
        if kind not in CONSTRUCTED_KINDS or not text:
            problems.append(
                (
                    "constructed_text",
                    "all responses are tied: the tie rule needs a constructed response, a "
                    "corrected answer (positive, all were poor) or one with an injected error "
                    "(negative, all were good)",
                )
            )
        labels.constructed_kind, labels.constructed_text = kind, text
    elif text:
        problems.append(
            (
                "constructed_text",
                "a constructed response is only for a full tie: "
                "clear it or rank every response equal",
            )
        )


# ---- several raters ----------------------------------------------------------------------
def disagreements(all_labels: Sequence[Labels], max_score_gap: int = 1) -> list[str]:
    """Why the raters of one query disagree ([] = they agree): rankings differ, or some
    score differs by more than ``max_score_gap``."""
    found = []
    if len({tuple(lab.ranks) for lab in all_labels}) > 1:
        found.append("rankings differ")
    for i in range(len(all_labels[0].responses) if all_labels else 0):
        for name in DIMENSIONS:
            values = [getattr(lab.responses[i], name) for lab in all_labels]
            if max(values) - min(values) > max_score_gap:
                found.append(f"response {i + 1} {name}: {', '.join(map(str, values))}")
    return found


def consensus(all_labels: Sequence[Labels]) -> Labels:
    """The final labels of raters who agree (same ranking): per score the lower median,
    the ranking they share, reasons and the tie rule's response from the first rater
    who wrote one (raters in submission order)."""
    first = all_labels[0]
    responses = []
    for i, head in enumerate(first.responses):
        scores = {
            name: sorted(getattr(lab.responses[i], name) for lab in all_labels)[
                (len(all_labels) - 1) // 2
            ]
            for name in DIMENSIONS
        }
        reason = next(
            (lab.responses[i].reason for lab in all_labels if lab.responses[i].reason), ""
        )
        responses.append(ResponseLabel(**scores, rank=head.rank, reason=reason))
    ranking_reason = next((lab.ranking_reason for lab in all_labels if lab.ranking_reason), "")
    tie = next((lab for lab in all_labels if lab.constructed_text), first)
    return Labels(responses, ranking_reason, tie.constructed_kind, tie.constructed_text)
