"""The SFT warm-up: config, data preparation (with quarantine) and the toy benchmark.

The paper starts MM-DPO from an instruction-tuned model. The toy pipeline builds its
policy from random weights, so this stage supervises it on the toy world's reference
answers (``L_SFT``, see ``mmrlhf_ray.models.encoding.sft_loss``) until it is a weak but
working base policy: clearly above the random policy on the toy benchmark, clearly
below perfect, so that preference optimisation has something left to fix.

Pure library code: the Ray Train + DeepSpeed run lives in ``jobs/sft.py`` through
``harness/trainer.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.data.media import MediaError, is_video, row_images
from mmrlhf_ray.models.decoding import generate_batch
from mmrlhf_ray.models.encoding import collate, encode_prompt_response


def sft_example(row: dict[str, Any], max_frames: int = 4) -> dict[str, Any]:
    """A training row: question, media bytes, target; raises ``ValueError`` naming the field.

    Decodes the media once (so a corrupt image is caught here, before training).
    """
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question: missing or empty")
    target = row.get("reference_answer")
    if not isinstance(target, str) or not target.strip():
        raise ValueError("reference_answer: missing or empty (nothing to imitate)")
    images = row_images(row, max_frames=max_frames)  # raises MediaError(field, reason)
    video = is_video(row) and bool(images)
    return {
        "id": row.get("sample_id") or row.get("query_id"),
        "question": question,
        "target": target,
        "video": video,
        "media": [_png(img) for img in images],
    }


def _png(img) -> bytes:
    from mmrlhf_ray.data.media import encode_png

    return encode_png(img)


def prepare_sft_rows(
    rows: Sequence[dict[str, Any]], source: str, max_frames: int = 4
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split pool rows into training examples and quarantine rows (none dropped)."""
    good, bad = [], []
    for i, row in enumerate(rows):
        try:
            good.append(sft_example(row, max_frames))
        except (MediaError, ValueError) as exc:
            field_name = exc.field if isinstance(exc, MediaError) else str(exc).split(":")[0]
            locator = row.get("sample_id") or f"row {i}"
            bad.append(quarantine_row(source, locator, field_name, str(exc), row))
    return good, bad


def encode_sft_example(
    example: dict[str, Any], processor, max_response_tokens: int = 128
) -> dict[str, torch.Tensor]:
    """Tensors for one prepared example (labels on the reference answer only)."""
    from mmrlhf_ray.data.media import decode_image

    media = [decode_image(b) for b in example["media"]]
    return encode_prompt_response(
        processor,
        example["question"],
        media,
        example["target"],
        video=example["video"],
        max_response_tokens=max_response_tokens,
    )


def modality_key(example: dict[str, Any]) -> str:
    """Group key of a prepared example: "video", "image<k>" or "text" (see training.data)."""
    if example["video"]:
        return "video"
    return f"image{len(example['media'])}" if example["media"] else "text"


def collate_sft(examples: list[dict[str, torch.Tensor]], processor) -> dict[str, torch.Tensor]:
    return collate(examples, processor.tokenizer.pad_token_id)


def answer_benchmark(
    model,
    processor,
    rows: Sequence[dict[str, Any]],
    max_frames: int = 4,
    max_new_tokens: int = 64,
    desc: str = "benchmark",
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers of ``model`` to benchmark rows (batched transformers generate)."""
    model.eval()
    prompts = []
    for row in rows:
        images = row_images(row, max_frames=max_frames)
        video = is_video(row) and bool(images)
        prompts.append((row["question"], images, video))
    answers: list[str | None] = [None] * len(prompts)
    for video in (False, True):  # one modality per batch
        idx = [i for i, p in enumerate(prompts) if p[2] == video]
        for start in tqdm(
            range(0, len(idx), batch_size),
            desc=f"{desc} ({'video' if video else 'image'})",
            mininterval=5,
            disable=not idx,
        ):
            chunk = idx[start : start + batch_size]
            replies = generate_batch(
                model,
                processor,
                [prompts[i][:2] for i in chunk],
                video=video,
                max_new_tokens=max_new_tokens,
            )
            for i, reply in zip(chunk, replies, strict=True):
                answers[i] = reply
    return [a or "" for a in answers]


def score_benchmark(
    model,
    processor,
    rows: Sequence[dict[str, Any]],
    max_frames: int = 4,
    max_new_tokens: int = 64,
    desc: str = "benchmark",
) -> dict[str, Any]:
    """Toy-benchmark metrics of ``model`` (``mmrlhf_ray.toyworld.benchmark_metrics``)."""
    from mmrlhf_ray.evaluation.shapes_metrics import benchmark_metrics

    answers = answer_benchmark(model, processor, rows, max_frames, max_new_tokens, desc)
    metrics = benchmark_metrics(list(rows), answers)
    metrics["examples"] = [
        {"question": r["question"], "answer": a}
        for r, a in zip(list(rows)[:5], answers[:5], strict=True)
    ]
    return metrics
