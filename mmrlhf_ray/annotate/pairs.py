"""Pair expansion: an annotated record's K ranked responses -> preference pairs.

MM-DPO (paper Sec. 4.2) trains on *all* comparison pairs of a query: "every response
pair with differing ranks is treated as a valid comparison pair". With K responses of
K distinct ranks that is C(K, 2) pairs (4 -> 6). Equal ranks (ties) give no preference
pair; ``ties="carry"`` writes them as pairs flagged ``is_tie`` (the reward model's tie
term trains on them; the preference losses quarantine them), ``ties="drop"`` counts them.

Ties, by the paper's rule (Sec. 2.3): when several responses are equally poor the
annotator writes a corrected answer (a constructed *positive*); when several are
equally good the annotator injects an error into one (a constructed *negative*). Such
responses are already in the record (``constructed``). How an unranked constructed
response is paired is the ``tie_rule``:

* ``paper``: it resolves the tie it was made for: a negative is worse than each response
  of the best tied group (and compared with nothing else: how it compares with a
  worse-ranked response is unknown), a positive better than each of the worst tied
  group. With no tied group among the ranked responses it is compared with all of them.
  On a fully tied record this is the same as ``constructed``.
* ``constructed`` (the rule before): a positive is better, a negative worse, than
  *every* original response.
* ``skip``: constructed responses are ignored, so fully tied records yield no pairs.

A constructed response that carries a rank is paired by its rank. ``mode=best-vs-worst``
places unranked constructed responses as ``constructed`` does. Every skipped tie is
counted, nothing disappears silently.

Pair ids are deterministic: ``"<query_id>::<chosen_id>><rejected_id>"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal, get_args

from mmrlhf_ray.core.config import Choices
from mmrlhf_ray.data.schemas import MEDIA_KEYS

Mode = Literal["all", "best-vs-worst"]
TieRule = Literal["paper", "constructed", "skip"]
Ties = Literal["drop", "carry"]
Margin = Literal["none", "oracle"]
MODES, TIE_RULES, MARGINS = get_args(Mode), get_args(TieRule), get_args(Margin)


@dataclass
class PairsConfig(Choices):
    """Config of the ``pairs`` stage: annotated records -> preference pairs."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory (path or URI)"})
    input_stage: str = field(
        default="", metadata={"help": "records stage to read ('' = expand if done, else annotate)"}
    )
    mode: Mode = field(default="all", metadata={"help": "all | best-vs-worst pairs per query"})
    tie_rule: TieRule = field(
        default="paper",
        metadata={
            "help": "paper (a constructed response vs the tied group it resolves) | "
            "constructed (vs every original response) | skip (ignore constructed)"
        },
    )
    ties: Ties = field(
        default="drop",
        metadata={
            "help": "drop (count equal-rank pairs) | carry (write them flagged is_tie, "
            "for train-reward's loss.tie term)"
        },
    )
    mia_distractors: int = field(
        default=0,
        metadata={
            "help": "MIA-DPO pairs: per image query one 2x2 grid collage with this many "
            "other queries' images (0 = off; at most 3)"
        },
    )
    margin: Margin = field(
        default="none",
        metadata={"help": "none (score stage fills it) | oracle (annotator score difference)"},
    )
    records_per_part: int = field(default=2000, metadata={"help": "records per Parquet part"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.mia_distractors <= 3:
            raise ValueError(f"mia_distractors: must be in 0..3, got {self.mia_distractors}")


@dataclass
class PairStats:
    """What expansion did, for the manifest and the summary line."""

    records: int = 0
    pairs: int = 0
    records_without_pairs: int = 0
    tied_pairs_skipped: int = 0  # response pairs of equal rank, not written (ties=drop)
    tied_pairs_carried: int = 0  # response pairs of equal rank written as is_tie (carry)
    constructed_skipped: int = 0  # constructed responses ignored under tie_rule=skip
    tie_pairs: int = 0  # pairs that involve a constructed response
    mia_pairs: int = 0  # MIA-DPO grid-collage pairs (mia_distractors > 0)
    mia_records_without_pair: int = 0  # no image, or too few distractors in the part

    def add(self, other: PairStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def oracle_score(response: dict[str, Any]) -> float | None:
    """The annotator's overall score of a response: mean of helpfulness, faithfulness
    and ethics (1-5 rubric, Appendix B); None if any is missing."""
    dims = [response.get(k) for k in ("helpfulness", "faithfulness", "ethics")]
    if any(d is None for d in dims):
        return None
    return sum(dims) / 3.0


def effective_rank(response: dict[str, Any], ranks: list[int]) -> float | None:
    """The rank used for pairing; unranked constructed responses go above/below all."""
    rank = response.get("rank")
    if rank is not None:
        return float(rank)
    if response.get("constructed") == "positive":
        return (min(ranks) if ranks else 1) - 0.5
    if response.get("constructed") == "negative":
        return (max(ranks) if ranks else 1) + 0.5
    return None


def _response_id(record: dict[str, Any], index: int) -> str:
    rid = record["responses"][index].get("response_id")
    return rid if rid else f"{record['query_id']}#r{index}"


def _candidate_pairs(ranked: list[tuple[int, float]], mode: str) -> tuple[list, list]:
    """(better index, worse index) pairs of differing rank, and the equal-rank pairs."""
    pairs, tied = [], []
    for (i, ri), (j, rj) in combinations(ranked, 2):
        if ri == rj:
            tied.append((i, j))
        else:
            pairs.append((i, j) if ri < rj else (j, i))
    if mode == "best-vs-worst" and pairs:
        best = min(r for _, r in ranked)
        worst = max(r for _, r in ranked)
        rank_of = dict(ranked)
        pairs = [(a, b) for a, b in pairs if rank_of[a] == best and rank_of[b] == worst]
    return pairs, tied


def _paper_tie_pairs(
    responses: list[dict[str, Any]], ranked: list[tuple[int, float]], constructed: list[int]
) -> list[tuple[int, int]]:
    """The paper's rule: each unranked constructed response against the tied group it
    resolves (negative: the best tied group; positive: the worst); no tied group: all."""
    ranks = [r for _, r in ranked]
    tied = sorted({r for r in ranks if ranks.count(r) > 1})
    out = []
    for c in constructed:
        negative = responses[c]["constructed"] == "negative"
        group = (tied[0] if negative else tied[-1]) if tied else None
        for i, r in ranked:
            if group is None or r == group:
                out.append((i, c) if negative else (c, i))
    return out


def expand_record(
    record: dict[str, Any],
    mode: str = "all",
    tie_rule: str = "paper",
    margin: str = "none",
    ties: str = "drop",
) -> tuple[list[dict[str, Any]], PairStats]:
    """The preference pairs (``PAIR_SCHEMA`` rows) of one record, and counts.

    Pairs come in a fixed order (by response position; the paper rule's constructed
    pairs, then carried ties, last), so re-runs are identical. Responses with no rank
    (and not constructed) are left out of pairing.
    """
    stats = PairStats(records=1)
    responses = record["responses"]
    keep = []
    for i, resp in enumerate(responses):
        if resp.get("constructed") and tie_rule == "skip":
            stats.constructed_skipped += 1
            continue
        keep.append(i)
    original_ranks = [
        responses[i]["rank"]
        for i in keep
        if responses[i].get("rank") is not None and not responses[i].get("constructed")
    ]
    paper = tie_rule == "paper" and mode == "all"
    unranked = [
        i for i in keep if responses[i].get("constructed") and responses[i].get("rank") is None
    ]
    ranked = [
        (i, effective_rank(responses[i], original_ranks))
        for i in keep
        if not (paper and i in unranked)
    ]
    ranked = [(i, r) for i, r in ranked if r is not None]
    index_pairs, tied = _candidate_pairs(ranked, mode)
    if paper:
        index_pairs += _paper_tie_pairs(responses, ranked, unranked)
    pairs = [_make_pair(record, a, b, margin) for a, b in index_pairs]
    if ties == "carry":
        pairs += [_make_pair(record, a, b, margin, is_tie=True) for a, b in tied]
        stats.tied_pairs_carried = len(tied)
    else:
        stats.tied_pairs_skipped = len(tied)
    stats.pairs = len(pairs)
    stats.tie_pairs = sum(
        1
        for a, b in index_pairs
        if responses[a].get("constructed") or responses[b].get("constructed")
    )
    stats.records_without_pairs = int(not pairs)
    return pairs, stats


def _make_pair(
    record: dict[str, Any], a: int, b: int, margin: str, is_tie: bool = False
) -> dict[str, Any]:
    """The pair row of responses a (chosen) and b; ``is_tie``: an equal-rank pair."""
    chosen, rejected = record["responses"][a], record["responses"][b]
    cid, rid = _response_id(record, a), _response_id(record, b)
    delta, source = None, None
    if margin == "oracle":
        sc, sr = oracle_score(chosen), oracle_score(rejected)
        if sc is not None and sr is not None:
            delta, source = sc - sr, "oracle"
    return {
        "pair_id": f"{record['query_id']}::{cid}>{rid}",
        "query_id": record["query_id"],
        "question": record["question"],
        **{k: record.get(k) for k in MEDIA_KEYS},
        "category": record.get("category"),
        "chosen_id": cid,
        "rejected_id": rid,
        "chosen": chosen["text"],
        "rejected": rejected["text"],
        "chosen_rank": chosen.get("rank"),
        "rejected_rank": rejected.get("rank"),
        "chosen_reason": chosen.get("score_reason"),
        "rejected_reason": rejected.get("score_reason"),
        "chosen_critique": chosen.get("critique"),
        "rejected_critique": rejected.get("critique"),
        "is_tie": is_tie,  # equal quality: the tie term, never a preference
        "margin": delta,
        "margin_source": source,
        "ref_chosen_logp": None,
        "ref_rejected_logp": None,
    }


def expand_records(
    records: list[dict[str, Any]],
    mode: str = "all",
    tie_rule: str = "paper",
    margin: str = "none",
    ties: str = "drop",
) -> tuple[list[dict[str, Any]], PairStats]:
    """``expand_record`` over many records; pairs concatenated, stats summed."""
    out: list[dict[str, Any]] = []
    total = PairStats()
    for record in records:
        pairs, stats = expand_record(record, mode, tie_rule, margin, ties)
        out.extend(pairs)
        total.add(stats)
    return out, total
