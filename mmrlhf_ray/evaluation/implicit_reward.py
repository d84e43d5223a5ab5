"""Held-out preference accuracy of a policy against its reference (pure torch).

For each held-out pair the implicit reward ``r(y) = log pi(y|x) - log pi_ref(y|x)``
(beta > 0 does not change the order) should rank chosen above rejected. Before
training pi = pi_ref, every pair is a tie and the accuracy is 0.5 (ties count half);
training on the other queries should raise it. Also reported: the length-normalised
likelihood accuracy ``avg log pi(y_w) > avg log pi(y_l)``, which needs no reference.
"""

from __future__ import annotations

import math

from mmrlhf_ray.data.groups import QueryGroup
from mmrlhf_ray.dpo.reference import reference_logps

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
            keys = [(g.query_id, g.response_ids[i]) for i in (p.chosen, p.rejected)]
            (pc, nc), (pr, nr) = policy[keys[0]], policy[keys[1]]
            if reference is None:
                rc, rr = g.ref_logps[p.chosen], g.ref_logps[p.rejected]
            else:
                rc, rr = reference[keys[0]][0], reference[keys[1]][0]
            h = (pc - rc) - (pr - rr)
            correct += h > TIE
            ties += abs(h) <= TIE
            like += pc / max(nc, 1) > pr / max(nr, 1)
            loss += math.log1p(math.exp(-beta * h)) if beta * h > -30 else -beta * h
            total += 1
    if not total:
        return {"pairs": 0.0}
    return {
        "pairs": float(total),
        "implicit_accuracy": (correct + 0.5 * ties) / total,
        "dpo_loss": loss / total,
        "likelihood_accuracy": like / total,
    }
