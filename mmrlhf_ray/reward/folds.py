"""Out-of-fold reward margins: δ of a pair from a reward model that never saw its query.

The paper's δ comes from a reward model trained on (nearly) the pairs it then scores: an
in-sample margin, larger and more confident than the model would give a new query, and
it sets each pair's β (Dynamic Reward Scaling). With ``train-reward folds=k`` the
queries are cut into k disjoint folds (:func:`fold_of`: a hash of the query id, so a
query's fold never depends on which other queries exist), model j is trained on the
training pairs of every fold but j, and ``score margins=out-of-fold`` takes each pair's
δ from the model of its own fold (:func:`model_for`), which did not see the query.

* :func:`fold_of` / :func:`model_for`: the deterministic fold of a query, and the model
  that must score it;
* :func:`compare_summary`: how in-sample and out-of-fold δ differ (mean |δ|,
  correlations, sign agreement) and how many pairs change β(δ) (Eq. of ``dynamic_beta``);
* :class:`LocalRewardClient`: ``compare(body)`` answered in process by a saved model,
  through the service's own request resolution and scorer (``mmrlhf_ray.service.server``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def fold_of(query_id: str, k: int, seed: int = 0) -> int:
    """The fold (0..k-1) of ``query_id``: SHA-256 of seed and id, modulo k."""
    if k < 2:
        raise ValueError(f"folds: need k >= 2, got {k}")
    digest = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % k


def model_for(query_id: str, folds: dict[str, Any]) -> int:
    """The fold model that scores ``query_id`` (the one trained without its fold)."""
    j = fold_of(query_id, int(folds["k"]), int(folds.get("seed", 0)))
    model = folds["models"][j]
    if j in model["trained_on_folds"]:  # a corrupted manifest: never score in-sample
        raise ValueError(f"fold model {j} was trained on fold {j}: not out-of-fold")
    return j


def _beta(delta: np.ndarray, beta_ori: float, w: float, k: float) -> np.ndarray:
    """β(δ) = β_ori (1 + w (1 − exp(−k max(δ, 0)))), as ``losses.dynamic_beta``."""
    return beta_ori * (1.0 + w * (1.0 - np.exp(-k * np.maximum(delta, 0.0))))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):  # average ranks of ties
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def compare_summary(
    delta_in: Sequence[float],
    delta_oof: Sequence[float],
    beta_ori: float = 0.1,
    w: float = 0.5,
    k: float = 0.5,
    rel_tol: float = 0.01,
) -> dict[str, Any]:
    """In-sample vs out-of-fold margins of the same pairs.

    Returns n, mean δ and mean |δ| of each, Pearson and Spearman correlations, the share
    of pairs whose δ has the same sign, the mean β of each, mean |Δβ| and the number of
    pairs whose β moves by more than ``rel_tol`` (relative) between the two.
    """
    a = np.asarray(delta_in, dtype=np.float64)
    b = np.asarray(delta_oof, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"delta_in {a.shape} and delta_oof {b.shape} differ")
    if not len(a):
        return {"n": 0}
    beta_a, beta_b = _beta(a, beta_ori, w, k), _beta(b, beta_ori, w, k)
    changed = np.abs(beta_b - beta_a) > rel_tol * beta_a
    return {
        "n": int(len(a)),
        "mean_delta_in": float(a.mean()),
        "mean_delta_oof": float(b.mean()),
        "mean_abs_delta_in": float(np.abs(a).mean()),
        "mean_abs_delta_oof": float(np.abs(b).mean()),
        "pearson": _corr(a, b),
        "spearman": _corr(_ranks(a), _ranks(b)),
        "same_sign": float(np.mean(np.sign(a) == np.sign(b))),
        "mean_beta_in": float(beta_a.mean()),
        "mean_beta_oof": float(beta_b.mean()),
        "mean_abs_beta_change": float(np.abs(beta_b - beta_a).mean()),
        "beta_changed": int(changed.sum()),
        "beta_rel_tol": rel_tol,
        "beta_params": {"beta_ori": beta_ori, "w": w, "k": k},
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    """The score report's table: in-sample vs out-of-fold δ."""
    if not summary.get("n"):
        return "No pair was scored both in-sample and out-of-fold.\n"

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    s = summary
    return (
        f"In-sample vs out-of-fold margins, n = {s['n']} pairs\n\n"
        "| | in-sample | out-of-fold |\n|---|---:|---:|\n"
        f"| mean δ | {f(s['mean_delta_in'])} | {f(s['mean_delta_oof'])} |\n"
        f"| mean abs δ | {f(s['mean_abs_delta_in'])} | {f(s['mean_abs_delta_oof'])} |\n"
        f"| mean β | {s['mean_beta_in']:.4f} | {s['mean_beta_oof']:.4f} |\n\n"
        f"Pearson {f(s['pearson'])}, Spearman {f(s['spearman'])}, same sign "
        f"{f(s['same_sign'])}; β moves by more than {s['beta_rel_tol']:.0%} for "
        f"{s['beta_changed']} of {s['n']} pairs (mean abs Δβ {s['mean_abs_beta_change']:.4f}).\n"
    )


