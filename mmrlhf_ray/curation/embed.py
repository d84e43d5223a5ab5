"""Turning pool rows into (category, image embedding), or a quarantine reason.

This is the pure work of one embedding batch; the Ray actor
(``actors/clip_embedder.py``) and the single-process baseline of
``benchmarks/embed_pipeline.py`` both call :func:`embed_rows`, so they do the same work.

Per row: validate against ``POOL_SCHEMA``, categorise (paper Sec. 2.2), decode the image
(a video's first frame stands for the video) with bounded size, preprocess, embed.
Any failure becomes a row with ``embedding = null`` and the offending field and reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmrlhf_ray.core.quarantine import raw_summary
from mmrlhf_ray.curation.categorize import CategoryError, categorize
from mmrlhf_ray.curation.decontaminate import image_digest, perceptual_hash
from mmrlhf_ray.data.media import MediaError, decode_image, frame_paths
from mmrlhf_ray.data.schemas import validate_row

# Columns of the embedder's output batches (one row out per row in).
OUTPUT_COLUMNS = (
    "sample_id",
    "shard",
    "category",
    "image_hash",
    "phash",
    "embedding",
    "error_field",
    "error_reason",
    "raw",
)


def first_image(row: dict[str, Any], max_side: int, max_pixels: int):
    """The image that stands for the row: its image, or its video's first frame."""
    if row.get("image") is not None:
        return decode_image(row["image"], "image", max_pixels=max_pixels, max_side=max_side)
    if row.get("image_path"):
        return decode_image(
            row["image_path"], "image_path", max_pixels=max_pixels, max_side=max_side
        )
    if row.get("video_frames"):
        return decode_image(
            row["video_frames"][0], "video_frames", max_pixels=max_pixels, max_side=max_side
        )
    if row.get("video_path"):
        return decode_image(
            frame_paths(row["video_path"])[0],
            "video_path",
            max_pixels=max_pixels,
            max_side=max_side,
        )
    raise MediaError("image", "no image or video: curation clusters queries by image")


def _prepare(
    row: dict[str, Any], preprocess, max_side: int, max_pixels: int, long_threshold: int
) -> tuple[str, str, int, Any]:
    """(category, image hash, perceptual hash, pixels) of one row; raises MediaError/CategoryError."""
    problems = validate_row(row, "pool")
    if problems:
        field = problems[0].split(":", 1)[0]
        raise CategoryError(field, "; ".join(problems))
    category = categorize(row, long_threshold)
    image = first_image(row, max_side, max_pixels)
    return category, image_digest(image), perceptual_hash(image), preprocess(image)


def embed_rows(
    rows: list[dict[str, Any]],
    model,
    preprocess,
    *,
    max_side: int = 512,
    max_pixels: int = 4096 * 4096,
    long_threshold: int = 128,
    shard: str | None = None,
) -> dict[str, list]:
    """Embed a batch of pool rows; returns columns ``OUTPUT_COLUMNS`` (lists).

    Rows that fail get ``embedding = None`` and ``error_field``/``error_reason`` set;
    embeddings are float16 bytes of the L2-normalised vector.
    """
    import torch

    from mmrlhf_ray.models.clip import embed_images

    out: dict[str, list] = {name: [] for name in OUTPUT_COLUMNS}
    pixels, ok = [], []
    for i, row in enumerate(rows):
        out["sample_id"].append(row.get("sample_id"))
        out["shard"].append(row.get("shard", shard))
        try:
            category, digest, phash, tensor = _prepare(
                row, preprocess, max_side, max_pixels, long_threshold
            )
        except (MediaError, CategoryError) as exc:
            out["category"].append(None)
            out["image_hash"].append(None)
            out["phash"].append(None)
            out["error_field"].append(exc.field)
            out["error_reason"].append(exc.reason)
            out["raw"].append(raw_summary(row))
            continue
        out["category"].append(category)
        out["image_hash"].append(digest)
        out["phash"].append(phash)
        out["error_field"].append(None)
        out["error_reason"].append(None)
        out["raw"].append(None)
        pixels.append(tensor)
        ok.append(i)
    vectors = embed_images(model, torch.stack(pixels)) if pixels else np.zeros((0, 0))
    out["embedding"] = [None] * len(rows)
    for j, i in enumerate(ok):
        out["embedding"][i] = vectors[j].astype(np.float16).tobytes()
    return out
