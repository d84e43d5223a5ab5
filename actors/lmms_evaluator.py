"""The lmms-eval actor: one model, lmms-eval's evaluator on one shard of a task at a time.

Runs in the evaluation environment (``.venv-eval``, lmms-eval installed; started with
``runtime_env={"py_executable": ...}``), one per GPU (one per CPU slot on a laptop).
``run_shard`` returns the shard's per-sample rows (``mmrlhf_ray.evaluation.lmms.SAMPLE_SCHEMA``);
``aggregate`` applies the task's own aggregation to merged values. The driver
(``harness/lmms_pool.py``) plans, retries and merges.
"""

from __future__ import annotations

import os
from typing import Any

from mmrlhf_ray.evaluation.lmms import sample_rows
from mmrlhf_ray.generation.config import ModelSpec


class LmmsEvaluator:
    def __init__(self, spec: dict[str, Any], include_paths: list[str], kill_marker: str = ""):
        from harness.lmms_model import MmrlhfLmm

        self.spec = ModelSpec(**spec)
        self.include_paths = list(include_paths)
        self.kill_marker = kill_marker
        self.lm = MmrlhfLmm(self.spec)

    def count_docs(self, task: str) -> int:
        from harness.lmms_model import count_docs

        return count_docs(task, self.include_paths)

    def run_shard(self, task: str, shard: str, offset: int, limit: int) -> list[dict[str, Any]]:
        from harness.lmms_model import run_shard

        if self.kill_marker and not os.path.exists(self.kill_marker):  # tests: die once
            open(self.kill_marker, "w").close()
            os._exit(1)
        samples = run_shard(self.lm, task, self.include_paths, offset, limit)
        return sample_rows(self.spec.name, task, shard, samples)

    def aggregate(self, task: str, values: dict[str, list]) -> dict[str, Any]:
        from harness.lmms_model import aggregate

        return aggregate(task, self.include_paths, values)

    def higher_is_better(self, task: str) -> dict[str, bool]:
        from harness.lmms_model import higher_is_better

        return higher_is_better(task, self.include_paths)
