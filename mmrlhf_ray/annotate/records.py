"""Annotation, pure: generated responses -> annotated MM-RLHF records.

The ``annotate`` stage reads the ``generate`` stage's table (one row per sampled
response: the query's pool columns + ``category`` + ``model``, ``sample_index``,
``response``), joins the responses of each query, and labels them in one of two ways:

* ``oracle``: the shapes world's annotator ``toyworld.oracle_annotate(pool_row,
  responses, seed, tie_rule)`` scores helpfulness / faithfulness / ethics from the
  ground truth, ranks, writes reasons and applies the paper's tie rules;
* ``human``: labels written by people in the official ``data.jsonl`` format
  (``release.parse_data_line``), e.g. filled in from the tasks ``export_tasks`` wrote.

Bad rows never vanish: ``group_generated`` returns the problems it found, each naming
the row and field, for the stage to quarantine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.data.release import record_to_data_line
from mmrlhf_ray.data.schemas import MEDIA_KEYS, RESPONSE_TYPE, validate_row

POOL_COLUMNS = (
    "sample_id",
    "source",
    "question",
    *MEDIA_KEYS,
    "reference_answer",
    "category",
    "category_hint",
    "ground_truth",
)
_RESPONSE_FIELDS = [f.name for f in RESPONSE_TYPE]


@dataclass
class GeneratedQuery:
    """One query's pool columns and its generated responses, in a fixed order: the
    unit an annotator ranks (before there are pairs; pairs grouped per query are
    ``groups.QueryGroup``)."""

    pool_row: dict[str, Any]
    responses: list[dict[str, Any]]  # {response_id, model, sample_index, text, ...}
    row_count: int = 0  # generated rows that went into this group


def _problem(row: dict[str, Any], index: int, field_name: str, reason: str) -> dict[str, Any]:
    locator = f"row {index} sample_id={row.get('sample_id')!r} model={row.get('model')!r}"
    return quarantine_row("generate", locator, field_name, reason, row)


def _text(row: dict[str, Any]) -> Any:
    """The response text: ``text`` (generation.GENERATE_SCHEMA) or ``response``."""
    return row["text"] if "text" in row else row.get("response")


def _row_problem(row: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("sample_id", "question"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            return name, "missing, empty or not a string"
    text = _text(row)
    if not isinstance(text, str) or not text.strip() or row.get("is_empty"):
        return "text", "empty generation (no response text)"
    return None


def group_generated(
    rows: Iterable[dict[str, Any]],
) -> tuple[dict[str, GeneratedQuery], list[dict[str, Any]]]:
    """Join generated response rows by ``sample_id``.

    Returns ({sample_id: GeneratedQuery}, problems). A row with no sample id, question or
    response text (or flagged ``is_empty``) is a problem naming the field; truncated
    responses are kept (the annotator judges them). Responses are ordered by (model,
    sample_index) so ids and pairs do not depend on the order rows arrived in.
    """
    groups: dict[str, GeneratedQuery] = {}
    problems: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        bad = _row_problem(row)
        if bad:
            problems.append(_problem(row, index, *bad))
            continue
        sid = row["sample_id"]
        group = groups.get(sid)
        if group is None:
            pool_row = {k: row.get(k) for k in POOL_COLUMNS}
            group = groups[sid] = GeneratedQuery(pool_row, [])
        model = row.get("model") or "unknown"
        sample_index = int(row.get("sample_index") or 0)
        group.responses.append(
            {
                "response_id": row.get("response_id") or f"{sid}/{model}/{sample_index}",
                "model": model,
                "sample_index": sample_index,
                "text": _text(row),
            }
        )
        group.row_count += 1
    for group in groups.values():
        group.responses.sort(key=lambda r: (r["model"], r["sample_index"]))
    return groups, problems


def _response(raw: dict[str, Any]) -> dict[str, Any]:
    out = {name: raw.get(name) for name in _RESPONSE_FIELDS}
    if out["text"] is None:
        out["text"] = raw.get("response")
    return out


def record_from_oracle(group: GeneratedQuery, oracle_result: Any) -> dict[str, Any]:
    """A ``RECORD_SCHEMA`` row from a query group and what the oracle returned.

    The oracle may return a whole record (a dict with ``responses``) or just the
    annotated responses (a list of dicts); pool columns fill in what it leaves out.
    """
    pool = group.pool_row
    result = oracle_result if isinstance(oracle_result, dict) else {"responses": oracle_result}
    record = {
        "query_id": pool["sample_id"],
        "source": pool.get("source"),
        "question": pool["question"],
        "image": pool.get("image"),
        "image_path": pool.get("image_path"),
        "video_frames": pool.get("video_frames"),
        "video_path": pool.get("video_path"),
        "reference_answer": pool.get("reference_answer"),
        "category": pool.get("category") or pool.get("category_hint"),
        "ranking_reason": None,
        "is_tie": None,
        "ground_truth": pool.get("ground_truth"),
    }
    for key, value in result.items():
        if key != "responses" and key in record and value is not None:
            record[key] = value
    record["responses"] = [_response(r) for r in result["responses"]]
    return record


def annotate_group(
    group: GeneratedQuery, oracle: Callable[..., Any], seed: int, tie_rule: bool
) -> dict[str, Any]:
    """Call the oracle on one query's responses and return the validated record.

    Raises ``ValueError`` naming the field when the result is not a valid record.
    """
    result = oracle(group.pool_row, group.responses, seed=seed, tie_rule=tie_rule)
    record = record_from_oracle(group, result)
    problems = validate_row(record, "record")
    if problems:
        raise ValueError(problems[0])
    return record


def merge_media(record: dict[str, Any], group: GeneratedQuery | None) -> dict[str, Any]:
    """Fill a human-labelled record's media / ground truth from its generated query."""
    if group is None:
        return record
    pool = group.pool_row
    for key in ("image", "video_frames", "ground_truth", "source", "category"):
        if record.get(key) is None and pool.get(key) is not None:
            record[key] = pool[key]
    return record


def export_tasks(groups: Iterable[GeneratedQuery]) -> Iterable[dict[str, Any]]:
    """Annotation tasks for people: official ``data.jsonl`` objects with labels null.

    Annotators fill ``faithfulness, helpfulness, ethical, final_ranking, score_reasons,
    ranking_reason`` (lists in ``models_output`` order); ``annotate source=human``
    reads the filled file back.
    """
    for group in groups:
        pool = group.pool_row
        record = {
            "query_id": pool["sample_id"],
            "question": pool["question"],
            "reference_answer": pool.get("reference_answer"),
            "image_path": pool.get("image_path"),
            "video_path": pool.get("video_path"),
            "responses": group.responses,
        }
        task = record_to_data_line(record, with_labels=False)
        task["category"] = pool.get("category")
        yield task
