"""Self-improvement rounds: the policy samples, the reward model judges, MM-DPO trains.

One round (paper App. G.4): sample ``n`` responses per query from the current policy
(vLLM actors) -> score every response through the running reward service -> pairs of
differing reward (all of them, or best-vs-worst), each with its margin δ -> reference
log-probs of the current policy -> MM-DPO from the current policy -> toy benchmark.
Each round lives in its own run directory ``<run_dir>/self-improve/round-<r>/``.

This module holds the pure parts: the config, the candidate pairs sent for scoring,
orienting scored pairs by reward, and the per-round table.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from mmrlhf_ray.data.schemas import MEDIA_FIELDS
from mmrlhf_ray.flows.config import SelfImproveConfig

MEDIA = tuple(f.name for f in MEDIA_FIELDS)


def round_configs(cfg: SelfImproveConfig, round_dir: str, policy: str) -> tuple[Any, Any]:
    """(ref-logps config, train-dpo config) of one round, from the ``profile``'s shipped
    YAMLs plus the overrides.

    ref-logps gets train-dpo's encoding (``max_response_tokens``, ``max_frames``) last,
    so reference log-probs are always taken over the inputs training will see.
    """
    from mmrlhf_ray.core.stages import get_stage

    common = {"run_dir": round_dir, "policy": policy}
    dpo = get_stage("train-dpo").config(cfg.dpo_overrides, cfg.profile, **common)
    same = [f"{key}={getattr(dpo, key)}" for key in ("max_response_tokens", "max_frames")]
    ref = get_stage("ref-logps").config(
        [*cfg.ref_logps_overrides, *same], cfg.profile, pairs_stage="score", **common
    )
    return ref, dpo


def round_evaluate_config(
    cfg: SelfImproveConfig, round_dir: str, policy: str, r: int, benchmark_run_dir: str
) -> Any:
    """The evaluate config of round ``r``: the ``profile``'s shipped YAML (on GPU its
    actors, dtype, SafetyBench folder and judges), the round's policy and ``benchmarks``,
    then ``evaluate_overrides``."""
    from mmrlhf_ray.core.stages import get_stage

    return get_stage("evaluate").config(
        cfg.evaluate_overrides,
        cfg.profile,
        run_dir=round_dir,
        benchmark_run_dir=benchmark_run_dir,
        reward_bench=False,
        policies={f"round-{r}": policy},
        benchmark_limit=cfg.benchmark_limit,
        benchmarks=list(cfg.benchmarks),
    )


def candidate_pairs(
    generated: list[dict[str, Any]], queries: dict[str, dict[str, Any]]
) -> list[dict]:
    """Every unordered pair of distinct responses of a query, in PAIR_SCHEMA, unscored.

    ``generated``: rows of the generate stage (sample_id, response_id, text, ...);
    ``queries``: query rows by sample_id, for the question, category and media.
    Identical texts are one response (a pair of equal texts carries no preference).
    """
    by_query: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in generated:
        if row.get("is_empty"):
            continue
        by_query[row["sample_id"]].setdefault(row["text"], row)
    pairs = []
    for sample_id in sorted(by_query):
        query = queries[sample_id]
        responses = sorted(by_query[sample_id].values(), key=lambda r: r["response_id"])
        for a, b in itertools.combinations(responses, 2):
            pairs.append(
                {
                    "pair_id": f"{sample_id}::{a['response_id']}>{b['response_id']}",
                    "query_id": sample_id,
                    "question": query["question"],
                    "category": query.get("category"),
                    **{m: query.get(m) for m in MEDIA},
                    "chosen_id": a["response_id"],
                    "rejected_id": b["response_id"],
                    "chosen": a["text"],
                    "rejected": b["text"],
                }
            )
    return pairs


def orient_by_reward(
    scored: list[dict[str, Any]], mode: str, min_margin: float = 0.0
) -> tuple[list[dict[str, Any]], int]:
    """Pairs with the higher-reward response as chosen and δ >= 0; (pairs, dropped ties).

    ``scored`` are candidate pairs with ``margin`` = r(first) - r(second). A pair whose
    |δ| <= ``min_margin`` carries no preference and is dropped (counted). With
    ``best-vs-worst`` each query keeps only its largest-margin pair.
    """
    kept, dropped = [], 0
    for pair in scored:
        margin = pair["margin"]
        if margin is None:
            raise ValueError(f"pair {pair['pair_id']}: margin is missing (scoring failed)")
        if abs(margin) <= min_margin:
            dropped += 1
            continue
        oriented = dict(pair, margin_source="reward-service")
        if margin < 0:
            oriented.update(
                chosen=pair["rejected"],
                rejected=pair["chosen"],
                chosen_id=pair["rejected_id"],
                rejected_id=pair["chosen_id"],
                margin=-margin,
            )
            oriented["pair_id"] = (
                f"{pair['query_id']}::{oriented['chosen_id']}>{oriented['rejected_id']}"
            )
        kept.append(oriented)
    if mode == "best-vs-worst":
        best: dict[str, dict] = {}
        for pair in kept:
            if pair["query_id"] not in best or pair["margin"] > best[pair["query_id"]]["margin"]:
                best[pair["query_id"]] = pair
        dropped += len(kept) - len(best)
        kept = [best[q] for q in sorted(best)]
    return kept, dropped


def round_queries(
    table_rows: list[dict[str, Any]], k: int, seed: int, round_index: int
) -> list[dict]:
    """``k`` curated queries for a round, different each round, deterministic by seed."""
    import random

    rng = random.Random(f"{seed}-round-{round_index}")
    rows = sorted(table_rows, key=lambda r: r["sample_id"])
    return rng.sample(rows, min(k, len(rows)))


def rounds_items(sources: list[tuple[str, dict[str, str]]]) -> Any:
    """One per-item table over the rounds: ``sources`` lists (an evaluate stage's
    ``items.parquet``, {its policy name: the round's label}); missing files are skipped
    (a run from before per-item outcomes were kept)."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.compute as pc

    from mmrlhf_ray.evaluation.outcomes import ITEM_SCHEMA, read_items, relabel

    tables = []
    for path, names in sources:
        if not Path(path).exists():
            continue
        table = read_items(path)
        table = table.filter(pc.is_in(table.column("policy"), pa.array(list(names))))
        tables.append(relabel(table, names))
    return pa.concat_tables(tables) if tables else ITEM_SCHEMA.empty_table()


def write_rounds(out_dir: str, rounds: dict[str, dict], items: Any) -> dict:
    """``rounds.json`` (points), ``rounds_stats.json`` (each round's metrics with 95%
    intervals, each round against the one before on the same items, Holm), ``summary.md``
    and ``rounds.png`` (error bars). Returns the stats (empty without per-item outcomes)."""
    import json
    from pathlib import Path

    from mmrlhf_ray.evaluation.outcomes import summarize
    from mmrlhf_ray.evaluation.record import TOY
    from mmrlhf_ray.evaluation.shapes import plot_metrics, summary_markdown

    out = Path(out_dir)
    (out / "rounds.json").write_text(json.dumps(rounds, indent=2))
    summary = summarize(items) if items.num_rows else {}
    (out / "rounds_stats.json").write_text(json.dumps(summary, indent=2))
    intervals = summary.get("intervals", {}).get(TOY)
    title = "toy benchmark per self-improvement round"
    plot_metrics(rounds, str(out / "rounds.png"), title=title, intervals=intervals)
    (out / "summary.md").write_text(summary_markdown(rounds, summary))
    return summary
