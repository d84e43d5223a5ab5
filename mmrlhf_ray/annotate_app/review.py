"""Where each query stands, and how well the raters agree.

A query is ``gold`` (known answer: not rated for the data, used to check raters),
``pending`` (fewer than N raters submitted), ``disputed`` (the raters disagree:
rankings differ or a score differs by more than ``max_score_gap``; an adjudicator must
decide), ``agreed`` (final labels = ``labels.consensus``) or ``adjudicated`` (final
labels = the adjudicator's).

Agreement over the non-gold queries with two or more submissions: Krippendorff's
alpha (interval) per dimension, with one unit per (query, response); Kendall's tau-b
per query (mean over rater pairs) and its mean over queries. Gold: per rater, the mean
tau-b against the gold ranking and the mean absolute score error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrlhf_ray.annotate_app.agreement import (
    kendall_tau_b,
    krippendorff_alpha_interval,
    mean_pairwise_tau,
)
from mmrlhf_ray.annotate_app.labels import DIMENSIONS, Labels, consensus, disagreements
from mmrlhf_ray.annotate_app.store import QueryRow

STATUSES = ("pending", "disputed", "agreed", "adjudicated", "gold")


@dataclass
class Review:
    query_id: str
    status: str
    final: Labels | None  # the labels the export writes (None: not final yet)
    reasons: list[str] = field(default_factory=list)  # why disputed


def review_query(q: QueryRow, raters_per_query: int, max_score_gap: int = 1) -> Review:
    if q.gold is not None:
        return Review(q.query_id, "gold", q.gold)
    if q.adjudication is not None:
        return Review(q.query_id, "adjudicated", q.adjudication)
    labels = [s.labels for s in q.submissions]
    if len(labels) < raters_per_query:
        return Review(q.query_id, "pending", None)
    reasons = disagreements(labels, max_score_gap)
    if reasons:
        return Review(q.query_id, "disputed", None, reasons)
    return Review(q.query_id, "agreed", consensus(labels))


@dataclass
class AgreementReport:
    alpha: dict[str, float | None]  # Krippendorff's alpha (interval) per dimension
    units: int  # (query, response) units with >= 2 ratings
    tau_by_query: dict[str, float | None]  # mean pairwise Kendall tau-b per query
    mean_tau: float | None
    gold_by_rater: dict[str, dict[str, float]]  # rater -> {queries, tau, score_mae}


def agreement(queries: list[QueryRow]) -> AgreementReport:
    rated = [q for q in queries if q.gold is None and len(q.submissions) >= 2]
    alpha, units = {}, 0
    for name in DIMENSIONS:
        per_unit = [
            [getattr(s.labels.responses[i], name) for s in q.submissions]
            for q in rated
            for i in range(len(q.task["responses"]))
        ]
        units = len(per_unit)
        alpha[name] = krippendorff_alpha_interval(per_unit)
    tau_by_query = {
        q.query_id: mean_pairwise_tau([s.labels.ranks for s in q.submissions]) for q in rated
    }
    defined = [t for t in tau_by_query.values() if t is not None]
    mean_tau = sum(defined) / len(defined) if defined else None
    return AgreementReport(alpha, units, tau_by_query, mean_tau, _gold_scores(queries))


def _gold_scores(queries: list[QueryRow]) -> dict[str, dict[str, float]]:
    sums: dict[str, dict[str, float]] = {}
    for q in queries:
        if q.gold is None:
            continue
        for s in q.submissions:
            acc = sums.setdefault(
                s.rater, {"queries": 0, "tau": 0.0, "tau_n": 0, "abs_err": 0.0, "scores": 0}
            )
            acc["queries"] += 1
            tau = kendall_tau_b(s.labels.ranks, q.gold.ranks)
            if tau is not None:
                acc["tau"] += tau
                acc["tau_n"] += 1
            for mine, gold in zip(s.labels.responses, q.gold.responses, strict=True):
                for name in DIMENSIONS:
                    acc["abs_err"] += abs(getattr(mine, name) - getattr(gold, name))
                    acc["scores"] += 1
    return {
        rater: {
            "queries": a["queries"],
            "tau": a["tau"] / a["tau_n"] if a["tau_n"] else None,
            "score_mae": a["abs_err"] / a["scores"] if a["scores"] else None,
        }
        for rater, a in sorted(sums.items())
    }
