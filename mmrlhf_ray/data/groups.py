"""Preference pairs grouped per query: K distinct responses, pairs as indices into them.

The pair table (``PAIR_SCHEMA``) repeats each response in every pair it takes part in
(K responses of differing rank give up to K(K-1)/2 pairs). Scoring (one ``/v1/compare``
per query), reference log-probs and MM-DPO training all handle each distinct response
once, so they share one grouping: ``group_pairs(rows)`` groups by ``query_id``,
de-duplicates responses by ``chosen_id`` / ``rejected_id`` (a hash of the text when an
id is missing) and points each pair at two of the K responses.

Bad pairs are returned as quarantine rows naming the pair and the field, never dropped:
``len(rows) == count_pairs(groups) + len(quarantine)``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.data.schemas import MEDIA_KEYS, validate_row


@dataclass
class PairRef:
    """One pair of a group: indices of its chosen/rejected responses in the group."""

    pair_id: str
    chosen: int
    rejected: int
    margin: float | None  # reward margin delta (None when not scored)


@dataclass
class QueryGroup:
    """One query with its distinct responses and the pairs between them."""

    query_id: str
    question: str
    media: dict[str, Any]  # image / image_path / video_frames / video_path of the query
    category: str | None = None
    response_ids: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    critiques: list[str | None] = field(default_factory=list)  # when asked for
    ref_logps: list[float | None] = field(default_factory=list)
    pairs: list[PairRef] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the pair rows (keep_rows)

    def response_index(
        self,
        response_id: str,
        text: str,
        ref_logp: float | None = None,
        critique: str | None = None,
    ) -> int:
        """Index of the response, adding it if new; raises ValueError on a conflict."""
        if response_id in self.response_ids:
            i = self.response_ids.index(response_id)
            if self.responses[i] != text:
                raise ValueError("two different texts share this response id")
            if ref_logp is not None:
                known = self.ref_logps[i]
                if known is not None and not math.isclose(
                    known, ref_logp, rel_tol=1e-4, abs_tol=1e-3
                ):
                    raise ValueError(f"reference log-prob {ref_logp} disagrees with {known}")
                self.ref_logps[i] = ref_logp
            return i
        self.response_ids.append(response_id)
        self.responses.append(text)
        self.critiques.append(critique)
        self.ref_logps.append(ref_logp)
        return len(self.responses) - 1


def response_id_for(query_id: str, row_id: Any, text: str) -> str:
    """The given response id, or a stable one derived from the text when it is missing."""
    if row_id:
        return str(row_id)
    return f"{query_id}:txt-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def pair_quarantine(row: dict[str, Any], source: str, fld: str, reason: str) -> dict[str, Any]:
    """The quarantine row of one bad pair (media left out of ``raw``)."""
    raw = {k: v for k, v in row.items() if k not in MEDIA_KEYS}
    pid = row.get("pair_id")
    return quarantine_row(source, f"pair_id={pid}", fld, f"pair {pid}: {reason}", raw)


def media_of(row: dict[str, Any]) -> dict[str, Any]:
    """The query's media columns that are set."""
    return {k: row.get(k) for k in MEDIA_KEYS if row.get(k) is not None}


def _check_pair(row: dict[str, Any], need_margin: bool, need_ref: bool) -> tuple[str, str] | None:
    """(field, reason) of the first problem with the pair, or None."""
    problems = validate_row(row, "pair")
    if problems:
        fld, _, reason = problems[0].partition(":")
        return fld, reason.strip() or problems[0]
    if row["chosen_id"] and row["chosen_id"] == row.get("rejected_id"):
        return "rejected_id", "chosen and rejected are the same response"
    if row.get("is_tie"):
        return (
            "is_tie",
            "a tie (equal quality): no preference to learn (train-reward's tie term uses it)",
        )
    if need_margin:
        margin = row.get("margin")
        if margin is None or not math.isfinite(float(margin)):
            return "margin", "MM-DPO needs the reward margin delta (run `mmrlhf score`)"
    if need_ref:
        for fld in ("ref_chosen_logp", "ref_rejected_logp"):
            value = row.get(fld)
            if value is None or not math.isfinite(float(value)) or float(value) > 1e-4:
                return (
                    fld,
                    f"missing or invalid reference log-prob {value!r} (run `mmrlhf ref-logps`)",
                )
    return None


