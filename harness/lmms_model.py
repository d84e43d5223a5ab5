"""Our model adapter for lmms-eval, and one shard of a task through lmms-eval's evaluator.

``MmrlhfLmm`` (registered with lmms-eval as ``mmrlhf``) answers lmms-eval's
``generate_until`` requests with the project's generator (``actors.generator.Generator``:
vLLM where it imports, else transformers), with the prompt rendered by the model's own
chat template exactly as the generate and evaluate stages do; so the harness path and the
in-house path see identical prompts and images for every family the family layer knows
(Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, InternVL, SmolVLM). Why ours and not lmms-eval's
per-family classes: docs/GUIDE.md (## evaluate).

``run_shard`` runs lmms-eval's own ``simple_evaluate`` on documents
``[offset, offset + limit)`` of a task (its ``offset``/``limit``), and returns the sample
logs; ``aggregate`` applies the task's own aggregation functions to merged per-sample
values. Imports lmms-eval: runs only in the evaluation environment (an actor).
"""

from __future__ import annotations

from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

from actors.generator import Generator
from mmrlhf_ray.data.media import sample_uniform
from mmrlhf_ray.data.prompts import chat_messages
from mmrlhf_ray.generation.config import ModelSpec
from mmrlhf_ray.generation.requests import GenRequest


@register_model("mmrlhf")
class MmrlhfLmm(lmms):
    """lmms-eval model over the project's generator (greedy unless the task says otherwise)."""

    def __init__(self, spec: ModelSpec | dict | None = None, **kwargs: Any) -> None:
        super().__init__()
        spec = spec if spec is not None else ModelSpec(**kwargs)
        self.spec = spec if isinstance(spec, ModelSpec) else ModelSpec(**spec)
        self.generator = Generator(self.spec)
        self.task_dict: dict = {}

    def _request(self, inst: Instance, key: str) -> GenRequest:
        context, _gen_kwargs, doc_to_visual, doc_id, task, split = inst.args
        doc = self.task_dict[task][split][doc_id]
        visuals = [v for v in (doc_to_visual(doc) or []) if v is not None]
        is_video = bool(doc.get("video_frames")) and doc.get("image") is None
        if is_video:
            frames = sample_uniform(visuals, self.spec.max_frames)
            return GenRequest(key, chat_messages(context, 0, True), [], frames)
        return GenRequest(key, chat_messages(context, len(visuals)), visuals)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        if any(inst.args[1].get("do_sample") for inst in requests):
            raise ValueError("mmrlhf: sampling tasks are not supported; greedy only")
        reqs = [self._request(inst, str(i)) for i, inst in enumerate(requests)]
        out: list[str] = []
        size = max(1, self.spec.batch_size)
        for start in range(0, len(reqs), size):
            samples = self.generator.generate(reqs[start : start + size], greedy=True)
            out += [s[0].text for s in samples]
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("mmrlhf: loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("mmrlhf: multi-round tasks are not supported")


_MANAGERS: dict[tuple, Any] = {}


def task_manager(include_paths: list[str], task: str) -> Any:
    """lmms-eval's TaskManager for ``task``: over the local task folders alone when the task
    is there, else over lmms-eval's registry too (indexing every registered task takes
    seconds). Built once per process."""
    from lmms_eval.tasks import TaskManager

    paths = list(include_paths)
    if paths:
        key = (tuple(paths), False)
        if key not in _MANAGERS:
            _MANAGERS[key] = TaskManager(include_path=paths, include_defaults=False)
        if task in _MANAGERS[key].all_tasks:
            return _MANAGERS[key]
    key = (tuple(paths), True)
    if key not in _MANAGERS:
        _MANAGERS[key] = TaskManager(include_path=paths or None)
    return _MANAGERS[key]


def count_docs(task: str, include_paths: list[str]) -> int:
    from lmms_eval.tasks import get_task_dict

    obj = get_task_dict([task], task_manager(include_paths, task))[task]
    return len(obj.eval_docs)


def run_shard(
    lm: MmrlhfLmm, task: str, include_paths: list[str], offset: int, limit: int
) -> list[dict[str, Any]]:
    """lmms-eval's evaluator on one contiguous shard; its sample logs (doc, metrics)."""
    from lmms_eval.evaluator import simple_evaluate

    results = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=task_manager(include_paths, task),
        offset=offset,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        verbosity="WARNING",
    )
    names = [m["metric"] for m in results["configs"][task].get("metric_list", [])]
    return [{**s, "metrics": {k: s[k] for k in names if k in s}} for s in results["samples"][task]]


def aggregate(task: str, include_paths: list[str], values: dict[str, list]) -> dict[str, Any]:
    """The task's own aggregation of each metric over the merged per-sample values."""
    from lmms_eval.tasks import get_task_dict

    obj = get_task_dict([task], task_manager(include_paths, task))[task]
    fns = obj.aggregation()
    return {name: fns[name](vals) for name, vals in values.items() if name in fns}


def higher_is_better(task: str, include_paths: list[str]) -> dict[str, bool]:
    """The task's own better direction of each metric (its ``metric_list``)."""
    from lmms_eval.tasks import get_task_dict

    obj = get_task_dict([task], task_manager(include_paths, task))[task]
    return {name: bool(v) for name, v in obj.higher_is_better().items()}
