"""Self-improvement: rounds of sample -> score (reward service) -> pairs -> MM-DPO -> evaluate.

    mmrlhf self-improve run_dir=runs/demo rounds=2
    ray job submit --working-dir . -- python jobs/self_improve.py run_dir=runs/demo rounds=2

Needs a finished run (curate, train-dpo) and the reward service (serve-reward, running:
``mmrlhf serve-reward detach=true``). Round r reads the policy of round r-1 (round 1:
``start_policy``) and writes everything under ``<run_dir>/self-improve/round-<r>/``:
``generate/`` (n samples per query), ``scoring/`` (every candidate pair and its margin
from the service), ``score/`` (pairs oriented by reward), ``ref-logps/``, ``train-dpo/``
(the new policy) and ``evaluate/``. ``self-improve/rounds.json`` and ``rounds.png`` hold
the toy benchmark per round; ``rounds_stats.json`` each round's metrics with 95% intervals
and each round against the one before on the same items (paired, Holm). A finished round
is skipped; an interrupted one resumes inside its stages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, StageInputError, begin_stage, require_done
from mmrlhf_ray.core.stages import get_stage
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.evaluation.record import EvaluationRecord
from mmrlhf_ray.flows.config import SelfImproveConfig
from mmrlhf_ray.flows.self_improve import (
    candidate_pairs,
    orient_by_reward,
    round_configs,
    round_evaluate_config,
    round_queries,
    rounds_items,
    write_rounds,
)
from mmrlhf_ray.generation.config import ModelSpec


def sample_round(cfg: SelfImproveConfig, round_dir: str, policy: str, r: int) -> dict:
    """Generate n responses per query and write every candidate pair (unscored)."""
    import pyarrow as pa

    from harness.actor_pool import generate_model

    curated = require_done(cfg.run_dir, "curate").read().to_pylist()
    queries = {
        q["sample_id"]: q for q in round_queries(curated, cfg.queries_per_round, cfg.seed, r)
    }
    table = pa.Table.from_pylist(list(queries.values()))
    spec = ModelSpec(
        name=f"round-{r}",
        kind=cfg.backend,
        path=policy,
        n=cfg.n,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        seed=cfg.seed + r,
    )
    gen = StageDir(round_dir, "generate")
    if not gen.is_done():
        gen.begin({"policy": policy, "round": r})
        stats = generate_model(gen, table, spec, chunk_size=64)
        print(f"self-improve: {stats.line()}")
        gen.finish(len(queries) * cfg.n, gen.count_rows(), gen.count_rows(quarantine=True))
    pairs_stage = StageDir(f"{round_dir}/scoring", "pairs")
    if not pairs_stage.is_done():
        pairs_stage.begin({"round": r})
        pairs = candidate_pairs(gen.read().to_pylist(), queries)
        pairs_stage.write_part("candidates", to_table(pairs, "pair"))
        pairs_stage.finish(len(pairs), len(pairs), 0)
    return queries


def score_round(cfg: SelfImproveConfig, round_dir: str) -> StageDir:
    """Score the candidates through the service, orient them by reward, keep pairs."""
    url = cfg.service_url or (StageDir(cfg.run_dir, "serve-reward").read_manifest() or {}).get(
        "url"
    )
    if not url:
        raise StageInputError(
            "self-improve: no reward service: run `mmrlhf serve-reward detach=true` "
            "or pass service_url="
        )
    score = get_stage("score")
    score.run(score.config(run_dir=f"{round_dir}/scoring", url=url, token_env=cfg.token_env))
    out = StageDir(round_dir, "score")
    if not out.is_done():
        scored = StageDir(f"{round_dir}/scoring", "score").read().to_pylist()
        out.begin({"pair_mode": cfg.pair_mode, "min_margin": cfg.min_margin})
        kept, dropped = orient_by_reward(scored, cfg.pair_mode, cfg.min_margin)
        out.write_part("pairs", to_table(kept, "pair"))
        out.finish(len(scored), len(kept), 0, dropped_no_preference=dropped)
        print(
            f"self-improve: {len(kept)} pairs kept of {len(scored)} scored ({dropped} dropped: "
            f"no reward gap or not best-vs-worst)"
        )
    return out


def train_round(cfg: SelfImproveConfig, round_dir: str, policy: str) -> str:
    ref_cfg, dpo_cfg = round_configs(cfg, round_dir, policy)
    get_stage("ref-logps").run(ref_cfg)
    return get_stage("train-dpo").run(dpo_cfg)["policy"]


def evaluate_round(cfg: SelfImproveConfig, round_dir: str, policy: str, r: int) -> dict:
    get_stage("evaluate").run(round_evaluate_config(cfg, round_dir, policy, r, cfg.run_dir))
    return EvaluationRecord.read(Path(round_dir) / "evaluate").points(f"round-{r}")


def run(cfg: SelfImproveConfig) -> dict:
    """The stage: rounds of sample -> score -> pairs -> MM-DPO -> evaluate."""
    out, done = begin_stage(cfg, "self-improve", inputs=["curate"])
    if done:
        return out.read_manifest()
    from harness.runtime import init_ray

    init_ray()
    policy = cfg.start_policy.replace("{run_dir}", cfg.run_dir.rstrip("/"))
    rounds: dict[str, dict] = {}
    start = EvaluationRecord.read_if_exists(Path(cfg.run_dir) / "evaluate")
    if start:
        toy = start.toy_benchmark
        rounds.update({f"round-0 ({k})": v for k, v in toy.items() if k in ("sft", "mm-dpo")})
    names = {k: f"round-0 ({k})" for k in ("sft", "mm-dpo")}
    sources = [(str(Path(cfg.run_dir) / "evaluate" / "items.parquet"), names)]
    pairs_total = 0
    for r in range(1, cfg.rounds + 1):
        round_dir = out.path(f"round-{r}")
        print(f"\n--- self-improve: round {r} from {policy} ---", flush=True)
        sample_round(cfg, round_dir, policy, r)
        pairs_total += score_round(cfg, round_dir).count_rows()
        policy = train_round(cfg, round_dir, policy)
        if cfg.evaluate:
            rounds[f"round-{r}"] = evaluate_round(cfg, round_dir, policy, r)
            sources.append((f"{round_dir}/evaluate/items.parquet", {f"round-{r}": f"round-{r}"}))
        Path(out.local_path("rounds.json")).write_text(json.dumps(rounds, indent=2))
    if rounds:
        write_rounds(out.local_path(), rounds, rounds_items(sources))
    manifest = out.finish(pairs_total, pairs_total, 0, rounds=cfg.rounds, final_policy=policy)
    print(f"self-improve: {cfg.rounds} rounds, final policy {policy}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("self-improve", SelfImproveConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
