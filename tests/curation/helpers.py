"""Helpers of the curation tests (pools): shapes-world rows, optionally with injected bad rows."""

from __future__ import annotations

import io

from PIL import Image

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table


def shapes_pool(n: int, seed: int = 0) -> list[dict]:
    """``n`` shapes-world pool rows (the toy world's own generator)."""
    from mmrlhf_ray.toyworld import generate_pool

    return generate_pool(n, seed=seed)


def big_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def inject_bad_rows(rows: list[dict]) -> dict[str, str]:
    """Corrupt a few rows in place; returns {sample_id: field expected in quarantine}."""
    bad = {}
    images = [r for r in rows if r.get("image") is not None]
    videos = [r for r in rows if r.get("video_frames")]
    for r in images[:3]:  # truncated / garbage image bytes
        r["image"] = r["image"][:40] if r is images[0] else b"not an image at all"
        bad[r["sample_id"]] = "image"
    images[3]["question"] = ""  # a missing required field
    bad[images[3]["sample_id"]] = "question"
    images[4]["image"] = big_png(300)  # too many pixels for the test's max_pixels
    bad[images[4]["sample_id"]] = "image"
    videos[0]["video_frames"] = [b"\x89PNG broken"] + videos[0]["video_frames"][1:]
    bad[videos[0]["sample_id"]] = "video_frames"
    return bad


def write_pool_stage(run_dir: str, rows: list[dict], rows_per_shard: int) -> StageDir:
    """Write ``rows`` as a finished ``toyworld`` stage, ``rows_per_shard`` per part."""
    stage = StageDir(run_dir, "toyworld")
    stage.begin({"test": True})
    for i in range(0, len(rows), rows_per_shard):
        stage.write_part(
            f"pool-{i // rows_per_shard:05d}", to_table(rows[i : i + rows_per_shard], "pool")
        )
    stage.finish(len(rows), len(rows), 0)
    return stage
