"""Document hooks and per-item scoring of the ``mmrlhf_shapes`` lmms-eval task.

A document is one benchmark row (``toyworld/benchmark``): ``sample_id``, ``question``,
``image`` (PNG bytes) or ``video_frames`` (PNG bytes per frame), ``ground_truth`` (JSON).
``process_results`` scores the answer with the toy world's own judge
(``mmrlhf_ray.toyworld.judge``): ``accuracy`` is its strict ``correct``.
"""

from __future__ import annotations

from typing import Any

ALL_FRAMES = 1_000_000  # the model side samples a video's frames (as the in-house path)


def doc_to_visual(doc: dict[str, Any]) -> list:
    from mmrlhf_ray.data.media import row_images

    return row_images(doc, max_frames=ALL_FRAMES)


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return str(doc["question"])


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    from mmrlhf_ray.toyworld import judge

    return {"accuracy": float(judge(doc, results[0])["correct"])}
