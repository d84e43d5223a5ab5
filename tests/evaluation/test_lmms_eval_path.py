"""The lmms-eval path, offline, real lmms-eval on Ray actors in the evaluation environment.

One run of two local tasks (the shapes task written twice with different rows) sharded
over 2 actors, one of which dies on its first shard, against the same run on 1 actor:
same sample ids, no duplicates, same answers and per-item scores; and the shapes task's
per-item correctness equals the in-house scorer's on the same greedy answers, which are
the in-house transformers path's answers.
"""

from __future__ import annotations

import json
import os

import pytest

from mmrlhf_ray.evaluation.lmms import EVAL_PYTHON, eval_python, write_shapes_task
from mmrlhf_ray.toyworld import benchmark_split, judge

# ~45 s of wall on an idle 2-core box (3 actor start-ups in the evaluation env, each
# importing lmms-eval). `make test` builds the evaluation env and sets
# MMRLHF_REQUIRE_EVAL_ENV=1, so there a missing env fails instead of skipping.
if not eval_python():
    if os.environ.get("MMRLHF_REQUIRE_EVAL_ENV"):
        raise RuntimeError(f"no evaluation environment at {EVAL_PYTHON}: run `make setup`")
    pytestmark = pytest.mark.skip(reason=f"no evaluation environment ({EVAL_PYTHON})")


def _spec(policy):
    from mmrlhf_ray.generation.config import ModelSpec

    return ModelSpec(
        name="sft", kind="transformers", path=policy, n=1, temperature=0.0, max_tokens=12
    )


def test_sharded_run_with_a_killed_actor_equals_unsharded(ray_session, tiny_models, tmp_path):
    from harness.lmms_pool import LmmsPool, run_tasks
    from mmrlhf_ray.core.stage import StageDir

    rows_a, rows_b = benchmark_split(5, seed=3), benchmark_split(4, seed=11)
    write_shapes_task(rows_a, tmp_path / "tasks", "shapes_a")
    write_shapes_task(rows_b, tmp_path / "tasks", "shapes_b")
    include = [str(tmp_path / "tasks")]  # a local task directory: lmms-eval's include path
    spec, tasks, py = _spec(tiny_models["policy"]), ["shapes_a", "shapes_b"], eval_python()
    pool = LmmsPool(spec, include, 2, py, str(tmp_path / "died"))  # one dies on its 1st shard
    try:
        two = run_tasks(StageDir(str(tmp_path / "r2"), "evaluate/lmms"), pool, spec.name, tasks)
        restarts = pool.restarts
        # unsharded: every document in one shard, on the same (restarted) pool
        r1 = StageDir(str(tmp_path / "r1"), "evaluate/lmms")
        one = run_tasks(r1, pool, spec.name, tasks, shards=1)
    finally:
        pool.close()
    assert restarts >= 1  # an actor died on its first shard; its shard was redone
    for task, rows in (("shapes_a", rows_a), ("shapes_b", rows_b)):
        ids2 = [s["sample_id"] for s in two[task]["samples"]]
        assert ids2 == [r["sample_id"] for r in rows]  # every document once, in order
        assert len(set(s["shard"] for s in two[task]["samples"])) == 2
        assert len(set(s["shard"] for s in one[task]["samples"])) == 1
        strip = lambda ss: [(s["sample_id"], s["response"], s["metrics"]) for s in ss]  # noqa: E731
        assert strip(two[task]["samples"]) == strip(one[task]["samples"])
        assert two[task]["metrics"] == one[task]["metrics"]
        # the harness's per-item correctness == the in-house scorer's on the same answers
        harness = [json.loads(s["metrics"])["accuracy"] for s in two[task]["samples"]]
        in_house = [
            float(judge(r, s["response"])["correct"])
            for r, s in zip(rows, two[task]["samples"], strict=True)
        ]
        assert harness == in_house
        assert two[task]["metrics"]["accuracy"] == pytest.approx(sum(in_house) / len(rows))
    # the answers are the in-house greedy path's (same prompt, same images)
    from actors.generator import Generator
    from mmrlhf_ray.generation.requests import build_request

    gen = Generator(spec)
    ref = [s[0].text for s in gen.generate([build_request(r, spec) for r in rows_a], greedy=True)]
    assert [s["response"] for s in two["shapes_a"]["samples"]] == ref
