"""The lmms-eval path's overhead on the shapes benchmark, and 1 vs 2 actors.

Same tiny policy, same greedy answers (transformers backend), same rows:

* in-house: the project's generator in this process + the toy judge (what `evaluate`'s
  scorer does per item, without its Ray Data pool);
* lmms-eval, 1 actor: `harness.lmms_pool.evaluate_lmms` on `mmrlhf_shapes` (actor start
  in the evaluation env, lmms-eval's evaluator, Parquet parts, merge, aggregation);
* lmms-eval, 2 actors: the same, documents sharded over 2 actors.

Wall includes model load and (for the lmms-eval path) actor start-up: the fixed costs a
user pays once per task run. Checks that all three give the same per-item correctness.

    MMRLHF_EVAL_PYTHON=.venv-eval/bin/python .venv/bin/python -m benchmarks.lmms_eval_overhead --rows 24
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args()

    from actors.generator import Generator
    from harness.lmms_pool import evaluate_lmms
    from harness.runtime import init_ray
    from mmrlhf_ray.core.stage import StageDir
    from mmrlhf_ray.evaluation.lmms import eval_python, write_shapes_task
    from mmrlhf_ray.generation.config import ModelSpec
    from mmrlhf_ray.generation.requests import build_request
    from mmrlhf_ray.models import build_all
    from mmrlhf_ray.toyworld import benchmark_split, judge

    tmp = Path(tempfile.mkdtemp(prefix="lmms_bench_"))
    models = build_all(str(tmp / "models"), seed=0)
    rows = benchmark_split(args.rows, seed=5)
    spec = ModelSpec(
        name="sft", kind="transformers", path=models["policy"], n=1, temperature=0.0,
        max_tokens=args.max_tokens,
    )  # fmt: skip
    t = time.perf_counter()
    gen = Generator(spec)
    answers = [s[0].text for s in gen.generate([build_request(r, spec) for r in rows], True)]
    in_house = [float(judge(r, a)["correct"]) for r, a in zip(rows, answers, strict=True)]
    walls = {"in-house": time.perf_counter() - t}
    del gen

    write_shapes_task(rows, tmp / "tasks")
    init_ray()
    per_item = {}
    for actors in (1, 2):
        t = time.perf_counter()
        out = StageDir(str(tmp / f"run{actors}"), "evaluate/lmms-eval")
        res, _ = evaluate_lmms(
            out, spec, ["mmrlhf_shapes"], [str(tmp / "tasks")], actors, eval_python()
        )
        walls[f"lmms-eval, {actors} actor(s)"] = time.perf_counter() - t
        samples = res["mmrlhf_shapes"]["samples"]
        per_item[actors] = [json.loads(s["metrics"])["accuracy"] for s in samples]
    same = per_item[1] == per_item[2] == in_house
    base = walls["in-house"]
    print(f"rows {args.rows}, max_tokens {args.max_tokens}, same per-item correctness: {same}")
    for name, wall in walls.items():
        print(f"| {name} | {wall:.1f} s | {wall / base:.2f}x |")
    two, one = walls["lmms-eval, 2 actor(s)"], walls["lmms-eval, 1 actor(s)"]
    print(f"2 vs 1 actors: {one / two:.2f}x speed-up")


if __name__ == "__main__":
    main()
