"""lmms-eval tasks on a pool of Ray actors: shard, run, redo a dead actor's shard, merge once.

For one policy and its tasks: ``actors`` ``LmmsEvaluator`` actors (one per GPU, one per CPU
slot on a laptop) each take contiguous document shards (``mmrlhf_ray.evaluation.lmms.shard_ranges``);
each finished shard is written as one Parquet part of the stage (its per-sample rows: the
resume unit, a re-run skips it); an actor that dies has its shard put back and a fresh actor
started (``max_restarts`` per pool). The parts of a task are merged exactly once
(``merge_samples`` refuses a missing or duplicated document) and scored by the task's own
lmms-eval aggregation. ``python`` is the evaluation environment's interpreter (lmms-eval
lives there, docs/GUIDE.md); '' = this one.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from actors.lmms_evaluator import LmmsEvaluator
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.evaluation.lmms import (
    SAMPLE_SCHEMA,
    merge_samples,
    metric_values,
    shard_part,
    shard_ranges,
)
from mmrlhf_ray.generation.config import ModelSpec

ROOT = str(Path(__file__).resolve().parents[1])


def _actor_options(spec: ModelSpec, python: str) -> dict[str, Any]:
    env = {"PYTHONPATH": ROOT, "HF_DATASETS_OFFLINE": os.environ.get("HF_DATASETS_OFFLINE", "1")}
    runtime_env: dict[str, Any] = {"env_vars": env}
    if python:
        runtime_env["py_executable"] = python
    return {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus, "runtime_env": runtime_env}


class LmmsPool:
    """``size`` evaluator actors over one model; restarts a dead one on demand."""

    def __init__(self, spec: ModelSpec, include: list[str], size: int, python: str, kill: str):
        self.args = (asdict(spec), list(include))
        self.cls = ray.remote(LmmsEvaluator).options(**_actor_options(spec, python))
        self.kill = kill
        self.actors = [self._new(kill) for _ in range(max(1, size))]
        self.restarts = 0

    def _new(self, kill: str = "") -> Any:
        return self.cls.remote(*self.args, kill)

    def replace(self, i: int) -> None:
        self.restarts += 1
        self.actors[i] = self._new()  # a restarted actor never dies on purpose

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)


def run_task(
    out: StageDir,
    pool: LmmsPool,
    policy: str,
    task: str,
    limit: int = 0,
    max_restarts: int = 3,
    shards: int = 0,
) -> tuple[list[dict], dict[str, Any]]:
    """(merged per-sample rows, the task's aggregated metrics) of one policy on one task,
    its documents in ``shards`` shards (0 = one per actor)."""
    n_docs = ray.get(pool.actors[0].count_docs.remote(task))
    n_docs = min(n_docs, limit) if limit else n_docs
    ranges = shard_ranges(n_docs, shards or len(pool.actors))
    names = [shard_part(policy, task, i, len(ranges)) for i in range(len(ranges))]
    todo = deque(i for i, name in enumerate(names) if not out.has_part(name))
    running: dict[Any, tuple[int, int]] = {}  # future -> (shard, actor)
    idle = deque(range(len(pool.actors)))
    while todo or running:
        while todo and idle:
            shard, actor = todo.popleft(), idle.popleft()
            offset, count = ranges[shard]
            fut = pool.actors[actor].run_shard.remote(task, names[shard], offset, count)
            running[fut] = (shard, actor)
        done, _ = ray.wait(list(running), num_returns=1)
        shard, actor = running.pop(done[0])
        try:
            rows = ray.get(done[0])
        except ray.exceptions.RayActorError:
            if pool.restarts >= max_restarts:
                raise
            pool.replace(actor)
            todo.appendleft(shard)  # the dead actor's shard is redone
        else:
            out.write_part(names[shard], pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA))
        idle.append(actor)
    shards = [
        pq.read_table(f"{out.data_dir}/{n}.parquet", filesystem=out.fs).to_pylist() for n in names
    ]
    merged = merge_samples(task, n_docs, shards)
    metrics = ray.get(pool.actors[0].aggregate.remote(task, metric_values(merged)))
    return merged, metrics


def run_tasks(
    out: StageDir, pool: LmmsPool, policy: str, tasks: list[str], limit: int = 0, shards: int = 0
) -> dict:
    """``{task: {"metrics", "n", "samples", "higher_is_better"}}`` of one policy."""
    results = {}
    for task in tasks:
        rows, metrics = run_task(out, pool, policy, task, limit, shards=shards)
        better = ray.get(pool.actors[0].higher_is_better.remote(task))
        results[task] = {"metrics": metrics, "n": len(rows), "samples": rows}
        results[task]["higher_is_better"] = {k: v for k, v in better.items() if k in metrics}
    return results


def evaluate_lmms(
    out: StageDir,
    spec: ModelSpec,
    tasks: list[str],
    include: list[str],
    actors: int = 1,
    python: str = "",
    limit: int = 0,
    kill_marker: str = "",
) -> tuple[dict[str, dict[str, Any]], int]:
    """(``run_tasks``' results, actors restarted) of one policy."""
    pool = LmmsPool(spec, include, actors, python, kill_marker)
    try:
        return run_tasks(out, pool, spec.name, tasks, limit), pool.restarts
    finally:
        pool.close()


def run_benchmarks(
    cfg: Any, tasks: list[str], bench_rows: list[dict] | None
) -> tuple[dict[str, Any], list[dict], list[str]]:
    """``mmrlhf evaluate``'s lmms-eval tasks for every policy (``EvaluateConfig``): the shapes
    task written into the run when asked, per-sample rows kept as Parquet parts of
    ``evaluate/lmms-eval`` (a re-run skips finished shards). Returns (``{policy: {task:
    {"metrics", "n", "higher_is_better"}}}``, the per-item rows of every mean metric, the metrics without)."""
    from mmrlhf_ray.evaluation.config import policy_spec
    from mmrlhf_ray.evaluation.lmms import SHAPES_TASK, eval_python, task_items, write_shapes_task

    out = StageDir(cfg.run_dir, "evaluate/lmms-eval")
    include = list(cfg.lmms_include)
    if SHAPES_TASK in tasks:
        if bench_rows is None:
            raise ValueError(f"benchmarks: {SHAPES_TASK} needs the run's toyworld/benchmark")
        include.append(str(write_shapes_task(bench_rows, out.local_path("tasks")).parent))
    python = cfg.eval_python or eval_python()
    report: dict[str, Any] = {}
    items: list[dict] = []
    left: list[str] = []
    for name, path in cfg.policies.items():
        spec = policy_spec(cfg, name, path)  # greedy, as the in-house benchmarks answer
        results, restarts = evaluate_lmms(
            out, spec, tasks, include, cfg.lmms_actors, python, cfg.lmms_limit
        )
        keep = ("metrics", "n", "higher_is_better")
        report[name] = {t: {k: r[k] for k in keep} for t, r in results.items()}
        report[name]["_actor_restarts"] = restarts
        for task, r in results.items():
            rows, without = task_items(name, task, r["samples"], r["metrics"])
            items, left = items + rows, left + without
    return report, items, left


def classifier_judge(path: str, num_gpus: float = 0.0, dtype: str = "float32", **spec: Any) -> Any:
    """A harm classifier checkpoint served by one generator actor (vLLM where it imports),
    greedy, one token (the classifier answers Yes/No). Each prompt goes in verbatim (a raw
    ``GenRequest.prompt``: HarmBench's prompt is already a complete Llama-2 ``[INST] ...``
    prompt, so no chat template goes around it). ``spec``: other ``ModelSpec`` fields
    (``kind``, ``max_model_len``, ``enforce_eager`` ...).

    Returns the judge: ``judge(prompts) -> completions`` (``Judges.classify``),
    ``judge.samples(prompts) -> [Sample]`` (token ids, the prompt as the backend saw it)
    and ``judge.close()``, which stops the actor (call it once the run is judged).
    """
    from actors.generator import Generator
    from mmrlhf_ray.generation.requests import GenRequest, Sample

    fields = dict(name="harm-classifier", n=1, temperature=0.0, max_tokens=1, max_model_len=2048)
    model = ModelSpec(**{**fields, **spec, "path": path, "num_gpus": num_gpus, "dtype": dtype})
    actor = ray.remote(Generator).options(num_cpus=model.num_cpus, num_gpus=num_gpus).remote(model)

    class Judge:
        def samples(self, prompts: list[str]) -> list[Sample]:
            reqs = [GenRequest(str(i), [], prompt=p) for i, p in enumerate(prompts)]
            return [s[0] for s in ray.get(actor.generate.remote(reqs, True))]

        def __call__(self, prompts: list[str]) -> list[str]:
            return [s.text for s in self.samples(prompts)]

        def close(self) -> None:
            ray.kill(actor)

    return Judge()