def _disagreement(group: QueryGroup, row: dict[str, Any]) -> tuple[str, str] | None:
    """(field, reason) when the pair's question or media differ from its query's."""
    if row["question"] != group.question:
        return "question", f"differs from other pairs of query {group.query_id}"
    media = media_of(row)
    if media != group.media:
        fld = next(k for k in MEDIA_KEYS if media.get(k) != group.media.get(k))
        return fld, f"media differ from other pairs of query {group.query_id}"
    return None


def _add_pair(group: QueryGroup, row: dict[str, Any], critiques: bool) -> None:
    """Index the pair's two responses in ``group``; ValueError names the side (``*_id``)."""
    qid, idx = group.query_id, {}
    for side in ("chosen", "rejected"):
        rid = response_id_for(qid, row.get(f"{side}_id"), row[side])
        critique = row.get(f"{side}_critique") if critiques else None
        try:
            idx[side] = group.response_index(rid, row[side], row.get(f"ref_{side}_logp"), critique)
        except ValueError as exc:
            raise ValueError(f"{side}_id", str(exc)) from exc
    margin = row.get("margin")
    group.pairs.append(
        PairRef(
            row["pair_id"],
            idx["chosen"],
            idx["rejected"],
            None if margin is None else float(margin),
        )
    )


def group_pairs(
    rows: Iterable[dict[str, Any]],
    source: str = "pairs",
    need_margin: bool = False,
    need_ref: bool = False,
    critiques: bool = False,
    keep_rows: bool = False,
) -> tuple[list[QueryGroup], list[dict[str, Any]]]:
    """Group pair rows by query; returns ``(groups sorted by query_id, quarantine_rows)``.

    A pair is quarantined (field named, ``source`` as its source) when it fails
    ``validate_row``, pairs a response with itself, disagrees with its query's question
    or media, or reuses a response id for another text. ``need_margin`` / ``need_ref``
    also quarantine pairs lacking a finite ``margin`` / reference log-probs;
    ``critiques`` keeps each response's ``*_critique``; ``keep_rows`` keeps the pair
    rows in ``group.rows`` (one per ``group.pairs`` entry, for writing them back).
    """
    groups: dict[str, QueryGroup] = {}
    quarantine: list[dict[str, Any]] = []
    for row in rows:
        qid = row.get("query_id")
        problem = _check_pair(row, need_margin, need_ref)
        if problem is None and qid in groups:
            problem = _disagreement(groups[qid], row)
        if problem:
            quarantine.append(pair_quarantine(row, source, *problem))
            continue
        group = groups.get(qid) or QueryGroup(
            qid, row["question"], media_of(row), row.get("category")
        )
        try:
            _add_pair(group, row, critiques)
        except ValueError as exc:
            quarantine.append(pair_quarantine(row, source, *exc.args))
            continue
        if keep_rows:
            group.rows.append(row)
        groups[qid] = group
    return [groups[k] for k in sorted(groups)], quarantine


def split_groups(
    groups: list[QueryGroup], heldout_fraction: float, seed: int
) -> tuple[list[QueryGroup], list[QueryGroup]]:
    """Deterministic train / held-out split by query id (a hash, so it survives reorder)."""

    def score(g: QueryGroup) -> float:
        digest = hashlib.sha1(f"{seed}:{g.query_id}".encode()).hexdigest()
        return int(digest[:8], 16) / 0xFFFFFFFF

    held = [g for g in groups if score(g) < heldout_fraction]
    train = [g for g in groups if score(g) >= heldout_fraction]
    return train, held


def count_pairs(groups: list[QueryGroup]) -> int:
    return sum(len(g.pairs) for g in groups)