class LocalRewardClient:
    """``compare(body) -> {"scores": [...]}`` from a saved reward model, in this process.

    Same request resolution and limits as the service (``resolve_compare_request``), same
    scorer (``load_scorer``); a bad request raises ``RequestRejected`` as a 4xx would.
    """

    def __init__(self, model_dir: str, max_batch_size: int = 16, max_new_tokens: int = 32):
        from mmrlhf_ray.service.config import ServeLimits
        from mmrlhf_ray.service.server import load_scorer

        self.scorer = load_scorer(model_dir, max_batch_size, max_new_tokens)
        self.limits = ServeLimits()
        self.model_dir = model_dir

    def compare(self, body: dict) -> dict:
        from pydantic import ValidationError

        from mmrlhf_ray.service.client import RequestRejected
        from mmrlhf_ray.service.server import RequestError, resolve_compare_request
        from mmrlhf_ray.service.wire import CompareRequest

        try:
            inputs = resolve_compare_request(CompareRequest(**body), self.limits)
        except RequestError as exc:
            raise RequestRejected(exc.status, exc.field, exc.reason) from exc
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err.get("loc", ()))
            raise RequestRejected(422, field, err.get("msg", "invalid")) from exc
        outs = self.scorer.score(inputs)
        return {"scores": [s for s, _ in outs], "critiques": [c for _, c in outs]}

    def close(self) -> None:
        self.scorer = None


def score_out_of_fold(
    groups: list[Any],
    in_sample: Any,
    fold_compares: list[Any],
    folds: dict[str, Any],
    policy: Any,
    concurrency: int = 8,
    max_frames: int = 8,
) -> tuple[list[dict], list[dict], list[dict]]:
    """(pair rows with out-of-fold δ, quarantined rows, comparison rows) of ``groups``.

    Each query goes to the fold model of its own fold (``fold_compares[j](body)``), and
    to ``in_sample(body)`` (the served model) for the comparison. Rows keep the groups'
    order; ``margin_source`` names the fold model (``reward-oof/fold-j``); a comparison
    row holds pair_id, query_id, fold, margin_in, margin_oof.
    """
    from mmrlhf_ray.service.client import score_groups

    by_fold: dict[int, list[Any]] = {}
    for g in groups:
        by_fold.setdefault(model_for(g.query_id, folds), []).append(g)
    oof: dict[str, dict] = {}
    bad: list[dict] = []
    fold_of_pair: dict[str, int] = {}
    for j, members in sorted(by_fold.items()):
        rows, rejected = score_groups(
            members, fold_compares[j], policy, max(1, concurrency), max_frames
        )
        for r in rows:
            oof[str(r["pair_id"])] = dict(r, margin_source=f"reward-oof/fold-{j}")
            fold_of_pair[str(r["pair_id"])] = j
        bad += rejected
    ins, _ = score_groups(groups, in_sample, policy, concurrency, max_frames)
    margin_in = {str(r["pair_id"]): r["margin"] for r in ins}
    ordered = [oof[str(r["pair_id"])] for g in groups for r in g.rows if str(r["pair_id"]) in oof]
    compared = [
        {
            "pair_id": str(r["pair_id"]),
            "query_id": str(r["query_id"]),
            "fold": fold_of_pair[str(r["pair_id"])],
            "margin_in": float(margin_in[str(r["pair_id"])]),
            "margin_oof": float(r["margin"]),
        }
        for r in ordered
        if str(r["pair_id"]) in margin_in
    ]
    return ordered, bad, compared
