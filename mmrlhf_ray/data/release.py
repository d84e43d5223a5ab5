"""Readers and writers of the official MM-RLHF release files.

Users arrive holding three JSON-lines files (see ``docs/RELEASE.md``):

* ``data.jsonl``: one human-labelled query per line (``id, question, answer, image,
  video, models_output, faithfulness, helpfulness, ethical, final_ranking,
  score_reasons, ranking_reason``) -> ``RECORD_SCHEMA`` rows;
* ``dpo_pairs.jsonl``: one preference pair per line (``id, image|video, prompt,
  chosen, rejected, chosen_reason`` and optionally ``rejected_reason, is_tie,
  ls_factor, reference_chosen_logp, reference_rejected_logp``) -> ``PAIR_SCHEMA``;
* ``mm_reward_bench.jsonl``: RewardBench lines of the same shape, several per ``id``
  (one query, several pairs) -> ``PAIR_SCHEMA``.

Each ``parse_*_line`` turns one line into a row or raises ``ReleaseError`` naming the
field; ``read_release_file`` streams a file and yields ``(line_no, row, problem)`` so
a stage can quarantine every malformed line with file, line, field and reason.

Readings chosen for the release's unconfirmed fields (both readings are accepted):

* ``final_ranking`` / ``score_reasons``: a list in ``models_output`` order (the likely
  reading), or a dict keyed by model name (seen in the paper's UI) whose key order is
  taken as ``models_output`` order; keys that are all digits are output indices.
  Ranks are per output (1 = best; equal ranks are ties); 0-based lists are shifted.
* ``answer``: the reference answer.
* Scores: integers 0-5; integral floats and numeric strings are accepted, other values
  quarantine the line (the schema stores int8).
* ``ls_factor`` (when present) -> ``margin`` with ``margin_source="release"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.data.media import MediaError, path_under_root
from mmrlhf_ray.data.schemas import CATEGORIES, MEDIA_KEYS, validate_row

SCORE_FIELDS = {"helpfulness": "helpfulness", "faithfulness": "faithfulness", "ethical": "ethics"}
KINDS = ("data", "dpo_pairs", "reward_bench", "pool")
MAX_LINE_BYTES = 8 << 20  # a longer line is quarantined unread (its start kept as raw)
RAW_CHARS = 4096  # how much of an over-long line the quarantine keeps


class ReleaseError(ValueError):
    """One line of a release file is malformed; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# ---- small field helpers ---------------------------------------------------------------
