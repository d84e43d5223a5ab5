"""SFT warm-up: supervise the random tiny policy on the toy world's reference answers.

Reads the pool from ``<run_dir>/toyworld/`` (question, image or video frames,
reference answer), quarantines rows that cannot be trained on (missing answer,
undecodable media), and trains the policy from ``<run_dir>/build-models/policy`` (or
``policy_path``) with the Ray Train + DeepSpeed harness (``harness/trainer.py``). Writes:

    <run_dir>/sft/policy/          the fine-tuned policy (Hugging Face layout + processor)
    <run_dir>/sft/metrics.csv      per-step loss, grad norm, lr
    <run_dir>/sft/loss.png         the loss curve
    <run_dir>/sft/benchmark.json   toy-benchmark metrics: random policy vs SFT policy
    <run_dir>/sft/data/trained.parquet   the rows trained on (ids, category)

    mmrlhf sft --config configs/sft.yaml run_dir=runs/demo
    ray job submit --working-dir . -- python jobs/sft.py run_dir=runs/demo
    mmrlhf sft run_dir=runs/demo train.zero_stage=3 train.max_steps=50

A crash resumes from the last Ray Train checkpoint on re-run (same run_dir).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import config_to_dict
from mmrlhf_ray.core.stage import StageDir, begin_stage, require_done
from mmrlhf_ray.training.config import SftConfig

BENCH_PREFIX = "shapes-bench"  # held-out benchmark rows never train


def load_pool(cfg: SftConfig) -> tuple[list[dict], int]:
    """Pool rows to train on, at most ``max_rows``; and the total read.

    Rows left out on purpose (held-out benchmark rows, rows past ``max_rows``) are
    counted as unselected in the manifest: in = out + unselected + quarantined.
    """
    pool = require_done(cfg.run_dir, cfg.input_stage)
    rows = pool.read().to_pylist()
    kept = [r for r in rows if not str(r.get("sample_id") or "").startswith(BENCH_PREFIX)]
    if cfg.max_rows:
        kept = kept[: cfg.max_rows]
    return kept, len(rows)


def plot_loss(metrics: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("SFT loss (token NLL)")
    ax.set_title("SFT warm-up")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def benchmark(cfg: SftConfig, before: str, after: str) -> dict:
    """Toy-benchmark metrics of the policy before and after SFT (greedy answers)."""
    import torch

    from mmrlhf_ray.models import load_policy
    from mmrlhf_ray.toyworld import benchmark_split
    from mmrlhf_ray.training.sft import score_benchmark

    if not cfg.benchmark_size:
        return {}
    torch.set_num_threads(2)
    stored = StageDir(cfg.run_dir, "toyworld/benchmark")  # the held-out split, if written
    if stored.is_done():
        stored.check_parts()
        rows = stored.read().to_pylist()[: cfg.benchmark_size]
    else:
        rows = benchmark_split(cfg.benchmark_size, seed=cfg.benchmark_seed)
    out = {}
    for label, path in (("random", before), ("sft", after)):
        model, processor = load_policy(path)
        out[label] = score_benchmark(
            model, processor, rows, cfg.max_frames, cfg.max_new_tokens, desc=f"benchmark ({label})"
        )
    return out


def run(cfg: SftConfig) -> dict:
    """The stage: SFT of the policy on the pool, then the toy benchmark before/after."""
    # The pool (input_stage) and, unless a policy is given, build-models are inputs: a
    # rebuilt world or model makes this stage stale.
    models = [] if cfg.policy_path else ["build-models"]
    out, done = begin_stage(cfg, "sft", inputs=[cfg.input_stage, *models])
    if done:
        return out.read_manifest()
    policy_path = cfg.policy_path or StageDir(cfg.run_dir, "build-models").path("policy")

    from harness.launch import finish_tracking, train_stage
    from harness.trainer import TrainTask
    from mmrlhf_ray.models import sft_loss
    from mmrlhf_ray.training.sft import (
        collate_sft,
        encode_sft_example,
        modality_key,
        prepare_sft_rows,
    )

    rows, total = load_pool(cfg)
    good, bad = prepare_sft_rows(rows, source=cfg.input_stage, max_frames=cfg.max_frames)
    out.write_quarantine("pool", bad)
    task = TrainTask(
        model_path=policy_path,
        rows=good,
        loss_fn=sft_loss,
        collate=collate_sft,
        encode=functools.partial(encode_sft_example, max_response_tokens=cfg.max_response_tokens),
        group_key=modality_key,
    )
    result, target = train_stage(
        out, task, cfg.train, cfg.tracking, output="policy", params=config_to_dict(cfg)
    )
    plot_loss(result.metrics, out.local_path("loss.png"))
    bench = benchmark(cfg, policy_path, result.hf_dir)
    Path(out.local_path("benchmark.json")).write_text(json.dumps(bench, indent=2))
    _write_trained(out, good)
    summary = _summary(result.metrics, bench)
    manifest = out.finish(
        total,
        len(good),
        len(bad),
        rows_unselected=total - len(rows),
        policy=result.hf_dir,
        steps=result.steps,
        **summary,
        **finish_tracking(target, result, {"benchmark": bench}),
    )
    print(
        f"sft: {len(good)} of {total} pool rows trained ({len(bad)} quarantined, "
        f"{total - len(rows)} unselected), {result.steps} steps, "
        f"loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f}; benchmark overall "
        f"accuracy random {summary.get('random_overall_accuracy')} -> sft "
        f"{summary.get('sft_overall_accuracy')}; policy -> {result.hf_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("sft", SftConfig, argv, __doc__))
    return 0


def _write_trained(out: StageDir, good: list[dict]) -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "sample_id": [g["id"] for g in good],
            "modality": ["video" if g["video"] else "image" for g in good],
        }
    )
    out.write_part("trained", table)


def _summary(metrics: list[dict], bench: dict) -> dict:
    k = max(1, min(10, len(metrics) // 5))
    summary = {
        "loss_first": sum(m["loss"] for m in metrics[:k]) / k,
        "loss_last": sum(m["loss"] for m in metrics[-k:]) / k,
    }
    for label, m in bench.items():
        for key in (
            "overall_accuracy",
            "short_accuracy",
            "mcq_accuracy",
            "video_accuracy",
            "refusal_harmful",
            "chair_i",
        ):
            summary[f"{label}_{key}"] = m.get(key)
    return summary


if __name__ == "__main__":
    sys.exit(main())
