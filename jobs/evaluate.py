"""Evaluate policies on the toy benchmark (accuracy, hallucination, safety) and the
reward model on held-out pairs (RewardBench ACC/ACC+).

    mmrlhf evaluate run_dir=runs/demo
    mmrlhf evaluate reward-bench --help          # ACC/ACC+ of an official-format file
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/evaluate.yaml

Reads the held-out benchmark (``toyworld/benchmark``) and each policy in ``policies``;
answers are generated greedily by the generate stage's vLLM actor pool and written as
parts ``<policy>-NNNNN`` (a re-run skips policies already answered). Writes
``evaluate/metrics.json`` (toy benchmark per policy, RewardBench), ``summary.md`` and
``toy_benchmark.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, StageInputError, begin_stage, require_done
from mmrlhf_ray.core.stages import get_stage
from mmrlhf_ray.evaluation.shapes import (
    EvaluateConfig,
    plot_metrics,
    policy_metrics,
    summary_markdown,
)
from mmrlhf_ray.generation.config import ModelSpec

BENCHMARK_STAGE = "toyworld/benchmark"


def policy_spec(cfg: EvaluateConfig, name: str, path: str) -> ModelSpec:
    """Greedy, one answer per query, the same actor pool the generate stage uses."""
    resolved = path.replace("{run_dir}", cfg.run_dir.rstrip("/"))
    if not Path(resolved).is_dir():
        raise StageInputError(f"evaluate: policy '{name}' has no model at {resolved}")
    return ModelSpec(
        name=name,
        kind=cfg.backend,
        path=resolved,
        n=1,
        temperature=0.0,
        max_tokens=cfg.max_tokens,
        pool_size=cfg.pool_size,
        num_gpus=cfg.num_gpus,
        dtype=cfg.dtype,
        batch_size=16,
    )


def answers_of(out: StageDir, policy: str) -> dict[str, str]:
    table = out.read(columns=["sample_id", "model", "text"])
    rows = table.filter(table.column("model").to_numpy(zero_copy_only=False) == policy).to_pylist()
    return {r["sample_id"]: r["text"] for r in rows}


def evaluate_policies(cfg: EvaluateConfig, out: StageDir) -> tuple[dict, int, int]:
    from harness.actor_pool import generate_model

    bench_dir = cfg.benchmark_run_dir or cfg.run_dir
    bench = require_done(bench_dir, BENCHMARK_STAGE).read().sort_by("sample_id")
    if cfg.benchmark_limit:
        bench = bench.slice(0, cfg.benchmark_limit)
    rows = bench.to_pylist()
    toy, quarantined = {}, 0
    for name, path in cfg.policies.items():
        stats = generate_model(out, bench, policy_spec(cfg, name, path), cfg.chunk_size)
        print(f"evaluate: {stats.line()}")
        quarantined += stats.quarantined
        toy[name] = policy_metrics(rows, answers_of(out, name))
    return toy, len(rows) * len(cfg.policies), quarantined


def reward_bench(cfg: EvaluateConfig) -> dict | None:
    """ACC/ACC+ of the trained reward model on its held-out pairs, when it has run."""
    if not cfg.reward_bench or not StageDir(cfg.run_dir, "train-reward").is_done():
        return None
    stage = get_stage("evaluate-reward-bench")
    manifest = stage.run(stage.config(run_dir=cfg.run_dir))  # a finished one is read back
    return {
        "mode": manifest.get("config", {}).get("mode"),
        "table": manifest.get("table"),
        "output": manifest.get("output"),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run(cfg: EvaluateConfig) -> dict:
    """The stage: answer the benchmark with every policy, score, plot."""
    bench = StageDir(cfg.benchmark_run_dir or cfg.run_dir, BENCHMARK_STAGE)
    out, done = begin_stage(cfg, "evaluate", inputs=[bench])
    if done:
        return out.read_manifest()
    toy, rows_in, quarantined = evaluate_policies(cfg, out)
    metrics = {"toy_benchmark": toy, "reward_bench": reward_bench(cfg)}
    Path(out.local_path("metrics.json")).write_text(json.dumps(metrics, indent=2))
    Path(out.local_path("summary.md")).write_text(summary_markdown(toy))
    plot_metrics(toy, out.local_path("toy_benchmark.png"))
    manifest = out.finish(rows_in, out.count_rows(), quarantined)
    for name, values in toy.items():
        shown = ", ".join(
            f"{k} {_fmt(values.get(k))}"
            for k in ("overall_accuracy", "chair_i", "refusal_harmful", "refusal_benign")
        )
        print(f"evaluate: {name}: {shown}")
    print(f"evaluate: wrote {out.local_path('metrics.json')}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "reward-bench":  # `mmrlhf evaluate reward-bench ...`
        return get_stage("evaluate-reward-bench").job().main(argv[1:])
    run(parse_stage_args("evaluate", EvaluateConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
