"""Final labels -> the ``annotate`` stage's records and the official ``data.jsonl``.

Only final queries are exported (agreed, adjudicated, gold); pending and disputed ones
are counted as left out (``rows_unselected`` in the manifest), never dropped silently.
A record is a ``RECORD_SCHEMA`` row: the task's responses with the final scores, ranks
and reasons (``score_reason``, which ``expand`` turns into critiques); under the tie
rule the constructed response is appended with ``rank`` null and ``constructed`` set,
which ``pairs`` places above (positive) or below (negative) every original.

In ``data.jsonl`` every rank must be an integer, so there the constructed response gets
one: rank 1 with the tied originals moved to 2 (positive), or rank 2 (negative).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from mmrlhf_ray.annotate_app.labels import Labels
from mmrlhf_ray.annotate_app.review import STATUSES, review_query
from mmrlhf_ray.annotate_app.store import Store
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.release import record_to_data_line
from mmrlhf_ray.data.schemas import to_table, validate_row

RECORDS_PER_PART = 500


def record_from_labels(task: dict[str, Any], labels: Labels, media: dict[str, Any]) -> dict:
    """A ``RECORD_SCHEMA`` row from a task, its final labels and its media bytes
    (bytes are kept only when the task has no path to point at)."""
    qid = task["query_id"]
    responses = [
        {
            "response_id": resp["response_id"],
            "model": resp.get("model"),
            "text": resp["text"],
            "helpfulness": lab.helpfulness,
            "faithfulness": lab.faithfulness,
            "ethics": lab.ethics,
            "rank": lab.rank,
            "score_reason": lab.reason or None,
            "critique": None,
            "constructed": None,
        }
        for resp, lab in zip(task["responses"], labels.responses, strict=True)
    ]
    if labels.constructed_text:
        responses.append(
            {
                "response_id": f"{qid}#constructed-{labels.constructed_kind}",
                "model": "annotator",
                "text": labels.constructed_text,
                "helpfulness": None,
                "faithfulness": None,
                "ethics": None,
                "rank": None,
                "score_reason": None,
                "critique": None,
                "constructed": labels.constructed_kind,
            }
        )
    record = {
        "query_id": qid,
        "source": task.get("source") or "annotate-app",
        "question": task["question"],
        "image": None if task.get("image_path") else media.get("image"),
        "image_path": task.get("image_path"),
        "video_frames": None if task.get("video_path") else (media.get("frames") or None),
        "video_path": task.get("video_path"),
        "reference_answer": task.get("reference_answer"),
        "category": task.get("category"),
        "responses": responses,
        "ranking_reason": labels.ranking_reason or None,
        "is_tie": labels.is_tie,
        "ground_truth": task.get("ground_truth"),
    }
    problems = validate_row(record, "record")
    if problems:
        raise ValueError(f"query {qid}: {problems[0]}")
    return record


def data_line(record: dict) -> dict:
    """An official ``data.jsonl`` object for a record (constructed response ranked)."""
    responses = [dict(r) for r in record["responses"]]
    for r in responses:
        if r.get("constructed") == "positive" and r.get("rank") is None:
            for other in responses:
                other["rank"] = 2 if other is not r else 1
        elif r.get("constructed") == "negative" and r.get("rank") is None:
            r["rank"] = 1 + max(o["rank"] or 0 for o in responses if o is not r)
    return record_to_data_line({**record, "responses": responses})


def final_records(store: Store, raters_per_query: int, max_score_gap: int):
    """(records in query order, {status: count}) of every final query in the store."""
    counts = dict.fromkeys(STATUSES, 0)
    records = []
    for q in store.queries():
        review = review_query(q, raters_per_query, max_score_gap)
        counts[review.status] += 1
        if review.final is None:
            continue
        media = {"image": store.media(q.query_id, "image", 0), "frames": _frames(store, q)}
        records.append(record_from_labels(q.task, review.final, media))
    return records, counts


def _frames(store: Store, q) -> list[bytes]:
    rows = store.read(
        "SELECT data FROM media WHERE query_id = ? AND kind = 'frame' ORDER BY idx", (q.query_id,)
    )
    return [r["data"] for r in rows]


def export(
    store: Store,
    run_dir: str,
    stage: str,
    data_jsonl: str,
    raters_per_query: int,
    max_score_gap: int,
) -> dict[str, Any]:
    """Write the final records as ``<run_dir>/<stage>`` parts and ``data_jsonl`` (``""`` =
    ``<run_dir>/annotate-app/data.jsonl``).

    The stage's config hash includes a fingerprint of the labels, so a re-export after
    new labels re-makes the stage (and ``pairs`` sees its input changed). Returns a
    summary: records written, counts by status, paths.
    """
    data_jsonl = data_jsonl or os.path.join(run_dir, "annotate-app", "data.jsonl")
    records, counts = final_records(store, raters_per_query, max_score_gap)
    lines = [json.dumps(data_line(r), sort_keys=True) for r in records]
    fingerprint = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    out = StageDir(run_dir, stage)
    config = {
        "source": "annotate-app",
        "db": store.path,
        "raters_per_query": raters_per_query,
        "max_score_gap": max_score_gap,
        "labels_fingerprint": fingerprint,
    }
    summary = {
        "records": len(records),
        "counts": counts,
        "stage": out.root,
        "data_jsonl": data_jsonl,
    }
    if out.skip_if_done(config):
        return {**summary, "unchanged": True}
    out.begin(config)
    for start in range(0, max(len(records), 1), RECORDS_PER_PART):
        part = to_table(records[start : start + RECORDS_PER_PART], "record")
        out.write_part(f"part-{start // RECORDS_PER_PART:05d}", part)
    tmp = f"{data_jsonl}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, data_jsonl)
    total = sum(counts.values())
    out.finish(total, len(records), 0, rows_unselected=total - len(records), annotate_app=counts)
    return {**summary, "unchanged": False}
