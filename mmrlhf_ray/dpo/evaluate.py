"""Held-out preference accuracy of a policy against its reference (pure torch).

For each held-out pair the implicit reward ``r(y) = log pi(y|x) - log pi_ref(y|x)``
(beta > 0 does not change the order) should rank chosen above rejected. Before
training pi = pi_ref, every pair is a tie and the accuracy is 0.5 (ties count half);
training on the other queries should raise it. Also reported: the length-normalised
likelihood accuracy ``avg log pi(y_w) > avg log pi(y_l)``, which needs no reference.

``pair_outcomes`` keeps the same judgement per pair (``mmrlhf_ray.outcomes`` rows,
clustered by query: a query's pairs share its responses), and ``evaluate_heldout`` scores
the starting and the trained policy and compares them on the same pairs: each metric with
its 95% interval, the paired difference with interval and p (Holm across the metrics).
"""

from __future__ import annotations

import math

from mmrlhf_ray.dpo.reference import reference_logps
from mmrlhf_ray.groups import QueryGroup

TIE = 1e-3  # |h| below this is a tie: fp32 noise of batched forwards, not a preference


def response_scores(
    model,
    processor,
    groups: list[QueryGroup],
    queries_per_batch: int = 8,
    max_response_tokens: int = 256,
    max_frames: int = 4,
    forward: str = "packed",
) -> dict[tuple[str, str], tuple[float, int]]:
    """{(query_id, response_id): (log pi(y|x), n_tokens)} for every response of ``groups``."""
    out = {}
    for i in range(0, len(groups), queries_per_batch):
        for s in reference_logps(
            model,
            processor,
            groups[i : i + queries_per_batch],
            max_response_tokens,
            max_frames,
            forward,
        ):
            if s["error"]:
                raise ValueError(f"query {s['query_id']}: {s['error_field']}: {s['error']}")
            out[(s["query_id"], s["response_id"])] = (s["ref_logp"], s["n_tokens"])
    return out


def _pair_terms(g: QueryGroup, p, policy: dict, reference: dict | None, beta: float):
    """(h, likelihood-right, DPO loss) of one pair; h = implicit-reward margin."""
    keys = [(g.query_id, g.response_ids[i]) for i in (p.chosen, p.rejected)]
    (pc, nc), (pr, nr) = policy[keys[0]], policy[keys[1]]
    if reference is None:
        rc, rr = g.ref_logps[p.chosen], g.ref_logps[p.rejected]
    else:
        rc, rr = reference[keys[0]][0], reference[keys[1]][0]
    h = (pc - rc) - (pr - rr)
    loss = math.log1p(math.exp(-beta * h)) if beta * h > -30 else -beta * h
    return h, pc / max(nc, 1) > pr / max(nr, 1), loss


def pair_outcomes(
    groups: list[QueryGroup], policy: dict, reference: dict | None, beta: float, label: str
) -> list[dict]:
    """Per-pair outcome rows of ``label`` (benchmark ``heldout_pairs``, cluster = query):
    implicit accuracy 1 / 0 (0.5 for a tie), likelihood accuracy 0/1, the pair's DPO loss."""
    from mmrlhf_ray.outcomes import item_rows

    rows: list[dict] = []
    for g in groups:
        for p in g.pairs:
            h, like, loss = _pair_terms(g, p, policy, reference, beta)
            pid = f"{g.query_id}/{g.response_ids[p.chosen]}>{g.response_ids[p.rejected]}"
            acc = 0.5 if abs(h) <= TIE else float(h > TIE)
            values = {
                "implicit_accuracy": acc,
                "likelihood_accuracy": float(like),
                "dpo_loss": loss,
            }
            rows += item_rows(HELDOUT, label, pid, values, cluster=g.query_id)
    return rows


def evaluate_heldout(
    policies: dict[str, str], held: list[QueryGroup], online: bool, beta: float, **forward
) -> tuple[dict, list[dict]]:
    """Held-out metrics of ``{"before": start dir, "after": trained dir}`` on the same pairs.

    The reference is the stored (precomputed) log-probs, or, with ``online``, the starting
    policy re-scored. Returns ({"before", "after": point metrics, "stats": intervals and
    the paired before → after comparison}, the per-pair outcome rows). ``forward``:
    ``response_scores`` keywords (max_response_tokens, max_frames, forward).
    """
    if not held:
        return {}, []
    from mmrlhf_ray.models import load_policy
    from mmrlhf_ray.outcomes import item_table, summarize

    scores = {}
    for name, path in policies.items():
        model, processor = load_policy(path)
        scores[name] = response_scores(model, processor, held, **forward)
    reference = scores["before"] if online else None
    result = {name: preference_metrics(held, s, reference, beta) for name, s in scores.items()}
    rows = [r for name, s in scores.items() for r in pair_outcomes(held, s, reference, beta, name)]
    result["stats"] = summarize(item_table(rows))
    return result, rows


HELDOUT = "heldout_pairs"


def preference_metrics(
    groups: list[QueryGroup], policy: dict, reference: dict | None, beta: float = 0.1
) -> dict[str, float]:
    """Implicit-reward accuracy, DPO loss at ``beta``, likelihood accuracy over the pairs.

    ``reference`` None means "the reference log-probs stored in the groups".
    """
    correct = ties = like = total = 0
    loss = 0.0
    for g in groups:
        for p in g.pairs:
            h, liked, pair_loss = _pair_terms(g, p, policy, reference, beta)
            correct += h > TIE
            ties += abs(h) <= TIE
            like += liked
            loss += pair_loss
            total += 1
    if not total:
        return {"pairs": 0.0}
    return {
        "pairs": float(total),
        "implicit_accuracy": (correct + 0.5 * ties) / total,
        "dpo_loss": loss / total,
        "likelihood_accuracy": like / total,
    }


def heldout_line(heldout: dict) -> str:
    """``held-out implicit-reward accuracy 0.500 → 0.620, +0.120 [...], p = ..., n = ...``."""
    from mmrlhf_ray.stats import PairedDiff, describe

    comparisons = heldout.get("stats", {}).get("comparisons", {}).get(HELDOUT, {})
    d = comparisons.get("before \u2192 after", {}).get("implicit_accuracy")
    if d is None:
        return "no held-out pairs"
    return describe("held-out implicit-reward accuracy", PairedDiff.from_dict(d))
