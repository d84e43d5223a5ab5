"""The lmms-eval path of ``mmrlhf evaluate``: task folders, shards, the exactly-once merge.

Pure pieces (no lmms-eval, no Ray): the benchmark names a run asks for, the shapes task
written into a run directory (YAML + utils from ``mmrlhf_ray/evaluation/lmms_tasks/shapes`` and the
benchmark rows as Parquet), the split of a task's documents into contiguous shards (one per
actor; lmms-eval's own ``offset``/``limit``), and the merge of the shards' per-sample rows
that refuses a missing or duplicated document. The actors (``actors/lmms_evaluator.py``)
run lmms-eval's evaluator on a shard; ``harness/lmms_pool.py`` drives them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

IN_HOUSE = ("shapes", "reward-bench", "safetybench")  # everything else is an lmms-eval task
SHAPES_TASK = "mmrlhf_shapes"
TASKS_DIR = Path(__file__).parent / "lmms_tasks"

# The evaluation environment (lmms-eval and its pins, layered over .venv; docs/GUIDE.md).
EVAL_PYTHON = Path(__file__).resolve().parents[2] / ".venv-eval" / "bin" / "python"


def eval_python() -> str:
    """The evaluation environment's interpreter: $MMRLHF_EVAL_PYTHON, else .venv-eval's,
    else '' (not built)."""
    given = os.environ.get("MMRLHF_EVAL_PYTHON", "")
    if given:
        return given
    return str(EVAL_PYTHON) if EVAL_PYTHON.exists() else ""


SAMPLE_SCHEMA = pa.schema(
    [
        ("policy", pa.string()),
        ("task", pa.string()),
        ("doc_id", pa.int64()),
        ("sample_id", pa.string()),  # the document's own id when it has one, else doc_id
        ("target", pa.string()),
        ("response", pa.string()),
        ("metrics", pa.string()),  # JSON: metric name -> per-sample value (process_results)
        ("shard", pa.string()),
    ]
)


def split_benchmarks(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(in-house benchmarks, lmms-eval task names), each in the order given, no repeats."""
    seen, own, lmms = set(), [], []
    for raw in names:
        name = str(raw).strip()
        if not name:
            raise ValueError("benchmarks: an empty name")
        if name in seen:
            continue
        seen.add(name)
        (own if name in IN_HOUSE else lmms).append(name)
    return own, lmms


def write_shapes_task(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, task: str = SHAPES_TASK
) -> Path:
    """A runnable copy of the shapes task under ``out_dir/<task>`` (an lmms-eval include
    path): the YAML with the data file and task name filled in, utils.py, ``data.parquet``."""
    src, dst = TASKS_DIR / "shapes", Path(out_dir) / task
    dst.mkdir(parents=True, exist_ok=True)
    keep = ("sample_id", "question", "image", "video_frames", "reference_answer", "ground_truth")
    table = pa.table({k: [r.get(k) for r in rows] for k in keep})
    data = dst / "data.parquet"
    pq.write_table(table, data)
    text = (src / "mmrlhf_shapes.yaml").read_text().replace("@DATA_FILE@", str(data.resolve()))
    text = text.replace(f"task: {SHAPES_TASK}\n", f"task: {task}\n")
    (dst / f"{task}.yaml").write_text(text)
    shutil.copyfile(src / "utils.py", dst / "utils.py")
    return dst


