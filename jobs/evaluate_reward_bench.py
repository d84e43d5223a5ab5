"""Evaluate a reward model on MM-RLHF-RewardBench: ACC / ACC+ per category.

Input, either:
* an official ``mm_reward_bench.jsonl`` (``input=``; image/video paths relative to
  ``image_root=``), with or without a ``rewards`` field already filled
  (``use_existing_rewards=true`` only recomputes the metrics from it); or
* by default, the held-out pairs of this run's ``train-reward`` stage, first exported
  in the official format (images written as PNG files under ``category/`` folders).

Runs at the reward model's own settings: critique length (``max_new_tokens``), video
frames and max length come from its ``reward_config.json`` unless given (> 0) here, so
a 7B model trained on 4,096 tokens and 10 frames is judged with those.

Scores every line in Table 2's inference ``mode`` (generate a critique, then score |
``given``: score with ``chosen_reason``/``rejected_reason`` | ``none``), writes the file
back with ``rewards = [r_chosen, r_rejected]`` and ``critic = [c_chosen, c_rejected]``,
and the table (ACC / ACC+ with 95% intervals) to
``<run_dir>/evaluate/reward-bench/results.json``, the per-pair outcomes to ``items.parquet``. Unreadable lines or
images are quarantined with the field named: lines in = scored + quarantined.

    mmrlhf evaluate reward-bench run_dir=runs/demo
    mmrlhf evaluate reward-bench input=/data/mm_reward_bench.jsonl image_root=/data/images model=runs/demo/train-reward/model
    ray job submit --working-dir . -- python jobs/evaluate_reward_bench.py --config configs/evaluate-reward-bench.yaml run_dir=runs/demo
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, begin_stage, require_done
from mmrlhf_ray.data.media import encode_png, row_images
from mmrlhf_ray.evaluation.outcomes import item_table, write_items
from mmrlhf_ray.evaluation.reward_bench import (
    BenchSettings,
    acc_table,
    bench_rows_to_pairs,
    bench_settings,
    format_table,
    overall_line,
    read_bench_jsonl,
    results_from_rewards,
    reward_outcomes,
    score_pairs,
    write_bench_jsonl,
)
from mmrlhf_ray.reward.config import EvaluateRewardBenchConfig

STAGE = "evaluate/reward-bench"


def export_heldout(run_dir: str, out_dir: Path) -> tuple[Path, Path]:
    """Write the run's held-out pairs as an official-format jsonl + image files."""
    split = require_done(run_dir, "train-reward").read(columns=["pair_id", "split"])
    ids, sides = split["pair_id"].to_pylist(), split["split"].to_pylist()
    held_ids = {p for p, s in zip(ids, sides, strict=True) if s == "heldout"}
    manifest = StageDir(run_dir, "train-reward").read_manifest() or {}
    pairs_stage = manifest.get("config", {}).get("pairs_stage", "pairs")
    rows = [
        r for r in StageDir(run_dir, pairs_stage).read().to_pylist() if r["pair_id"] in held_ids
    ]
    root = out_dir / "media"
    lines = []
    for row in rows:
        cat = row.get("category") or "short"
        rel = _write_media(row, root, cat)
        lines.append(
            {
                "id": row["query_id"],
                ("video" if cat == "video" else "image"): rel,
                "prompt": row["question"],
                "chosen": row["chosen"],
                "rejected": row["rejected"],
                "chosen_reason": row.get("chosen_critique") or row.get("chosen_reason"),
                "rejected_reason": row.get("rejected_critique") or row.get("rejected_reason"),
            }
        )
    path = out_dir / "heldout_mm_reward_bench.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path, root


def _write_media(row: dict, root: Path, category: str) -> str:
    images = row_images(row, max_frames=64)
    qid = str(row["query_id"]).replace("/", "_")
    if category == "video":
        folder = root / "video" / qid
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            (folder / f"frame_{i:03d}.png").write_bytes(encode_png(img))
        return f"video/{qid}"
    path = root / category / f"{qid}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(images[0]))
    return f"{category}/{qid}.png"


def run(cfg: EvaluateRewardBenchConfig) -> dict:
    """The stage: ACC/ACC+ of the reward model on a benchmark file (default: held-out pairs)."""
    out, done = begin_stage(cfg, STAGE, inputs=[] if cfg.input else ["train-reward"])
    if done:
        return out.read_manifest()
    out_dir = Path(out.local_path())
    src, image_root = Path(cfg.input) if cfg.input else None, cfg.image_root
    if src is None:
        src, media = export_heldout(cfg.run_dir, out_dir)
        image_root = str(media)
    rows, bad = read_bench_jsonl(src)
    lines_in = len(rows) + len(bad)
    results, kept, bad_media, settings = score_lines(cfg, rows, image_root)
    bad += bad_media
    output = Path(cfg.output) if cfg.output else out_dir / f"scored_{src.name}"
    write_bench_jsonl(output, kept, results)
    out.write_quarantine("lines", bad)
    table = acc_table(results)
    mode = "existing rewards" if cfg.use_existing_rewards else cfg.mode
    used = asdict(settings) if settings else None
    write_items(str(out_dir / "items.parquet"), item_table(reward_outcomes(results, mode)))
    (out_dir / "results.json").write_text(
        json.dumps({"mode": mode, "table": table, "settings": used}, indent=2)
    )
    print(format_table({mode: table}))
    if settings:
        print(f"evaluate reward-bench: settings {used}")
    manifest = out.finish(
        lines_in, len(results), len(bad), table=table, output=str(output), settings=used
    )
    print(
        f"evaluate reward-bench: {len(results)} pairs scored ({len(bad)} quarantined), "
        f"{overall_line(table)}; scored file {output}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("evaluate-reward-bench", EvaluateRewardBenchConfig, argv, __doc__))
    return 0


def model_settings(cfg: EvaluateRewardBenchConfig) -> tuple[str, BenchSettings]:
    """(model dir, the settings it is judged with: its reward_config.json unless overridden)."""
    from mmrlhf_ray.reward.model import META_FILE

    model_dir = cfg.model or str(Path(cfg.run_dir) / "train-reward" / "model")
    meta_path = Path(model_dir) / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"model: {model_dir} has no {META_FILE}; not a reward model")
    given = {"max_new_tokens": cfg.max_new_tokens, "max_frames": cfg.max_frames}
    given["max_length"] = cfg.max_length
    return model_dir, bench_settings(given, json.loads(meta_path.read_text()))


def score_lines(cfg: EvaluateRewardBenchConfig, rows: list[dict], image_root: str):
    """(results, the lines they belong to, quarantine for unreadable media, settings)."""
    if cfg.use_existing_rewards:
        return results_from_rewards(rows), rows, [], None
    from mmrlhf_ray.reward.model import load_reward_model

    model_dir, s = model_settings(cfg)
    pairs, kept, bad = bench_rows_to_pairs(rows, image_root, s.max_frames, cfg.max_side or None)
    model = load_reward_model(model_dir)
    model.meta.max_frames, model.meta.max_length = s.max_frames, s.max_length
    results = score_pairs(model, pairs, cfg.mode, s.max_new_tokens, cfg.batch_size)
    return results, kept, bad, s


if __name__ == "__main__":
    sys.exit(main())
