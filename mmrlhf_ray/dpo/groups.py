"""From a table of preference pairs to query groups: K unique responses + pair indices.

The pair table (``PAIR_SCHEMA``) repeats each response in every pair it takes part in
(K responses of differing rank give up to K(K-1)/2 pairs). Training forwards each
response once, so pairs are grouped by ``query_id`` and responses de-duplicated by
``chosen_id`` / ``rejected_id``; each pair then points at two of the K responses.

Bad pairs are returned as quarantine rows naming the pair and the field, never dropped:
``len(pairs) == sum(len(g.pairs) for g in groups) + len(quarantine)``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from mmrlhf_ray.schemas import validate_row

MEDIA_KEYS = ("image", "image_path", "video_frames", "video_path")


@dataclass
class PairRef:
    """One pair of a group: indices of its chosen/rejected responses in the group."""

    pair_id: str
    chosen: int
    rejected: int
    margin: float | None  # reward margin delta (None when not scored)


@dataclass
class QueryGroup:
    """One query with its unique responses and the pairs between them."""

    query_id: str
    question: str
    media: dict[str, Any]  # image / image_path / video_frames / video_path of the query
    category: str | None = None
    response_ids: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    ref_logps: list[float | None] = field(default_factory=list)
    pairs: list[PairRef] = field(default_factory=list)

    def response_index(self, response_id: str, text: str, ref_logp: float | None) -> int:
        """Index of the response, adding it if new; raises ValueError on a conflict."""
        if response_id in self.response_ids:
            i = self.response_ids.index(response_id)
            if self.responses[i] != text:
                raise ValueError("two different texts share this response id")
            if ref_logp is not None:
                known = self.ref_logps[i]
                if known is not None and not math.isclose(known, ref_logp, rel_tol=1e-4, abs_tol=1e-3):
                    raise ValueError(f"reference log-prob {ref_logp} disagrees with {known}")
                self.ref_logps[i] = ref_logp
            return i
        self.response_ids.append(response_id)
        self.responses.append(text)
        self.ref_logps.append(ref_logp)
        return len(self.responses) - 1


def response_id_for(query_id: str, row_id: Any, text: str) -> str:
    """The given response id, or a stable one derived from the text when it is missing."""
    if row_id:
        return str(row_id)
    return f"{query_id}:txt-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _quarantine(row: dict[str, Any], source: str, fld: str, reason: str) -> dict[str, Any]:
    raw = {k: v for k, v in row.items() if k not in MEDIA_KEYS}
    return {"source": source, "locator": f"pair_id={row.get('pair_id')}", "field": fld,
            "reason": f"pair {row.get('pair_id')}: {reason}", "raw": repr(raw)}


def _check_pair(row: dict[str, Any], need_margin: bool, need_ref: bool) -> tuple[str, str] | None:
    """(field, reason) of the first problem with the pair, or None."""
    problems = validate_row(row, "pair")
    if problems:
        fld, _, reason = problems[0].partition(":")
        return fld, reason.strip() or problems[0]
    if row["chosen_id"] and row["chosen_id"] == row.get("rejected_id"):
        return "rejected_id", "chosen and rejected are the same response"
    if need_margin:
        margin = row.get("margin")
        if margin is None or not math.isfinite(float(margin)):
            return "margin", "MM-DPO needs the reward margin delta (run `mmrlhf score`)"
    if need_ref:
        for fld in ("ref_chosen_logp", "ref_rejected_logp"):
            value = row.get(fld)
            if value is None or not math.isfinite(float(value)) or float(value) > 1e-4:
                return fld, f"missing or invalid reference log-prob {value!r} (run `mmrlhf ref-logps`)"
    return None


def build_groups(
    rows: list[dict[str, Any]], source: str = "pairs", need_margin: bool = False,
    need_ref: bool = False,
) -> tuple[list[QueryGroup], list[dict[str, Any]]]:
    """Group pair rows by query; returns ``(groups, quarantine_rows)`` in first-seen order.

    ``need_margin`` / ``need_ref`` quarantine pairs lacking a finite ``margin`` /
    reference log-probs. Responses are keyed by id (or a hash of the text when the id
    is missing); an id reused for a different text quarantines the pair.
    """
    groups: dict[str, QueryGroup] = {}
    quarantine: list[dict[str, Any]] = []
    for row in rows:
        problem = _check_pair(row, need_margin, need_ref)
        if problem:
            quarantine.append(_quarantine(row, source, *problem))
            continue
        qid = row["query_id"]
        group = groups.get(qid)
        if group is None:
            media = {k: row.get(k) for k in MEDIA_KEYS if row.get(k) is not None}
            group = QueryGroup(qid, row["question"], media, row.get("category"))
        try:
            ci = group.response_index(response_id_for(qid, row.get("chosen_id"), row["chosen"]),
                                      row["chosen"], row.get("ref_chosen_logp"))
        except ValueError as exc:
            quarantine.append(_quarantine(row, source, "chosen_id", str(exc)))
            continue
        try:
            ri = group.response_index(response_id_for(qid, row.get("rejected_id"), row["rejected"]),
                                      row["rejected"], row.get("ref_rejected_logp"))
        except ValueError as exc:
            quarantine.append(_quarantine(row, source, "rejected_id", str(exc)))
            continue
        margin = row.get("margin")
        group.pairs.append(PairRef(row["pair_id"], ci, ri, None if margin is None else float(margin)))
        groups[qid] = group
    return [g for g in groups.values() if g.pairs], quarantine


def split_groups(groups: list[QueryGroup], heldout_fraction: float, seed: int
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