def shard_ranges(n_docs: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous ``(offset, limit)`` ranges covering ``range(n_docs)`` once, sizes within 1."""
    if n_docs < 0 or shards < 1:
        raise ValueError(f"shards: need n_docs >= 0 and shards >= 1, got {n_docs}, {shards}")
    shards = max(1, min(shards, n_docs))
    base, extra = divmod(n_docs, shards)
    out, start = [], 0
    for i in range(shards):
        size = base + (1 if i < extra else 0)
        out.append((start, size))
        start += size
    return out


def shard_part(policy: str, task: str, index: int, shards: int) -> str:
    """Part name of one shard's per-sample rows (the resume unit)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{policy}-{task}")
    return f"{safe}-{index:03d}of{shards:03d}"


def sample_rows(
    policy: str, task: str, shard: str, samples: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """lmms-eval sample logs -> rows of ``SAMPLE_SCHEMA`` (metrics as JSON)."""
    rows = []
    for s in samples:
        doc = s.get("doc") or {}
        resp = s.get("filtered_resps") or s.get("resps") or [""]
        while isinstance(resp, list):
            resp = resp[0] if resp else ""
        rows.append(
            {
                "policy": policy,
                "task": task,
                "doc_id": int(s["doc_id"]),
                "sample_id": str(doc.get("sample_id", s["doc_id"])),
                "target": str(s.get("target", "")),
                "response": str(resp),
                "metrics": json.dumps(s["metrics"], sort_keys=True),
                "shard": shard,
            }
        )
    return rows


def merge_samples(task: str, n_docs: int, shards: Sequence[Sequence[dict]]) -> list[dict]:
    """The shards' rows as one list ordered by ``doc_id``; every document exactly once."""
    by_doc: dict[int, dict] = {}
    for rows in shards:
        for row in rows:
            doc = int(row["doc_id"])
            if doc in by_doc:
                raise ValueError(
                    f"{task}: doc_id {doc}: in shards {by_doc[doc]['shard']} and {row['shard']}"
                )
            by_doc[doc] = row
    missing = sorted(set(range(n_docs)) - set(by_doc))
    extra = sorted(set(by_doc) - set(range(n_docs)))
    if missing or extra:
        raise ValueError(f"{task}: doc_id: missing {missing[:5]}, unexpected {extra[:5]}")
    return [by_doc[d] for d in range(n_docs)]


def metric_values(rows: Sequence[dict]) -> dict[str, list]:
    """Per-sample values of each metric, in ``rows`` order (what an aggregation takes)."""
    out: dict[str, list] = {}
    for row in rows:
        for name, value in json.loads(row["metrics"]).items():
            out.setdefault(name, []).append(value)
    return out


BENCHMARK_PREFIX = "lmms-eval/"  # + task name: the benchmark of its per-item rows


def task_items(
    policy: str, task: str, rows: Sequence[dict], metrics: dict[str, Any]
) -> tuple[list[dict], list[str]]:
    """(per-item rows of one policy on one task, the metrics left without them and why).

    A metric gets per-item rows (``outcomes.ITEM_SCHEMA``, benchmark ``lmms-eval/<task>``,
    from which its interval and the paired tests between policies are computed) when its
    per-sample values are numbers and the task's own aggregate of them is their mean: an
    interval of a mean says nothing about, e.g., MME's summed category scores."""
    from mmrlhf_ray.evaluation.outcomes import item_rows

    items: list[dict] = []
    left: list[str] = []
    ids = [str(r["sample_id"]) for r in rows]
    for name, values in metric_values(rows).items():
        numeric = all(isinstance(v, (int, float)) for v in values)  # bools are 0/1
        aggregate = metrics.get(name)
        if not values or not numeric or not isinstance(aggregate, (int, float)):
            left.append(f"{BENCHMARK_PREFIX}{task}/{policy}/{name}: per-sample values not numbers")
            continue
        mean = sum(float(v) for v in values) / len(values)
        if abs(mean - float(aggregate)) > 1e-9 * max(1.0, abs(mean)):
            left.append(
                f"{BENCHMARK_PREFIX}{task}/{policy}/{name}: the task's aggregate "
                f"({aggregate}) is not the mean of its samples ({mean:.6g}): no per-item interval"
            )
            continue
        for item_id, v in zip(ids, values, strict=True):
            items += item_rows(BENCHMARK_PREFIX + task, policy, item_id, {name: float(v)})
    return items, left
