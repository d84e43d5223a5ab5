"""The MM-RLHF data model as Arrow schemas, with row validation.

Three tables flow through the pipeline:

* ``POOL_SCHEMA``: one candidate query of the raw pool (paper Sec. 2.2), before
  curation. Media are either bytes (``image``, ``video_frames``) or paths
  (``image_path``, ``video_path`` = folder of frames); at least one must be present
  unless the query is text-only.
* ``RECORD_SCHEMA``: an annotated MM-RLHF record (one query, K ranked responses).
  ``rank`` 1 is best; equal ranks are ties. ``constructed`` marks responses the
  annotator added under the paper's tie rule ("positive" / "negative").
* ``PAIR_SCHEMA``: one preference pair of differing rank (paper Sec. 4.2). Later
  stages fill ``*_critique``, ``margin`` (reward margin delta) and the reference
  log-probs; they are null until then.

``validate_row(row, schema_name)`` returns a list of problems, each naming the field,
so readers can quarantine a row with a precise reason instead of dropping it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

CATEGORIES = ("long", "short", "mcq", "safety", "video")
MEDIA_FIELDS = [
    pa.field("image", pa.binary()),  # encoded image bytes (PNG/JPEG)
    pa.field("image_path", pa.string()),  # or a path/URI to the image
    pa.field("video_frames", pa.list_(pa.binary())),  # encoded frames of a short video
    pa.field("video_path", pa.string()),  # or a folder of frames
]
MEDIA_KEYS = tuple(f.name for f in MEDIA_FIELDS)  # image, image_path, video_frames, video_path

POOL_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),  # dataset the query came from
        pa.field("question", pa.string(), nullable=False),
        *MEDIA_FIELDS,
        pa.field("reference_answer", pa.string()),  # reply of a strong model / ground truth
        pa.field("category_hint", pa.string()),  # "safety"/"video" domain when known
        pa.field("ground_truth", pa.string()),  # JSON scene graph (shapes world only)
    ]
)

RESPONSE_TYPE = pa.struct(
    [
        pa.field("response_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("text", pa.string()),
        pa.field("helpfulness", pa.int8()),  # 1-5, Appendix B rubric
        pa.field("faithfulness", pa.int8()),
        pa.field("ethics", pa.int8()),
        pa.field("rank", pa.int16()),  # 1 = best; equal ranks are ties
        pa.field("score_reason", pa.string()),  # the annotator's short reason
        pa.field("critique", pa.string()),  # expanded critique (Table 7), null until expanded
        pa.field("constructed", pa.string()),  # null | "positive" | "negative" (tie rule)
    ]
)

RECORD_SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("question", pa.string(), nullable=False),
        *MEDIA_FIELDS,
        pa.field("reference_answer", pa.string()),
        pa.field("category", pa.string(), nullable=False),
        pa.field("responses", pa.list_(RESPONSE_TYPE), nullable=False),
        pa.field("ranking_reason", pa.string()),
        pa.field("is_tie", pa.bool_()),  # the original responses were all tied
        pa.field("ground_truth", pa.string()),
    ]
)

PAIR_SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        *MEDIA_FIELDS,
        pa.field("category", pa.string()),
        pa.field("chosen_id", pa.string()),
        pa.field("rejected_id", pa.string()),
        pa.field("chosen", pa.string(), nullable=False),
        pa.field("rejected", pa.string(), nullable=False),
        pa.field("chosen_rank", pa.int16()),
        pa.field("rejected_rank", pa.int16()),
        pa.field("chosen_reason", pa.string()),
        pa.field("rejected_reason", pa.string()),
        pa.field("chosen_critique", pa.string()),
        pa.field("rejected_critique", pa.string()),
        pa.field("is_tie", pa.bool_()),
        pa.field("margin", pa.float32()),  # reward margin delta = r(chosen) - r(rejected)
        pa.field(
            "margin_source", pa.string()
        ),  # "reward-service" | "reward-offline" | "oracle" | "release"
        pa.field("ref_chosen_logp", pa.float32()),
        pa.field("ref_rejected_logp", pa.float32()),
    ]
)

SCHEMAS = {"pool": POOL_SCHEMA, "record": RECORD_SCHEMA, "pair": PAIR_SCHEMA}
_ID_FIELD = {"pool": "sample_id", "record": "query_id", "pair": "pair_id"}


def _check_media(row: dict[str, Any], problems: list[str]) -> None:
    for name in ("image", "image_path", "video_path"):  # video_frames: below
        value = row.get(name)
        if value is not None and not isinstance(value, (bytes, str)):
            problems.append(f"{name}: expected bytes or string, got {type(value).__name__}")
    frames = row.get("video_frames")
    if frames is not None and (
        not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames)
    ):
        problems.append("video_frames: expected a list of encoded frames (bytes)")


def _check_responses(responses: Any, problems: list[str]) -> None:
    if not isinstance(responses, list) or not responses:
        problems.append("responses: expected a non-empty list")
        return
    for i, resp in enumerate(responses):
        if not isinstance(resp, dict):
            problems.append(f"responses[{i}]: expected a mapping")
            continue
        if not isinstance(resp.get("text"), str):
            problems.append(f"responses[{i}].text: missing or not a string")
        for dim in ("helpfulness", "faithfulness", "ethics"):
            score = resp.get(dim)
            if score is not None and not (isinstance(score, int) and 0 <= score <= 5):
                problems.append(
                    f"responses[{i}].{dim}: expected an integer score 0-5, got {score!r}"
                )
        rank = resp.get("rank")
        if rank is not None and not (isinstance(rank, int) and rank >= 1):
            problems.append(f"responses[{i}].rank: expected an integer >= 1, got {rank!r}")
        constructed = resp.get("constructed")
        if constructed not in (None, "positive", "negative"):
            problems.append(f"responses[{i}].constructed: must be null, 'positive' or 'negative'")


def validate_row(row: dict[str, Any], kind: str) -> list[str]:
    """Problems with ``row`` as a ``kind`` ("pool", "record", "pair") row; [] if valid.

    Each problem starts with the field name, e.g. ``"question: missing or empty"``.
    """
    schema = SCHEMAS[kind]
    problems: list[str] = []
    for field in schema:
        value = row.get(field.name)
        if not field.nullable and (value is None or value == ""):
            problems.append(f"{field.name}: missing or empty")
        elif pa.types.is_string(field.type) and value is not None and not isinstance(value, str):
            problems.append(f"{field.name}: expected a string, got {type(value).__name__}")
    _check_media(row, problems)
    if kind in ("record", "pair"):
        category = row.get("category")
        if category is not None and category not in CATEGORIES:
            problems.append(f"category: {category!r} is not one of {', '.join(CATEGORIES)}")
    if kind == "record":
        _check_responses(row.get("responses"), problems)
    if kind == "pair":
        margin = row.get("margin")
        if margin is not None and not isinstance(margin, (int, float)):
            problems.append(f"margin: expected a number, got {type(margin).__name__}")
    return problems


def row_id(row: dict[str, Any], kind: str) -> str:
    return str(row.get(_ID_FIELD[kind]))


def to_table(rows: list[dict[str, Any]], kind: str) -> pa.Table:
    """Rows (dicts) to a table of the kind's schema; missing columns become null."""
    schema = SCHEMAS[kind]
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)
