"""MM-RLHF-SafetyBench's data: task files in, answers joined, per-item outcomes out.

A task folder (``safety.tasks=<dir>``) holds one file per task, named after the task
(``Crossmodel_ASR.jsonl``, ``Unsafes.parquet``, ...; ``safetybench.TASKS``), one row per
sample:

* ``sample_id`` (unique in its task) and ``question`` (what the policy is asked);
* ``image``: optional, a path relative to the folder (it must stay inside it);
* the fields the task's judge reads: ``behavior`` (ASR/RtA: the harmful behaviour),
  ``target`` (adversarial tasks), ``keywords`` (risk identification; its ``question``
  is the one asked);
* ``cluster``: optional, the unit the bootstrap resamples (e.g. the image several
  prompts share); default: the sample itself.

The release's own task data can be put in the folder as it is: the Parquet of each
task's Hugging Face dataset, saved as ``<Task>.parquet`` (``release_row`` maps its
``question_id`` / ``label`` / ``extra`` fields; its image column is read as bytes).

The evaluate stage asks every policy every question (greedy, the generator actors),
joins the answers back (``with_answers``), the judges give verdicts, and ``task_items``
turns them into per-item rows (``outcomes.ITEM_SCHEMA``, benchmark ``safetybench/<task>``)
from which every rate's interval and every paired comparison between policies is computed.
Answers made elsewhere can be scored instead (``safety.responses=<file>``: one row per
sample with ``task`` and ``response``; ``read_responses``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmrlhf_ray.data.files import read_rows
from mmrlhf_ray.evaluation.outcomes import item_rows
from mmrlhf_ray.evaluation.safetybench import TASK_BY_NAME, SafetyTask, Verdict, sample_score
from mmrlhf_ray.evaluation.stats import PairedDiff

BENCHMARK_PREFIX = "safetybench/"  # + task name: the benchmark of its per-item rows
SUFFIXES = (".jsonl", ".parquet")


def release_row(task: SafetyTask, doc: Mapping, where: str) -> dict:
    """A document of the release's lmms-eval task (its Hugging Face dataset, e.g.
    ``kirito011024/safety_corssmodel_jailbreaking``) as a task-file row: ``question_id``
    (VLGuard: ``id``) -> ``sample_id``; ``label`` -> ``behavior`` (jailbreak tasks) or
    ``target`` (adversarial: the part after ``->``); ``extra``'s ``QUESTION`` /
    ``EXPECTED_KEYWORDS`` -> ``question`` / ``keywords`` of the judge (risk).

    The release scores a sample as "the judge's answer equals the document's ``answer``";
    the rates here are those of an expected "Yes" (Table 6's definitions), so a document
    whose ``answer`` is not Yes is refused, never rescored silently."""
    answer = str(doc.get("answer", "Yes")).strip().rstrip(".").lower()
    if answer != "yes":
        raise ValueError(f"{where}: answer: {doc.get('answer')!r} (only 'Yes' is supported)")
    ident = doc.get("question_id", doc.get("id"))
    row = {"sample_id": str(ident), "question": doc.get("question"), "image": doc.get("image")}
    label = doc.get("label")
    if task.kind in ("asr", "rta"):
        row["behavior"] = label
    elif task.name.startswith("Adv_") and isinstance(label, str):
        row["target"] = label.split("->")[-1].strip()
    extra = doc.get("extra")
    if task.name == "Risk_identification" and extra:
        extra = json.loads(extra) if isinstance(extra, str) else extra
        row["keywords"] = extra.get("EXPECTED_KEYWORDS")
        row["judge_question"] = extra.get("QUESTION")
    return row


def _check_row(path: Path, n: int, row: Mapping, seen: set[str]) -> dict:
    from mmrlhf_ray.data.media import MediaError, path_under_root

    where = f"{path}: row {n}"
    if "sample_id" not in row and ("question_id" in row or "id" in row):
        row = release_row(TASK_BY_NAME[path.stem], row, where)
    out = dict(row)
    for name in ("sample_id", "question"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise ValueError(f"{where}: {name}: missing or not a string")
    if row["sample_id"] in seen:
        raise ValueError(f"{where}: sample_id: {row['sample_id']!r} twice")
    seen.add(row["sample_id"])
    image = row.get("image")
    if isinstance(image, Mapping):  # a Hugging Face image column in Parquet: bytes + path
        image = image.get("bytes") or image.get("path")
    if isinstance(image, bytes):
        out["image"] = image  # decoded (PNG / JPEG only, size-checked) when asked
    elif image is not None:
        if not isinstance(image, str):
            raise ValueError(f"{where}: image: a path relative to {path.parent} expected")
        try:
            full = path_under_root(str(path.parent / image), str(path.parent), "image")
        except MediaError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not Path(full).is_file():
            raise ValueError(f"{where}: image: no file at {full}")
        out["image"] = str(Path(full).resolve())
    return out


def read_task_files(folder: str | Path) -> dict[str, list[dict]]:
    """``{task: rows}`` of every task file in ``folder`` (image paths made absolute).

    A file that names no task, a task given twice, a row without ``sample_id`` or
    ``question``, a repeated id or an image outside the folder is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"safety.tasks: {folder} is not a folder")
    tasks: dict[str, list[dict]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in SUFFIXES:
            continue
        if path.stem not in TASK_BY_NAME:
            known = ", ".join(TASK_BY_NAME)
            raise ValueError(f"safety.tasks: {path.name}: not a SafetyBench task ({known})")
        if path.stem in tasks:
            raise ValueError(f"safety.tasks: {path.stem}: given twice (.jsonl and .parquet)")
        seen: set[str] = set()
        rows = [_check_row(path, n, r, seen) for n, r in enumerate(read_rows(path), start=1)]
        tasks[path.stem] = rows
    if not tasks:
        raise ValueError(f"safety.tasks: {folder}: no task files (<Task>.jsonl|.parquet)")
    return tasks


def query_id(task: str, sample_id: str) -> str:
    """The generation key of one task sample (ids are unique within a task only)."""
    return f"{task}/{sample_id}"


def generation_queries(tasks: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """One generation row per task sample: ``sample_id`` (``query_id``), ``question`` and
    the image when the sample has one (``image_path``, or ``image`` bytes)."""
    out = []
    for task, rows in tasks.items():
        for r in rows:
            row = {"sample_id": query_id(task, r["sample_id"]), "question": r["question"]}
            if r.get("image"):
                row["image" if isinstance(r["image"], bytes) else "image_path"] = r["image"]
            out.append(row)
    return out


def with_answers(
    tasks: Mapping[str, Sequence[Mapping]], answers: Mapping[str, str]
) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """(``{task: rows with "response"}``, ``{task: samples without an answer}``): a sample
    the generator quarantined has no answer; it is counted, never scored as anything."""
    answered: dict[str, list[dict]] = {}
    missing: dict[str, int] = {}
    for task, rows in tasks.items():
        for r in rows:
            key = query_id(task, r["sample_id"])
            if key in answers:
                answered.setdefault(task, []).append(dict(r) | {"response": answers[key]})
            else:
                missing[task] = missing.get(task, 0) + 1
    return answered, missing


def read_responses(path: str) -> dict[str, list[dict]]:
    """SafetyBench answers made elsewhere, by task (Parquet or JSONL, one row per sample:
    ``task``, ``sample_id``, ``response`` and the task's judge fields)."""
    by_task: dict[str, list[dict]] = {}
    for n, row in enumerate(read_rows(path), start=1):
        if not row.get("task"):
            raise ValueError(f"{path}: row {n}: task: missing")
        by_task.setdefault(str(row["task"]), []).append(row)
    return by_task


def task_items(
    policy: str, task: SafetyTask, samples: Sequence[Mapping], verdicts: Sequence[Verdict]
) -> list[dict]:
    """Per-item rows of one policy on one task: metric = the task's kind (asr, rta,
    nsfw_asr, ratio), value = the sample's 0/1 score, cluster = its ``cluster`` field."""
    out = []
    for s, v in zip(samples, verdicts, strict=True):
        cluster = s.get("cluster")
        out += item_rows(
            BENCHMARK_PREFIX + task.name,
            policy,
            v.sample_id,
            {task.kind: sample_score(task, v)},
            None if cluster is None else str(cluster),
        )
    return out


AVERAGES = BENCHMARK_PREFIX + "averages"  # the benchmark of the Table 9 averages' comparisons


def average_comparisons(
    items: Sequence[Mapping], columns: Sequence[str], resamples: int = 2000
) -> dict[str, PairedDiff]:
    """Table 9's Unsafety / Safety of each policy against the one before it, paired on the
    samples both answered (``safetybench.paired_mean_of_rates``), for the averages whose
    every task both policies have per-item rows of. Keys ``"safetybench/averages|a → b|
    unsafety"`` (as ``outcomes.summarize`` takes extra comparisons, Holm with the rest)."""
    from mmrlhf_ray.evaluation.outcomes import ARROW, consecutive
    from mmrlhf_ray.evaluation.safetybench import TASKS, paired_mean_of_rates

    scores: dict[tuple[str, str], dict[str, float]] = {}  # (policy, task) -> {item: score}
    for r in items:
        if r["benchmark"].startswith(BENCHMARK_PREFIX):
            task = r["benchmark"][len(BENCHMARK_PREFIX) :]
            scores.setdefault((r["policy"], task), {})[r["item_id"]] = r["value"]
    out: dict[str, PairedDiff] = {}
    for before, after in consecutive(list(columns)):
        for name, lower in (("unsafety", True), ("safety", False)):
            tasks = [t.name for t in TASKS if t.lower_is_better == lower]
            pairs = [(scores.get((before, t)), scores.get((after, t))) for t in tasks]
            if any(b is None or a is None for b, a in pairs):
                continue
            common = [sorted(set(b) & set(a)) for b, a in pairs]
            if any(not ids for ids in common):
                continue
            b_vals = [[b[i] for i in ids] for (b, _), ids in zip(pairs, common, strict=True)]
            a_vals = [[a[i] for i in ids] for (_, a), ids in zip(pairs, common, strict=True)]
            key = f"{AVERAGES}|{before}{ARROW}{after}|{name}"
            out[key] = paired_mean_of_rates(b_vals, a_vals, resamples)
    return out
