"""Exports of the curated preference data where other tools read it, and their imports.

Three formats (``mmrlhf export formats=[hf, trl, official]``):

* ``hf``: a Hugging Face ``datasets`` dataset on disk (``datasets.load_from_disk``): one
  row per pair with its image (the ``Image`` feature; a video as a list of frames),
  question, chosen, rejected, the reward margin ``margin`` (delta) and the ``beta``
  MM-DPO gave the pair (from ``train-dpo``; null when it has not run);
* ``trl``: TRL's conversational preference format with images (``prompt`` / ``chosen``
  / ``rejected`` message lists, ``images``), which TRL's ``DPOTrainer`` takes as it is;
  a video's frames (at most ``max_frames``) are its images;
* ``official``: the MM-RLHF release's ``dpo_pairs.jsonl`` with the margins filled in
  (``ls_factor``, the field the official trainer reads) and ``data.jsonl`` (records, with
  an extension field ``margins``: ``[{chosen, rejected, margin, beta}]`` by output
  index), the media written beside them under ``<category>/...`` paths, so
  ``mmrlhf import dpo_pairs_jsonl=... media_root=<dir>`` reads them back.

``pairs_from_hf`` / ``pairs_from_trl`` read the first two back into ``PAIR_SCHEMA`` rows;
the official files come back through the ``import`` stage. ``datasets`` is imported only
by the functions that need it. No ray here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.data.media import MediaError, decode_image, frame_paths, sample_uniform
from mmrlhf_ray.data.release import pair_to_dpo_line, record_to_data_line
from mmrlhf_ray.data.schemas import CATEGORIES


# ---------------------------------------------------------------- media ----------------
def _media_bytes(row: dict) -> tuple[str, list[bytes]]:
    """("image" | "video" | "", encoded bytes) of a pair/record row, files read."""
    if row.get("image") is not None:
        return "image", [row["image"]]
    if row.get("image_path"):
        return "image", [Path(row["image_path"]).read_bytes()]
    frames = list(row.get("video_frames") or [])
    if not frames and row.get("video_path"):
        frames = [p.read_bytes() for p in frame_paths(row["video_path"])]
    return ("video", frames) if frames else ("", [])


def check_media(row: dict, source: str) -> dict | None:
    """A quarantine row when the pair's media cannot be read or decoded, else None."""
    try:
        kind, blobs = _media_bytes(row)
        for blob in blobs:
            decode_image(blob, "video_frames" if kind == "video" else "image")
    except (OSError, MediaError) as exc:
        name = getattr(exc, "field", "image_path" if row.get("image_path") else "video_path")
        return quarantine_row(source, row.get("pair_id"), name, str(exc), row.get("query_id"))
    return None


def _ext(blob: bytes) -> str:
    return ".jpg" if blob[:3] == b"\xff\xd8\xff" else ".png"


def media_relpath(row: dict) -> tuple[str, str, dict[str, bytes]]:
    """(field "image" | "video" | "", its path relative to the export, files to write).

    The top folder is the category (the release's convention, read back by the import;
    ``media/`` when the row has none, so the import's ``default_category`` decides); the
    name is the query id made safe plus a hash of it (no two queries collide)."""
    kind, blobs = _media_bytes(row)
    if not kind:
        return "", "", {}
    qid = str(row["query_id"])
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", qid)[:80]
    name = f"{safe}-{hashlib.sha1(qid.encode()).hexdigest()[:8]}"
    if kind == "video":
        folder = f"video/{name}"
        files = {f"{folder}/frame_{i:03d}{_ext(b)}": b for i, b in enumerate(blobs)}
        return "video", folder, files
    category = row.get("category")  # none known: no folder names one (the import asks)
    folder = category if category in CATEGORIES else "media"
    path = f"{folder}/{name}{_ext(blobs[0])}"
    return "image", path, {path: blobs[0]}


def _write_files(root: str, files: dict[str, bytes]) -> None:
    for rel, blob in files.items():
        path = Path(root, rel)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)


# ---------------------------------------------------------------- official -------------
def write_dpo_pairs(pairs: list[dict], betas: dict[str, float], root: str) -> str:
    """``<root>/dpo_pairs.jsonl`` (margins as ``ls_factor``, beta as ``beta``) + media."""
    path = os.path.join(root, "dpo_pairs.jsonl")
    os.makedirs(root, exist_ok=True)
    with open(path, "w") as f:
        for pair in pairs:
            kind, rel, files = media_relpath(pair)
            _write_files(root, files)
            line = pair_to_dpo_line({**pair, "image_path": None, "video_path": None})
            if kind:
                line[kind] = rel
            if betas.get(pair["pair_id"]) is not None:
                line["beta"] = betas[pair["pair_id"]]
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def record_margins(record: dict, pairs: list[dict], betas: dict[str, float]) -> list[dict]:
    """The record's pairs as ``{chosen, rejected, margin, beta}`` by output index."""
    index = {r["response_id"]: i for i, r in enumerate(record["responses"])}
    out = []
    for p in pairs:
        if p.get("chosen_id") in index and p.get("rejected_id") in index:
            out.append(
                {
                    "chosen": index[p["chosen_id"]],
                    "rejected": index[p["rejected_id"]],
                    "margin": p.get("margin"),
                    "beta": betas.get(p["pair_id"]),
                }
            )
    return out


