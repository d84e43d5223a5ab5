"""Annotation tasks: one query, its question, media and K responses, from a run's stage.

Two inputs are understood:

* the ``generate`` stage (one row per sampled response): responses are joined per query
  in the same order the ``annotate`` stage uses (``annotation.group_generated``), media
  come from the stage generate read (``curate`` by default), by ``sample_id``;
* a records stage (``RECORD_SCHEMA``, e.g. ``import/records`` or ``toyworld/records``):
  its responses are re-annotated (labels and constructed responses are dropped).

A task is JSON-serialisable; the media bytes travel beside it (``{"image": bytes,
"frames": [bytes]}``), read from the row or from ``image_path`` / ``video_path`` (a
folder of frames) when those are local files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as pads

from mmrlhf_ray.annotate.records import group_generated
from mmrlhf_ray.annotate_app.labels import Labels, ResponseLabel
from mmrlhf_ray.core.stage import StageDir, require_done
from mmrlhf_ray.data.schemas import MEDIA_KEYS

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_FRAMES = 64


def task_from_parts(query: dict[str, Any], responses: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON task of one query (``query``: pool/record columns; ``responses``: dicts
    with response_id, model, text)."""
    qid = query.get("query_id") or query.get("sample_id")
    return {
        "query_id": qid,
        "question": query["question"],
        "category": query.get("category") or query.get("category_hint"),
        "source": query.get("source"),
        "reference_answer": query.get("reference_answer"),
        "ground_truth": query.get("ground_truth"),
        "image_path": query.get("image_path"),
        "video_path": query.get("video_path"),
        "responses": [
            {
                "response_id": r.get("response_id") or f"{qid}#r{i}",
                "model": r.get("model"),
                "text": r["text"],
            }
            for i, r in enumerate(responses)
        ],
    }


def read_media(row: dict[str, Any]) -> dict[str, Any]:
    """{"image": bytes | None, "frames": [bytes]} from the row's bytes or local paths."""
    image = row.get("image")
    if image is None and row.get("image_path") and Path(row["image_path"]).is_file():
        image = Path(row["image_path"]).read_bytes()
    frames = list(row.get("video_frames") or [])
    folder = row.get("video_path")
    if not frames and folder and Path(folder).is_dir():
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        frames = [p.read_bytes() for p in files[:MAX_FRAMES]]
    return {"image": image, "frames": frames[:MAX_FRAMES]}


def _media_by_id(run_dir: str, stage: str, ids: list[str]) -> dict[str, dict]:
    src = StageDir(run_dir, stage)
    if not ids or not src.part_paths():
        return {}
    dataset = pads.dataset(src.part_paths(), filesystem=src.fs, format="parquet")
    columns = ["sample_id", *[c for c in MEDIA_KEYS if c in dataset.schema.names]]
    table = dataset.to_table(columns=columns, filter=pads.field("sample_id").isin(ids))
    return {row["sample_id"]: row for row in table.to_pylist()}


def load_tasks(run_dir: str, stage: str) -> tuple[list[dict], dict[str, dict], list[dict]]:
    """(tasks, media by query id, problems) from ``stage`` of ``run_dir``, in id order.

    Problems are the generate rows ``group_generated`` refused (each names the row and
    field); the app shows their count and leaves them out.
    """
    src = require_done(run_dir, stage)
    table = src.read()
    if "responses" in table.column_names:
        return _from_records(table.to_pylist())
    groups, problems = group_generated(table.to_pylist())
    media_stage = ((src.read_manifest() or {}).get("config") or {}).get("input_stage") or "curate"
    media_rows = _media_by_id(run_dir, media_stage, sorted(groups))
    tasks, media = [], {}
    for qid in sorted(groups):
        pool = {**groups[qid].pool_row, **(media_rows.get(qid) or {})}
        tasks.append(task_from_parts(pool, groups[qid].responses))
        media[qid] = read_media(pool)
    return tasks, media, problems


def _from_records(records: list[dict]) -> tuple[list[dict], dict[str, dict], list[dict]]:
    tasks, media = [], {}
    for record in sorted(records, key=lambda r: r["query_id"]):
        originals = [r for r in record["responses"] if not r.get("constructed")]
        tasks.append(task_from_parts(record, originals))
        media[record["query_id"]] = read_media(record)
    return tasks, media, []


def gold_labels(record: dict[str, Any], task: dict[str, Any]) -> Labels:
    """Gold labels for ``task`` from a labelled record (e.g. a ``data.jsonl`` line read
    with ``release.parse_data_line``); its responses must be the task's, in order."""
    originals = [r for r in record["responses"] if not r.get("constructed")]
    texts = [r["text"] for r in task["responses"]]
    if [r["text"] for r in originals] != texts:
        raise ValueError(
            f"gold {record['query_id']}: models_output differ from the task's "
            "responses (same texts, same order needed)"
        )
    responses = []
    for i, r in enumerate(originals):
        missing = [k for k in ("helpfulness", "faithfulness", "ethics", "rank") if r.get(k) is None]
        if missing:
            raise ValueError(f"gold {record['query_id']}: response {i + 1} {missing[0]} missing")
        responses.append(
            ResponseLabel(
                r["helpfulness"],
                r["faithfulness"],
                r["ethics"],
                r["rank"],
                r.get("score_reason") or "",
            )
        )
    return Labels(responses, record.get("ranking_reason") or "")
