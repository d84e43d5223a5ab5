"""Train the critique reward model (paper Sec. 3.2) with Ray Train + DeepSpeed.

Reads preference pairs (``pairs`` stage, or ``expand`` with enriched critiques), splits
them by query into train / held-out, trains ``l_Total = w_c * l_Critique (Eq. 2) +
w_s * l_Score (Eq. 3) [+ tie + centering]`` with teacher forcing on the ground-truth
critiques, through the shared harness (``harness/trainer.py``: ZeRO-2/3, checkpoints,
resume after a killed worker), then scores the held-out pairs (ACC / ACC+ per category).

Writes ``<run_dir>/train-reward/``: ``model/`` (HF backbone + processor +
``reward_head.safetensors``), ``data/split.parquet`` (pair_id -> train | heldout),
``heldout.json`` (ACC/ACC+), ``metrics.csv``, the Ray Train run under ``ray/``.

    mmrlhf train-reward run_dir=runs/demo
    mmrlhf train-reward run_dir=runs/demo critique_source=none loss.critique=0   # w/o Task 1
    ray job submit --working-dir . -- python jobs/train_reward.py --config configs/train-reward.gpu.yaml run_dir=s3://bucket/run
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import pyarrow as pa

from mmrlhf_ray.cli import parse_stage_args
from mmrlhf_ray.outcomes import item_table, write_items
from mmrlhf_ray.reward.bench import (
    acc_table,
    format_table,
    overall_line,
    reward_outcomes,
    score_pairs,
)
from mmrlhf_ray.reward.config import TrainRewardConfig
from mmrlhf_ray.reward.data import (
    build_reward_model,
    collate_reward_pairs,
    encode_pair_row,
    load_split_rows,
    pairs_from_rows,
    reward_loss_fn,
    split_pairs,
)
from mmrlhf_ray.reward.model import RewardMeta, load_reward_model, save_reward_model
from mmrlhf_ray.stage import StageDir, begin_stage


def backbone_dir(cfg: TrainRewardConfig) -> str:
    return cfg.backbone or str(Path(cfg.run_dir) / "build-models" / "policy")


def _abs(run_dir: str) -> str:
    """Workers may start elsewhere: give them an absolute local path (URIs as is)."""
    return run_dir if "://" in run_dir else str(Path(run_dir).resolve())


def reward_meta(cfg: TrainRewardConfig, backbone: str) -> RewardMeta:
    from transformers import AutoConfig

    from mmrlhf_ray.reward.model import CRITIQUE_PROMPT

    conf = AutoConfig.from_pretrained(backbone, trust_remote_code=False)
    text = conf.get_text_config() if hasattr(conf, "get_text_config") else conf
    return RewardMeta(
        hidden_size=int(text.hidden_size),
        head_dropout=cfg.head_dropout,
        prompt_template=cfg.prompt_template or CRITIQUE_PROMPT,
        max_length=cfg.max_length,
        max_frames=cfg.max_frames,
        critique_trained=cfg.critique_source != "none" and cfg.loss.critique > 0,
        max_new_tokens=cfg.max_new_tokens,
    )


def plan_steps(cfg: TrainRewardConfig, n_train: int) -> TrainRewardConfig:
    """``train.max_steps`` from ``epochs`` (if set) over ``n_train`` pairs."""
    if cfg.epochs <= 0:
        return cfg
    t = cfg.train
    per_step = t.num_workers * t.micro_batch_size * t.grad_accum
    t.max_steps = max(1, math.ceil(cfg.epochs * n_train / per_step))
    return cfg


def train(cfg: TrainRewardConfig, out: StageDir) -> dict:
    """Run the harness; returns {"model_dir", "steps", "metrics"}."""
    from harness.runtime import init_ray
    from harness.trainer import TrainTask, run_training

    backbone = backbone_dir(cfg)
    meta = reward_meta(cfg, backbone)
    task = TrainTask(
        model_path=backbone,
        rows=functools.partial(load_split_rows, _abs(cfg.run_dir), cfg.pairs_stage, "train"),
        encode=functools.partial(
            encode_pair_row,
            source=cfg.critique_source,
            max_frames=cfg.max_frames,
            max_side=cfg.max_side,
        ),
        collate=functools.partial(collate_reward_pairs, meta=meta, forward=cfg.forward),
        loss_fn=functools.partial(reward_loss_fn, weights=cfg.loss),
        build_model=functools.partial(build_reward_model, meta=meta, seed=cfg.seed),
        save_model=save_reward_model,
    )
    init_ray()
    # The Ray Train run is keyed by config and inputs: the same attempt resumes after a
    # crash, a changed config (another ablation in the same run dir) starts afresh.
    result = run_training(
        task,
        cfg.train,
        name=f"train-reward-{out.attempt_key()}",
        storage_path=out.local_path("ray"),
        output_dir=out.local_path("model"),
        metrics_csv=out.local_path("metrics.csv"),
    )
    return {"model_dir": result.hf_dir, "steps": result.steps, "metrics": result.metrics}


def evaluate_heldout(cfg: TrainRewardConfig, model_dir: str, held: list, items_path: str) -> dict:
    """ACC / ACC+ per category (with 95% intervals) of the trained model on the held-out
    pairs; the per-pair outcomes go to ``items_path`` (Parquet, ``mmrlhf_ray.outcomes``)."""
    if not held:
        return {}
    model = load_reward_model(model_dir)
    model.forward_kind = cfg.forward
    mode = cfg.eval_mode if model.meta.critique_trained else "none"
    results = score_pairs(model, held, mode, cfg.max_new_tokens)
    write_items(items_path, item_table(reward_outcomes(results, f"held-out ({mode})")))
    table = acc_table(results)
    print(format_table({f"held-out ({mode})": table}))
    return {"mode": mode, "table": table}


def run(cfg: TrainRewardConfig) -> dict:
    """The stage: split the pairs, train the reward model, score the held-out pairs."""
    out, done = begin_stage(cfg, "train-reward", inputs=[cfg.pairs_stage])
    if done:
        return out.read_manifest()
    pairs_dir = StageDir(cfg.run_dir, cfg.pairs_stage)
    rows = pairs_dir.read().to_pylist()
    good, bad = pairs_from_rows(
        rows, cfg.critique_source, cfg.max_frames, cfg.max_side or None, stage=cfg.pairs_stage
    )
    out.write_quarantine("pairs", bad)
    train_pairs, held = split_pairs(good, cfg.heldout_fraction, cfg.split_seed)
    train_ids = {p.pair_id for p in train_pairs}
    out.write_part(
        "split",
        pa.table(
            {
                "pair_id": [p.pair_id for p in good],
                "query_id": [p.query_id for p in good],
                "category": [p.category for p in good],
                "split": ["train" if p.pair_id in train_ids else "heldout" for p in good],
            }
        ),
    )
    cfg = plan_steps(cfg, len(train_pairs))
    trained = train(cfg, out)  # workers read the train split themselves
    heldout = evaluate_heldout(
        cfg, trained["model_dir"], held, out.local_path("heldout_items.parquet")
    )
    Path(out.local_path("heldout.json")).write_text(json.dumps(heldout, indent=2))
    manifest = out.finish(
        len(rows),
        len(good),
        len(bad),
        steps=trained["steps"],
        heldout=heldout,
        model_dir=trained["model_dir"],
    )
    print(
        f"train-reward: {len(train_pairs)} train / {len(held)} held-out pairs "
        f"({len(bad)} quarantined), {trained['steps']} steps, held-out "
        f"{overall_line(heldout.get('table', {}))}; model in {trained['model_dir']}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("train-reward", TrainRewardConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
