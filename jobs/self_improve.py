"""Self-improvement: rounds of sample -> score (reward service) -> pairs -> MM-DPO -> evaluate.

    mmrlhf self-improve run_dir=runs/demo rounds=2
    ray job submit --working-dir . -- python jobs/self_improve.py run_dir=runs/demo rounds=2

Needs a finished run (curate, train-dpo) and the reward service (serve-reward, running:
``mmrlhf serve-reward detach=true``). Round r reads the policy of round r-1 (round 1:
``start_policy``) and writes everything under ``<run_dir>/self-improve/round-<r>/``:
``generate/`` (n samples per query), ``scoring/`` (every candidate pair and its margin
from the service), ``score/`` (pairs oriented by reward), ``ref-logps/``, ``train-dpo/``
(the new policy) and ``evaluate/``. ``self-improve/rounds.json`` and ``rounds.png`` hold
the toy benchmark per round. A finished round is skipped; an interrupted one resumes
inside its stages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmrlhf_ray.cli import parse_stage_args  # noqa: E402
from mmrlhf_ray.config import config_to_dict  # noqa: E402
from mmrlhf_ray.dpo.config import DpoConfig  # noqa: E402
from mmrlhf_ray.generation import ModelSpec  # noqa: E402
from mmrlhf_ray.schemas import to_table  # noqa: E402
from mmrlhf_ray.self_improve import (  # noqa: E402
    SelfImproveConfig,
    candidate_pairs,
    orient_by_reward,
    round_queries,
    round_stage_argv,
)
from mmrlhf_ray.stage import StageDir, require_done  # noqa: E402


def sample_round(cfg: SelfImproveConfig, round_dir: str, policy: str, r: int) -> dict:
    """Generate n responses per query and write every candidate pair (unscored)."""
    import pyarrow as pa

    from jobs.generate import generate_model

    curated = require_done(cfg.run_dir, "curate").read().to_pylist()
    queries = {q["sample_id"]: q for q in round_queries(curated, cfg.queries_per_round, cfg.seed, r)}
    table = pa.Table.from_pylist(list(queries.values()))
    spec = ModelSpec(name=f"round-{r}", kind=cfg.backend, path=policy, n=cfg.n,
                     temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed + r)
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
    from jobs.score import main as score_main

    url = cfg.service_url or (StageDir(cfg.run_dir, "serve-reward").read_manifest() or {}).get("url")
    if not url:
        raise SystemExit("self-improve: no reward service: run `mmrlhf serve-reward detach=true` "
                         "or pass service_url=")
    if score_main([f"run_dir={round_dir}/scoring", f"url={url}", f"token_env={cfg.token_env}"]):
        raise SystemExit("self-improve: scoring failed")
    out = StageDir(round_dir, "score")
    if not out.is_done():
        scored = StageDir(f"{round_dir}/scoring", "score").read().to_pylist()
        out.begin({"pair_mode": cfg.pair_mode, "min_margin": cfg.min_margin})
        kept, dropped = orient_by_reward(scored, cfg.pair_mode, cfg.min_margin)
        out.write_part("pairs", to_table(kept, "pair"))
        out.finish(len(scored), len(kept), 0, dropped_no_preference=dropped)
        print(f"self-improve: {len(kept)} pairs kept of {len(scored)} scored ({dropped} dropped: "
              f"no reward gap or not best-vs-worst)")
    return out


def train_round(cfg: SelfImproveConfig, round_dir: str, policy: str) -> str:
    from jobs.ref_logps import main as ref_main
    from jobs.train_dpo import main as dpo_main

    _, dpo_argv = round_stage_argv(cfg, round_dir, policy, {})
    dpo = parse_stage_args("train-dpo", DpoConfig, dpo_argv)
    encoding = {"max_response_tokens": dpo.max_response_tokens, "max_frames": dpo.max_frames}
    ref_argv, dpo_argv = round_stage_argv(cfg, round_dir, policy, encoding)
    if ref_main(ref_argv):
        raise SystemExit("self-improve: ref-logps failed")
    if dpo_main(dpo_argv):
        raise SystemExit("self-improve: train-dpo failed")
    return StageDir(round_dir, "train-dpo").read_manifest()["policy"]


def evaluate_round(cfg: SelfImproveConfig, round_dir: str, policy: str, r: int) -> dict:
    from jobs.evaluate import main as evaluate_main

    argv = [f"run_dir={round_dir}", f"benchmark_run_dir={cfg.run_dir}", "reward_bench=false",
            f"policies={{round-{r}: {policy}}}", f"benchmark_limit={cfg.benchmark_limit}"]
    if evaluate_main(argv):
        raise SystemExit("self-improve: evaluate failed")
    metrics = json.loads((Path(round_dir) / "evaluate" / "metrics.json").read_text())
    return metrics["toy_benchmark"][f"round-{r}"]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_stage_args("self-improve", SelfImproveConfig, argv, __doc__)
    out = StageDir(cfg.run_dir, "self-improve")
    if out.is_done(config_to_dict(cfg)):
        print(f"self-improve: already done in {out.root}")
        return 0
    from actors.runtime import init_ray

    init_ray()
    out.begin(config_to_dict(cfg))
    policy = cfg.start_policy.replace("{run_dir}", cfg.run_dir.rstrip("/"))
    rounds: dict[str, dict] = {}
    start = Path(cfg.run_dir) / "evaluate" / "metrics.json"
    if start.exists():
        toy = json.loads(start.read_text())["toy_benchmark"]
        rounds.update({f"round-0 ({k})": v for k, v in toy.items() if k in ("sft", "mm-dpo")})
    pairs_total = 0
    for r in range(1, cfg.rounds + 1):
        round_dir = out.path(f"round-{r}")
        print(f"\n--- self-improve: round {r} from {policy} ---", flush=True)
        sample_round(cfg, round_dir, policy, r)
        pairs_total += score_round(cfg, round_dir).count_rows()
        policy = train_round(cfg, round_dir, policy)
        if cfg.evaluate:
            rounds[f"round-{r}"] = evaluate_round(cfg, round_dir, policy, r)
        Path(out.local_path("rounds.json")).write_text(json.dumps(rounds, indent=2))
    if rounds:
        from mmrlhf_ray.evaluation import plot_metrics, summary_markdown

        plot_metrics(rounds, out.local_path("rounds.png"), title="toy benchmark per self-improvement round")
        Path(out.local_path("summary.md")).write_text(summary_markdown(rounds))
    out.finish(pairs_total, pairs_total, 0, rounds=cfg.rounds, final_policy=policy)
    print(f"self-improve: {cfg.rounds} rounds, final policy {policy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
