"""Annotation tasks: one query, its question, media and K responses, from a run's stage.

Two inputs are understood:

* the ``generate`` stage (one row per sampled response): responses are joined per query
  in the same order the ``annotate`` stage uses (``annotation.group_generated``), media
  come from the stage generate read (``curate`` by default), by ``sample_id``;
* a records stage (``RECORD_SCHEMA``, e.g. ``import/records`` or ``toyworld/records``):
  its responses are re-annotated (labels and constructed responses are dropped).

A task is JSON-serialisable; the media bytes travel beside it (``{"image": bytes,
"frames": [bytes]}``), read from the row or from ``image_path`` / ``video_path`` (a
folder of frames) when those are local files. Every image is checked before it is stored
and shown to raters: at most ``MAX_MEDIA_BYTES`` and a PNG or JPEG by its headers; a
query whose media fail is left out as a problem naming the query and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as pads

from mmrlhf_ray.annotate.records import group_generated
from mmrlhf_ray.annotate_app.labels import Labels, ResponseLabel
from mmrlhf_ray.core.stage import StageDir, require_done
from mmrlhf_ray.data.media import MediaError, checked_media_bytes, image_size
from mmrlhf_ray.data.schemas import MEDIA_KEYS

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_FRAMES = 64
MAX_MEDIA_BYTES = 16 << 20


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


def _checked(data: bytes, field: str) -> bytes:
    if len(data) > MAX_MEDIA_BYTES:
        raise MediaError(field, f"{len(data)} bytes, over {MAX_MEDIA_BYTES}")
    image_size(data, field)  # a PNG or JPEG within the pixel cap, by its headers
    return data


def read_media(row: dict[str, Any]) -> dict[str, Any]:
    """{"image": bytes | None, "frames": [bytes]} from the row's bytes or local paths,
    each checked (size, PNG/JPEG headers); ``MediaError`` names the field otherwise."""
    image = row.get("image")
    if image is not None:
        image = _checked(image, "image")
    elif row.get("image_path") and Path(row["image_path"]).is_file():
        image = checked_media_bytes(row["image_path"], "image_path", MAX_MEDIA_BYTES)
    frames = [
        _checked(f, f"video_frames[{i}]") for i, f in enumerate(row.get("video_frames") or [])
    ]
    folder = row.get("video_path")
    if not frames and folder and Path(folder).is_dir():
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        frames = [checked_media_bytes(p, "video_path", MAX_MEDIA_BYTES) for p in files[:MAX_FRAMES]]
    return {"image": image, "frames": frames[:MAX_FRAMES]}


def _media_or_problem(qid: str, row: dict[str, Any], problems: list[dict]) -> dict | None:
    try:
        return read_media(row)
    except MediaError as exc:
        problems.append({"query_id": qid, "field": exc.field, "reason": exc.reason})
        return None


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
        item = _media_or_problem(qid, pool, problems)
        if item is not None:
            tasks.append(task_from_parts(pool, groups[qid].responses))
            media[qid] = item
    return tasks, media, problems


def _from_records(records: list[dict]) -> tuple[list[dict], dict[str, dict], list[dict]]:
    tasks, media, problems = [], {}, []
    for record in sorted(records, key=lambda r: r["query_id"]):
        originals = [r for r in record["responses"] if not r.get("constructed")]
        item = _media_or_problem(record["query_id"], record, problems)
        if item is not None:
            tasks.append(task_from_parts(record, originals))
            media[record["query_id"]] = item
    return tasks, media, problems


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
