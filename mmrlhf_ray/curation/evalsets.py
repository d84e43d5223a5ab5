"""Reading the evaluation sets that curation's decontamination checks the pool against.

One :class:`~mmrlhf_ray.curation.decontaminate.EvalItem` per item id (a RewardBench
query's pairs share one): pool-schema Parquet / JSONL rows (the shapes benchmark, lmms-eval
task data exported to files), the official ``mm_reward_bench.jsonl``, or a generic JSONL
with named id / question / image fields (e.g. SafetyBench). An image that cannot be read
leaves the item text-only (its problem is kept, and counted in the report).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrlhf_ray.core.config import ConfigError
from mmrlhf_ray.curation.decontaminate import EvalItem, EvalSetConfig
from mmrlhf_ray.data.files import read_rows
from mmrlhf_ray.data.media import MediaError, decode_image, frame_paths


def _pool_image(row: dict[str, Any], root: str, max_side: int) -> Any:
    """The image of a pool-schema row (image bytes/path, or a video's first frame)."""
    base = Path(root or ".")
    if row.get("image") is not None:
        return decode_image(row["image"], "image", max_side=max_side)
    if row.get("image_path"):
        return decode_image(base / row["image_path"], "image_path", max_side=max_side)
    if row.get("video_frames"):
        return decode_image(row["video_frames"][0], "video_frames", max_side=max_side)
    if row.get("video_path"):
        return decode_image(frame_paths(base / row["video_path"])[0], "video", max_side=max_side)
    return None


def _item(cfg: EvalSetConfig, item_id: Any, question: Any, load: Callable[[], Any]) -> EvalItem:
    item = EvalItem(cfg.name, str(item_id), str(question or ""))
    try:
        item.image = load()
    except (MediaError, OSError, IndexError) as exc:
        item.problem = str(exc)
    return item


def load_eval_set(cfg: EvalSetConfig, max_side: int = 512) -> list[EvalItem]:
    """The items of one evaluation set (one per id; a RewardBench query's pairs share one)."""
    if not Path(cfg.path).exists():
        raise ConfigError(f"decontaminate.sets[{cfg.name}].path: {cfg.path} does not exist")
    items: dict[str, EvalItem] = {}
    for n, row in enumerate(read_rows(cfg.path), start=1):
        if cfg.format == "pool":
            key, question = row.get("sample_id"), row.get("question")
            load = functools.partial(_pool_image, row, cfg.image_root, max_side)
        elif cfg.format == "reward-bench":
            key, question = row.get("id"), row.get("prompt")
            media = {"video_path": row.get("video")} if row.get("video") else {}
            media = media or {"image_path": row.get("image")}
            load = functools.partial(_pool_image, media, cfg.image_root, max_side)
        else:
            key, question = row.get(cfg.id_field), row.get(cfg.question_field)
            media = _jsonl_media(row.get(cfg.image_field))
            load = functools.partial(_pool_image, media, cfg.image_root, max_side)
        if key is None or key == "":
            raise ConfigError(f"{cfg.path}: item {n}: no id field")
        if str(key) not in items:
            items[str(key)] = _item(cfg, key, question, load)
    return list(items.values())


def _jsonl_media(value: Any) -> dict[str, Any]:
    """A jsonl image field: a path, base64 bytes, or a list of frames (first one used)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not value:
        return {}
    text = str(value)
    if len(text) > 512 and not Path(text[:512]).suffix:
        import base64

        return {"image": base64.b64decode(text)}
    return {"image_path": text}