def _string(obj: dict, name: str, required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None or (required and value == ""):
        if required:
            raise ReleaseError(name, "missing or empty")
        return None
    if not isinstance(value, str):
        raise ReleaseError(name, f"expected a string, got {type(value).__name__}")
    return value


def _score(value: Any, name: str) -> int | None:
    """An integer 0-5 from an int, an integral float or a numeric string (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.isascii():  # float() reads "٣" and "５" as numbers: refuse, name it
            raise ReleaseError(name, f"not a number: {value!r}")
        try:
            value = float(value.strip())
        except ValueError as exc:
            raise ReleaseError(name, f"not a number: {value!r}") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReleaseError(name, f"expected a number, got {type(value).__name__}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise ReleaseError(name, f"expected an integer score, got {value!r}")
    if not 0 <= int(value) <= 5:
        raise ReleaseError(name, f"score {value!r} outside 0-5")
    return int(value)


def _float(obj: dict, name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReleaseError(name, f"expected a finite number, got {value!r}")
    return float(value)


def _bool(obj: dict, name: str) -> bool | None:
    value = obj.get(name)
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ReleaseError(name, f"expected a boolean, got {value!r}")


def category_from_path(path: str | None, default: str = "") -> str:
    """The category named by a release media path: its top folder, else any folder.

    ``"mcq/cauldron_x.png"`` -> ``"mcq"``; ``"data/video/clip_3"`` -> ``"video"``.
    Raises ``ReleaseError`` (field ``image``) when no folder names a category and no
    ``default`` is given.
    """
    parts = [p.lower() for p in PurePosixPath((path or "").replace("\\", "/")).parts]
    for part in parts[:-1] or parts:
        if part in CATEGORIES:
            return part
    if default:
        return default
    raise ReleaseError("image", f"no category ({', '.join(CATEGORIES)}) in path {path!r}")


def _media(
    obj: dict, media_root: str, default_category: str, known: dict | None = None
) -> dict[str, Any]:
    """image_path / video_path (joined to ``media_root``) and the category they name.

    ``known``: our own row for this id (e.g. the generated query a human label refers
    to); its media and category stand in when the line names no image or video.
    """
    image = _string(obj, "image")
    video = _string(obj, "video")
    if not image and not video:
        if known and known.get("category"):
            return {k: known.get(k) for k in (*MEDIA_KEYS, "category")}
        raise ReleaseError("image", "neither image nor video given")

    if video:
        try:
            category = category_from_path(video)
        except ReleaseError:
            category = "video"  # video rows: the folder of frames is the video
    else:
        category = category_from_path(image, default_category)
    return {
        "image_path": _join(image, media_root),
        "video_path": _join(video, media_root),
        "category": category,
    }


def _join(path: str | None, media_root: str) -> str | None:
    """A release media path under ``media_root`` (absolute paths and URIs stay)."""
    if not path or not media_root or path.startswith("/") or "://" in path:
        return path or None
    return f"{media_root.rstrip('/')}/{path}"


def _per_output(value: Any, name: str, n: int) -> tuple[list[Any], list[str] | None]:
    """A per-output list from a list (output order) or a dict (model name -> value).

    Returns (values, model names or None). Dict keys that are all digits index outputs.
    """
    if isinstance(value, list):
        if len(value) != n:
            raise ReleaseError(name, f"has {len(value)} entries for {n} models_output")
        return value, None
    if isinstance(value, dict):
        if len(value) != n:
            raise ReleaseError(name, f"has {len(value)} keys for {n} models_output")
        keys = list(value)
        if all(str(k).isdigit() for k in keys):
            idx = sorted(int(k) for k in keys)
            if idx not in (list(range(n)), list(range(1, n + 1))):
                raise ReleaseError(name, f"index keys {keys} do not cover {n} outputs")
            return [value[str(i)] for i in idx], None
        return [value[k] for k in keys], [str(k) for k in keys]
    raise ReleaseError(name, f"expected a list or a dict, got {type(value).__name__}")


def _ranks(value: Any, n: int) -> tuple[list[int], list[str] | None]:
    raw, names = _per_output(value, "final_ranking", n)
    ranks = []
    for r in raw:
        if isinstance(r, str) and r.strip().isascii() and r.strip().isdigit():
            r = int(r)  # ASCII digits only: "²" passes isdigit() and then fails int()
        if isinstance(r, float) and r.is_integer():
            r = int(r)
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ReleaseError("final_ranking", f"expected non-negative integer ranks, got {r!r}")
        ranks.append(r)
    if 0 in ranks:  # 0-based ranking
        ranks = [r + 1 for r in ranks]
    return ranks, names


# ---- data.jsonl -> RECORD_SCHEMA -------------------------------------------------------
def _responses(obj: dict, qid: str) -> list[dict[str, Any]]:
    """The ``RESPONSE_TYPE`` list of a data.jsonl object, in ``models_output`` order."""
    outputs = obj.get("models_output")
    if not isinstance(outputs, list) or not outputs:
        raise ReleaseError("models_output", "expected a non-empty list of responses")
    for i, text in enumerate(outputs):
        if not isinstance(text, str) or not text.strip():
            raise ReleaseError(f"models_output[{i}]", "missing, empty or not a string")
    n = len(outputs)
    if obj.get("final_ranking") is None:
        raise ReleaseError("final_ranking", "missing")
    ranks, names = _ranks(obj["final_ranking"], n)
    scores = {}
    for src, dst in SCORE_FIELDS.items():
        values = obj[src] if obj.get(src) is not None else [None] * n
        values, _ = _per_output(values, src, n)
        scores[dst] = [_score(v, f"{src}[{i}]") for i, v in enumerate(values)]
    reasons: list[Any] = [None] * n
    if obj.get("score_reasons") is not None:
        reasons, reason_names = _per_output(obj["score_reasons"], "score_reasons", n)
        names = names or reason_names
        for i, r in enumerate(reasons):
            if r is not None and not isinstance(r, str):
                raise ReleaseError(
                    f"score_reasons[{i}]", f"expected a string, got {type(r).__name__}"
                )
    models = obj.get("models")  # our extensions (record_to_data_line writes them)
    if names is None and isinstance(models, list) and len(models) == n:
        names = [m if isinstance(m, str) else None for m in models]
    constructed = obj.get("constructed") or [None] * n
    constructed, _ = _per_output(constructed, "constructed", n)
    for i, kind in enumerate(constructed):
        if kind not in (None, "positive", "negative"):
            raise ReleaseError(f"constructed[{i}]", f"must be null, positive or negative: {kind!r}")
    return [
        {
            "response_id": f"{qid}#r{i}",
            "model": names[i] if names else None,
            "text": outputs[i],
            **{dim: scores[dim][i] for dim in scores},
            "rank": ranks[i],
            "score_reason": reasons[i],
            "critique": None,
            "constructed": constructed[i],
        }
        for i in range(n)
    ]


def parse_data_line(
    obj: Any, media_root: str = "", default_category: str = "", known: dict[str, dict] | None = None
) -> dict:
    """One ``data.jsonl`` object -> a ``RECORD_SCHEMA`` row (raises ``ReleaseError``).

    ``known`` maps ids to rows we already hold (generated queries): their media and
    category fill in for lines without an image or video path.
    """
    if not isinstance(obj, dict):
        raise ReleaseError("line", f"expected a JSON object, got {type(obj).__name__}")
    qid = _string(obj, "id", required=True)
    responses = _responses(obj, qid)
    ranks = [r["rank"] for r in responses]
    row = {
        "query_id": qid,
        "source": "mm-rlhf-release",
        "question": _string(obj, "question", required=True),
        **_media(obj, media_root, default_category, (known or {}).get(qid)),
        "reference_answer": _string(obj, "answer"),
        "responses": responses,
        "ranking_reason": _string(obj, "ranking_reason"),
        "is_tie": len(ranks) > 1 and len(set(ranks)) == 1,
    }
    _raise_on_schema(row, "record")
    return row


# ---- dpo_pairs.jsonl / mm_reward_bench.jsonl -> PAIR_SCHEMA ----------------------------
def parse_pair_line(
    obj: Any, occurrence: int = 0, media_root: str = "", default_category: str = ""
) -> dict:
    """One ``dpo_pairs.jsonl`` / ``mm_reward_bench.jsonl`` object -> a ``PAIR_SCHEMA`` row.

    ``occurrence`` is how many earlier lines shared this ``id``: the pair id is
    ``"<id>#<occurrence>"``, deterministic for a given file.
    """
    if not isinstance(obj, dict):
        raise ReleaseError("line", f"expected a JSON object, got {type(obj).__name__}")
    qid = _string(obj, "id", required=True)
    chosen = _string(obj, "chosen", required=True)
    rejected = _string(obj, "rejected", required=True)
    if chosen.strip() == rejected.strip():
        raise ReleaseError("rejected", "identical to chosen (no preference to learn)")
    margin = _float(obj, "ls_factor")
    row = {
        "pair_id": f"{qid}#{occurrence}",
        "query_id": qid,
        "question": _string(obj, "prompt", required=True),
        **_media(obj, media_root, default_category),
        "chosen_id": f"{qid}#{occurrence}:chosen",
        "rejected_id": f"{qid}#{occurrence}:rejected",
        "chosen": chosen,
        "rejected": rejected,
        "chosen_reason": _string(obj, "chosen_reason"),
        "rejected_reason": _string(obj, "rejected_reason"),
        "is_tie": _bool(obj, "is_tie"),
        "margin": margin,
        "margin_source": "release" if margin is not None else None,
        "ref_chosen_logp": _float(obj, "reference_chosen_logp"),
        "ref_rejected_logp": _float(obj, "reference_rejected_logp"),
    }
    _raise_on_schema(row, "pair")
    return row


# ---- a raw pool (the user's 10M candidate queries) -> POOL_SCHEMA ----------------------
def parse_pool_line(obj: Any, media_root: str = "") -> dict:
    """One pool line ``{id, question, image | video, source?, answer?, category_hint?}``
    -> a ``POOL_SCHEMA`` row (raises ``ReleaseError``). Media paths are joined to
    ``media_root``; a missing ``category_hint`` is taken from a category folder in the
    path (the release's layout, e.g. ``safety/x.png``), else left for curate to decide."""
    if not isinstance(obj, dict):
        raise ReleaseError("line", f"expected a JSON object, got {type(obj).__name__}")
    image, video = _string(obj, "image"), _string(obj, "video")
    if not image and not video:
        raise ReleaseError("image", "neither image nor video given")
    hint = _string(obj, "category_hint")
    if hint is not None and hint not in CATEGORIES:
        raise ReleaseError("category_hint", f"{hint!r} is not one of {', '.join(CATEGORIES)}")
    if hint is None:
        try:
            hint = category_from_path(video or image)
        except ReleaseError:
            hint = None  # no category folder: curate decides from the row
    row = {
        "sample_id": _string(obj, "id", required=True),
        "source": _string(obj, "source") or "pool",
        "question": _string(obj, "question", required=True),
        "image_path": _join(image, media_root),
        "video_path": _join(video, media_root),
        "reference_answer": _string(obj, "answer"),
        "category_hint": hint,
    }
    _raise_on_schema(row, "pool")
    return row


def _raise_on_schema(row: dict, kind: str) -> None:
    problems = validate_row(row, kind)
    if problems:
        name, _, reason = problems[0].partition(": ")
        raise ReleaseError(name, reason or problems[0])


# ---- streaming a file -----------------------------------------------------------------
@dataclass
class LineResult:
    """One line of a release file: a row, or the problem that quarantines it."""

    line_no: int  # 1-based
    row: dict | None
    problem: dict | None  # {source, locator, field, reason, raw}


def read_release_file(
    path: str,
    kind: str,
    media_root: str = "",
    default_category: str = "",
    known: dict[str, dict] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[LineResult]:
    """Stream ``path`` (a ``kind`` file: data, dpo_pairs, reward_bench, pool) line by line.

    Blank lines count as read and are quarantined (field ``line``) so that lines read
    always equals rows written plus rows quarantined. A repeated ``id`` in ``data.jsonl``
    or a pool is quarantined (field ``id``), naming the line it repeats. ``known``: see
    ``parse_data_line``. Whatever goes wrong with one line quarantines that line only
    (a 5,000-digit number, nesting too deep for the parser, bytes that are not UTF-8, a
    line over ``max_line_bytes``), and the rest of the file is read. Media paths a line names must
    resolve under ``media_root`` (``path_under_root``), else field ``image``/``video``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown release file kind {kind!r} (one of {', '.join(KINDS)})")
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for line_no, (data, complete) in enumerate(_lines(f, max_line_bytes), start=1):
            line = data.decode("utf-8", errors="replace")  # for the quarantine's raw
            try:
                if not complete:
                    raise ReleaseError("line", f"longer than {max_line_bytes} bytes")
                text = data.decode("utf-8")
                row = _parse_text(text, kind, seen, line_no, media_root, default_category, known)
                yield LineResult(line_no, row, None)
            except (ReleaseError, MediaError) as err:
                raw = line.rstrip("\n") if complete else line[:RAW_CHARS]
                problem = quarantine_row(path, f"line {line_no}", err.field, err.reason, raw)
                yield LineResult(line_no, None, problem)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                reason = f"unreadable ({type(exc).__name__}: {str(exc)[:200]})"
                problem = quarantine_row(path, f"line {line_no}", "line", reason, line[:RAW_CHARS])
                yield LineResult(line_no, None, problem)


def _lines(f, max_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """(line, complete) for each line of the binary file ``f``; a line over ``max_bytes``
    is read in bounded pieces and skipped, only its first piece kept (complete=False)."""
    while True:
        line = f.readline(max_bytes + 1)
        if not line:
            return
        if line.endswith(b"\n") or len(line) <= max_bytes:
            yield line, True
            continue
        rest = line
        while rest and not rest.endswith(b"\n"):
            rest = f.readline(1 << 20)
        yield line, False


def _check_media_paths(obj: Any, media_root: str) -> None:
    """Each media path the line names resolves under ``media_root``, else MediaError."""
    if not isinstance(obj, dict):
        return
    for name in ("image", "video"):
        value = obj.get(name)
        if isinstance(value, str) and value:
            path_under_root(value, media_root, name)


def _parse_text(
    line: str,
    kind: str,
    seen: dict[str, int],
    line_no: int,
    media_root: str,
    default_category: str,
    known: dict | None,
) -> dict:
    if not line.strip():
        raise ReleaseError("line", "blank line")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ReleaseError("line", f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    _check_media_paths(obj, media_root)
    if kind in ("data", "pool"):  # one row per id: a repeated id is quarantined
        if kind == "data":
            row, id_field = parse_data_line(obj, media_root, default_category, known), "query_id"
        else:
            row, id_field = parse_pool_line(obj, media_root), "sample_id"
        row_key = row[id_field]
        if row_key in seen:
            raise ReleaseError("id", f"duplicate of line {seen[row_key]}")
        seen[row_key] = line_no
        return row
    qid = obj.get("id") if isinstance(obj, dict) else None
    occurrence = seen.get(qid, 0) if isinstance(qid, str) else 0
    row = parse_pair_line(obj, occurrence, media_root, default_category)
    seen[row["query_id"]] = occurrence + 1
    return row


# ---- writers (our Parquet -> the official formats) -----------------------------------
def record_to_data_line(record: dict, with_labels: bool = True) -> dict:
    """A ``RECORD_SCHEMA`` row -> an official ``data.jsonl`` object (lists in output order).

    Two extension fields the official tools ignore keep what the format cannot hold:
    ``models`` (model names) and ``constructed`` (the tie rule's added responses).

    ``with_labels=False`` leaves scores, ranking and reasons null: an annotation task.
    """
    responses = record["responses"]

    def labels(key: str) -> list | None:
        return [r.get(key) for r in responses] if with_labels else None

    return {
        "id": record["query_id"],
        "question": record["question"],
        "answer": record.get("reference_answer"),
        "image": record.get("image_path"),
        "video": record.get("video_path"),
        "models_output": [r["text"] for r in responses],
        "models": [r.get("model") for r in responses],
        "constructed": [r.get("constructed") for r in responses],
        "faithfulness": labels("faithfulness"),
        "helpfulness": labels("helpfulness"),
        "ethical": labels("ethics"),
        "final_ranking": labels("rank"),
        "score_reasons": labels("score_reason"),
        "ranking_reason": record.get("ranking_reason") if with_labels else None,
    }


def pair_to_dpo_line(pair: dict) -> dict:
    """A ``PAIR_SCHEMA`` row -> an official ``dpo_pairs.jsonl`` object.

    ``ls_factor`` carries the margin when one was computed (the official trainer reads it).
    """
    line = {
        "id": pair["query_id"],
        "image": pair.get("image_path"),
        "video": pair.get("video_path"),
        "prompt": pair["question"],
        "chosen": pair["chosen"],
        "rejected": pair["rejected"],
        "chosen_reason": pair.get("chosen_reason"),
        "rejected_reason": pair.get("rejected_reason"),
        "is_tie": pair.get("is_tie"),
        "ls_factor": pair.get("margin"),
        "reference_chosen_logp": pair.get("ref_chosen_logp"),
        "reference_rejected_logp": pair.get("ref_rejected_logp"),
    }
    return {k: v for k, v in line.items() if v is not None}