def write_data_jsonl(
    records: list[dict], pairs: list[dict], betas: dict[str, float], root: str
) -> str:
    """``<root>/data.jsonl``: the official record lines + ``margins`` + media."""
    by_query: dict[str, list[dict]] = {}
    for p in pairs:
        by_query.setdefault(p["query_id"], []).append(p)
    path = os.path.join(root, "data.jsonl")
    os.makedirs(root, exist_ok=True)
    with open(path, "w") as f:
        for record in records:
            kind, rel, files = media_relpath(record)
            _write_files(root, files)
            line = record_to_data_line({**record, "image_path": None, "video_path": None})
            if kind:
                line[kind] = rel
            line["margins"] = record_margins(record, by_query.get(record["query_id"], []), betas)
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def margins_of_data_line(obj: dict) -> list[tuple[str, str, float | None]]:
    """(chosen text, rejected text, margin) of each entry of a data.jsonl ``margins``."""
    outputs = obj.get("models_output") or []
    return [(outputs[m["chosen"]], outputs[m["rejected"]], m.get("margin")) for m in obj["margins"]]


# ---------------------------------------------------------------- datasets -------------
def _image(blob: bytes) -> dict:
    return {"bytes": blob, "path": None}


def hf_rows(pairs: list[dict], betas: dict[str, float]) -> list[dict]:
    """The ``hf`` format's rows (one per pair)."""
    out = []
    for p in pairs:
        kind, blobs = _media_bytes(p)
        out.append(
            {
                "pair_id": p["pair_id"],
                "query_id": p["query_id"],
                "category": p.get("category"),
                "question": p["question"],
                "image": _image(blobs[0]) if kind == "image" else None,
                "video_frames": [_image(b) for b in blobs] if kind == "video" else [],
                "chosen": p["chosen"],
                "rejected": p["rejected"],
                "chosen_reason": p.get("chosen_reason"),
                "rejected_reason": p.get("rejected_reason"),
                "is_tie": p.get("is_tie"),
                "margin": p.get("margin"),
                "margin_source": p.get("margin_source"),
                "beta": betas.get(p["pair_id"]),
            }
        )
    return out


def hf_features():
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features(
        {
            "pair_id": text,
            "query_id": text,
            "category": text,
            "question": text,
            "image": Image(),
            "video_frames": List(Image()),
            "chosen": text,
            "rejected": text,
            "chosen_reason": text,
            "rejected_reason": text,
            "is_tie": Value("bool"),
            "margin": Value("float32"),
            "margin_source": text,
            "beta": Value("float32"),
        }
    )


def trl_rows(pairs: list[dict], max_frames: int = 4) -> list[dict]:
    """TRL's conversational preference rows: the prompt holds one image slot per image."""
    out = []
    for p in pairs:
        kind, blobs = _media_bytes(p)
        blobs = sample_uniform(blobs, max_frames) if kind == "video" else blobs
        content = [{"type": "image", "text": None}] * len(blobs)
        content = [*content, {"type": "text", "text": p["question"]}]
        out.append(
            {
                "prompt": [{"role": "user", "content": content}],
                "chosen": [_assistant(p["chosen"])],
                "rejected": [_assistant(p["rejected"])],
                "images": [_image(b) for b in blobs],
            }
        )
    return out


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def trl_features():
    from datasets import Features, Image, List, Value

    content = List({"type": Value("string"), "text": Value("string")})
    turn = List({"role": Value("string"), "content": content})
    return Features({"prompt": turn, "chosen": turn, "rejected": turn, "images": List(Image())})


def save_dataset(rows: list[dict], features, path: str) -> int:
    """``datasets.Dataset`` of ``rows`` saved at ``path``; returns its length."""
    from datasets import Dataset

    dataset = Dataset.from_list(rows, features=features)
    dataset.save_to_disk(path)
    return len(dataset)


def pairs_from_hf(dataset) -> list[dict]:
    """The ``hf`` export back as ``PAIR_SCHEMA``-shaped rows (images as encoded bytes)."""
    raw = dataset.cast_column("image", _no_decode()).cast_column(
        "video_frames", _no_decode(list_of=True)
    )
    rows = []
    for r in raw:
        row = {k: v for k, v in r.items() if k not in ("image", "video_frames")}
        row["image"] = r["image"]["bytes"] if r["image"] else None
        row["video_frames"] = [f["bytes"] for f in r["video_frames"]] or None
        rows.append(row)
    return rows


def pairs_from_trl(dataset) -> list[dict]:
    """The ``trl`` export back as (question, image bytes, chosen, rejected) rows."""
    raw = dataset.cast_column("images", _no_decode(list_of=True))
    return [
        {
            "question": r["prompt"][0]["content"][-1]["text"],
            "images": [i["bytes"] for i in r["images"]],
            "chosen": r["chosen"][0]["content"][0]["text"],
            "rejected": r["rejected"][0]["content"][0]["text"],
        }
        for r in raw
    ]


def _no_decode(list_of: bool = False):
    from datasets import Image, List

    return List(Image(decode=False)) if list_of else Image(decode=False)
