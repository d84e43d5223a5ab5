"""Evaluate policies on the benchmarks a run asks for, every number with n and its 95%
interval, every policy against the one before it on the same items.

    mmrlhf evaluate run_dir=runs/demo
    mmrlhf evaluate run_dir=runs/demo "benchmarks=[safetybench]" safety.tasks=data/safety
    mmrlhf evaluate reward-bench --help          # ACC/ACC+ of an official-format file
    ray job submit --working-dir . -- python jobs/evaluate.py --config configs/evaluate.yaml

``benchmarks``: ``shapes`` (the held-out ``toyworld/benchmark``, answered greedily by the
generate stage's vLLM actor pool, parts ``<policy>-NNNNN``), ``reward-bench`` (the trained
reward model), ``safetybench`` (the task files of ``safety.tasks`` answered by every policy,
parts ``safetybench-<policy>-NNNNN``, judged by the configured judges) and any lmms-eval task
(evaluator actors in the evaluation env, shards under ``evaluate/lmms-eval``). A re-run skips
what is answered. Writes ``evaluate/metrics.json`` (an ``EvaluationRecord``), ``items.parquet``
(the per-item outcomes every interval and paired test is recomputed from: Holm-adjusted
across all of them), ``summary.md`` and, with ``shapes``, ``toy_benchmark.png``.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import pyarrow as pa

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, begin_stage, require_done
from mmrlhf_ray.core.stages import get_stage
from mmrlhf_ray.evaluation.config import EvaluateConfig, policy_spec
from mmrlhf_ray.evaluation.lmms import SHAPES_TASK, split_benchmarks
from mmrlhf_ray.evaluation.record import EvaluationRecord
from mmrlhf_ray.evaluation.report import harness_sections
from mmrlhf_ray.evaluation.safety_data import average_comparisons
from mmrlhf_ray.evaluation.shapes import (
    policy_items,
    policy_metrics,
    repeat_seeds,
    result_lines,
    write_results,
)

BENCHMARK_STAGE = "toyworld/benchmark"


def answers_of(out: StageDir, policy: str) -> dict[str, str]:
    table = out.read(columns=["sample_id", "model", "text"])
    rows = table.filter(table.column("model").to_numpy(zero_copy_only=False) == policy).to_pylist()
    return {r["sample_id"]: r["text"] for r in rows}


def benchmark_table(cfg: EvaluateConfig) -> pa.Table:
    """The held-out shapes benchmark by ``sample_id`` (its first ``benchmark_limit`` rows)."""
    bench_dir = cfg.benchmark_run_dir or cfg.run_dir
    bench = require_done(bench_dir, BENCHMARK_STAGE).read().sort_by("sample_id")
    return bench.slice(0, cfg.benchmark_limit) if cfg.benchmark_limit else bench


def evaluate_policies(cfg: EvaluateConfig, out: StageDir) -> tuple[dict, list[dict], int, int]:
    from harness.actor_pool import generate_model

    bench = benchmark_table(cfg)
    rows = bench.to_pylist()
    toy, items, quarantined = {}, [], 0
    for name, path in cfg.policies.items():
        for seed in repeat_seeds(cfg.repeats):
            spec = policy_spec(cfg, name, path, seed)
            stats = generate_model(out, bench, spec, cfg.chunk_size)
            print(f"evaluate: {stats.line()}")
            quarantined += stats.quarantined
            answers = answers_of(out, spec.name)
            toy[spec.name] = policy_metrics(rows, answers)
            items += policy_items(spec.name, rows, answers)
    return toy, items, len(rows) * len(cfg.policies) * cfg.repeats, quarantined


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


def lmms_benchmarks(cfg: EvaluateConfig, tasks: list[str]) -> tuple[dict, list[dict], list[str]]:
    """lmms-eval tasks on Ray actors in the evaluation env: (report, per-item rows, metrics
    without per-item rows and why)."""
    from harness.lmms_pool import run_benchmarks

    bench = StageDir(cfg.benchmark_run_dir or cfg.run_dir, BENCHMARK_STAGE)
    rows = benchmark_table(cfg).to_pylist() if bench.is_done() else None
    return run_benchmarks(cfg, tasks, rows)


def safety_answers(cfg: EvaluateConfig, out: StageDir) -> tuple[dict, int, int]:
    """``{column: (answers by task, unanswered by task)}`` (every policy's greedy answers to
    ``safety.tasks``, generated as parts ``safetybench-<policy>-NNNNN`` of this stage;
    ``responses`` for ``safety.responses``), queries generated, queries quarantined."""
    from harness.actor_pool import generate_model
    from mmrlhf_ray.evaluation.safety_data import (
        generation_queries,
        read_responses,
        read_task_files,
        with_answers,
    )

    columns: dict[str, tuple[dict, dict]] = {}
    rows_in = quarantined = 0
    if cfg.safety.tasks:
        tasks = read_task_files(cfg.safety.tasks)
        queries = pa.Table.from_pylist(generation_queries(tasks))
        for name, path in cfg.policies.items():
            spec = replace(policy_spec(cfg, name, path), name=f"safetybench-{name}")
            stats = generate_model(out, queries, spec, cfg.chunk_size)
            print(f"evaluate: {stats.line()}")
            rows_in, quarantined = rows_in + queries.num_rows, quarantined + stats.quarantined
            columns[name] = with_answers(tasks, answers_of(out, spec.name))
    if cfg.safety.responses:
        columns["responses"] = (read_responses(cfg.safety.responses), {})
    return columns, rows_in, quarantined


def safety_benchmark(cfg: EvaluateConfig, out: StageDir) -> tuple[dict, list[dict], int, int]:
    """SafetyBench for every column of answers, the judges built once: (``{column:
    {tasks, averages}}``, per-item rows, queries generated, quarantined)."""
    from mmrlhf_ray.evaluation.safety_judges import Judges, endpoint_judge, safetybench_report

    columns, rows_in, quarantined = safety_answers(cfg, out)
    classify = None
    if cfg.safety.classifier:
        from harness.lmms_pool import classifier_judge

        classify = classifier_judge(cfg.safety.classifier, cfg.num_gpus, cfg.dtype)
    judges = Judges(cfg.safety.refusal, classify, endpoint_judge(cfg.safety))
    report, items = {}, []
    try:
        for column, (answers, unanswered) in (columns or {"(no answers)": ({}, {})}).items():
            report[column], rows = safetybench_report(column, answers, judges, unanswered)
            items += rows
    finally:
        if classify is not None:
            classify.close()  # the classifier's actor
    return report, items, rows_in, quarantined


def log_metrics(cfg: EvaluateConfig, record: EvaluationRecord) -> None:
    """The record's numbers into the tracking backends (``tracking.*``; TensorBoard under
    ``evaluate/tensorboard`` by default), at step 0, the way training stages log theirs."""
    from mmrlhf_ray.training.tracking import log_summary, resolve_tracking, start_tracking

    target = start_tracking(resolve_tracking(cfg.tracking, cfg.run_dir, "evaluate", "metrics"))
    if target.backends:
        numbers = {"intervals": record.intervals, "comparisons": record.comparisons}
        log_summary(target, numbers, 0)


def run(cfg: EvaluateConfig) -> dict:
    """The stage: answer every benchmark with every policy, score, intervals, plot."""
    own, lmms_tasks = split_benchmarks(cfg.benchmarks)
    bench = StageDir(cfg.benchmark_run_dir or cfg.run_dir, BENCHMARK_STAGE)
    needs_bench = "shapes" in own or SHAPES_TASK in lmms_tasks
    out, done = begin_stage(cfg, "evaluate", inputs=[bench] if needs_bench else [])
    if done:
        return out.read_manifest()
    toy, items, rows_in, quarantined = (
        evaluate_policies(cfg, out) if "shapes" in own else ({}, [], 0, 0)
    )
    lmms_eval, lmms_left, safety, averages = {}, [], {}, {}
    if lmms_tasks:
        lmms_eval, rows, lmms_left = lmms_benchmarks(cfg, lmms_tasks)
        items += rows
    if "safetybench" in own:
        safety, rows, s_in, s_quarantined = safety_benchmark(cfg, out)
        items, rows_in, quarantined = items + rows, rows_in + s_in, quarantined + s_quarantined
        averages = average_comparisons(rows, list(safety), cfg.bootstrap_resamples)
    record = write_results(
        out.local_path(),
        toy,
        items,
        reward_bench(cfg) if "reward-bench" in own else None,
        cfg.bootstrap_resamples,
        list(cfg.policies),
        cfg.repeats,
        averages,
    )
    record.lmms_eval, record.safetybench = lmms_eval, safety
    record.not_estimated += lmms_left
    path = record.write(out.local_path())
    log_metrics(cfg, record)
    harness = harness_sections(record)
    if harness:  # summary.md has the shapes benchmark; the harness benchmarks follow it
        with open(out.local_path("summary.md"), "a", encoding="utf-8") as summary:
            summary.write("\n".join(harness) + "\n")
    manifest = out.finish(rows_in, out.count_rows(), quarantined)
    for line in result_lines(record):
        print(f"evaluate: {line}")
    print(f"evaluate: wrote {path} and items.parquet")
    return manifest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "reward-bench":  # `mmrlhf evaluate reward-bench ...`
        return get_stage("evaluate-reward-bench").job().main(argv[1:])
    run(parse_stage_args("evaluate", EvaluateConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
