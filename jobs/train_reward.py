"""Train the critique reward model (paper Sec. 3.2) with Ray Train + DeepSpeed.

Reads preference pairs (``pairs`` stage, or ``expand`` with enriched critiques), splits
them by query into train / held-out, trains ``l_Total = w_c * l_Critique (Eq. 2) +
w_s * l_Score (Eq. 3) [+ tie + centering]`` with teacher forcing on the ground-truth
critiques, through the shared harness (``harness/trainer.py``: ZeRO-2/3, checkpoints,
resume after a killed worker), then scores the held-out pairs (ACC / ACC+ per category).

Writes ``<run_dir>/train-reward/``: ``model/`` (HF backbone + processor +
``reward_head.safetensors``), ``data/split.parquet`` (pair_id -> train | heldout),
``heldout.json`` (ACC/ACC+), ``metrics.csv``, the Ray Train run under ``ray/``.
With ``folds=k`` (k >= 2) it also trains k fold models, model j on the training pairs of
every query fold but j (``mmrlhf_ray.reward.folds.fold_of``), into ``folds/fold-j/model``;
the split part gets a ``fold`` column and the manifest lists, per model, the folds it was
trained on (``score margins=out-of-fold`` reads it).

    mmrlhf train-reward run_dir=runs/demo
    mmrlhf train-reward run_dir=runs/demo critique_source=none loss.critique=0   # w/o Task 1
    mmrlhf train-reward run_dir=runs/demo folds=2   # + 2 fold models for out-of-fold margins
    ray job submit --working-dir . -- python jobs/train_reward.py --config configs/train-reward.gpu.yaml run_dir=s3://bucket/run
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
from pathlib import Path

import pyarrow as pa

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import config_to_dict
from mmrlhf_ray.core.stage import StageDir, begin_stage
from mmrlhf_ray.evaluation.outcomes import item_table, write_items
from mmrlhf_ray.evaluation.reward_bench import (
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
    load_fold_rows,
    load_split_rows,
    pairs_from_rows,
    reward_loss_fn,
    split_pairs,
)
from mmrlhf_ray.reward.folds import fold_of
from mmrlhf_ray.reward.items import RewardMeta
from mmrlhf_ray.reward.model import load_reward_model, save_reward_model


def backbone_dir(cfg: TrainRewardConfig) -> str:
    return cfg.backbone or str(Path(cfg.run_dir) / "build-models" / "policy")


def _abs(run_dir: str) -> str:
    """Workers may start elsewhere: give them an absolute local path (URIs as is)."""
    return run_dir if "://" in run_dir else str(Path(run_dir).resolve())


def reward_meta(cfg: TrainRewardConfig, backbone: str) -> RewardMeta:
    from transformers import AutoConfig

    from mmrlhf_ray.data.prompts import CRITIQUE_PROMPT

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


def train(cfg: TrainRewardConfig, out: StageDir, fold: int | None = None):
    """Run the harness; returns its ``TrainResult`` and the tracking target.

    ``fold`` j: the fold model, trained on the training pairs of every fold but j."""
    from harness.launch import train_stage
    from harness.trainer import TrainTask

    backbone = backbone_dir(cfg)
    meta = reward_meta(cfg, backbone)
    task = TrainTask(
        model_path=backbone,
        rows=functools.partial(load_split_rows, _abs(cfg.run_dir), cfg.pairs_stage, "train")
        if fold is None
        else functools.partial(load_fold_rows, _abs(cfg.run_dir), cfg.pairs_stage, fold),
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
    # The Ray Train run is keyed by config and inputs: the same attempt resumes after a
    # crash, a changed config (another ablation in the same run dir) starts afresh.
    return train_stage(
        out,
        task,
        cfg.train,
        cfg.tracking,
        output="model",
        params=config_to_dict(cfg),
        sub="" if fold is None else f"folds/fold-{fold}",
    )


def evaluate_heldout(cfg: TrainRewardConfig, model_dir: str, held: list, items_path: str) -> dict:
    """ACC / ACC+ per category (with 95% intervals) of the trained model on the held-out
    pairs; the per-pair outcomes go to ``items_path`` (Parquet, ``mmrlhf_ray.evaluation.outcomes``)."""
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


def train_folds(cfg: TrainRewardConfig, out: StageDir, folds: dict[str, int]) -> dict:
    """The k fold models (``folds``: pair_id -> fold of its query, training pairs only)."""
    from harness.launch import finish_tracking

    models = []
    for j in range(cfg.folds):
        n_train = sum(1 for f in folds.values() if f != j)
        fold_cfg = plan_steps(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train)), n_train
        )
        result, target = train(fold_cfg, out, fold=j)
        finish_tracking(target, result)
        models.append(
            {
                "fold": j,
                "model_dir": result.hf_dir,
                "trained_on_folds": [f for f in range(cfg.folds) if f != j],
                "train_pairs": n_train,
                "steps": result.steps,
            }
        )
    return {"k": cfg.folds, "seed": cfg.fold_seed, "models": models}


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
    split = {
        "pair_id": [p.pair_id for p in good],
        "query_id": [p.query_id for p in good],
        "category": [p.category for p in good],
        "split": ["train" if p.pair_id in train_ids else "heldout" for p in good],
    }
    if cfg.folds:
        split["fold"] = [fold_of(q, cfg.folds, cfg.fold_seed) for q in split["query_id"]]
    out.write_part("split", pa.table(split))
    ties = sum(p.is_tie for p in train_pairs)
    if cfg.loss.tie > 0 and not ties:
        print(
            f"train-reward: WARNING loss.tie={cfg.loss.tie} acts on no pair: no tie pairs "
            "(`mmrlhf pairs ties=carry`, or a release whose pairs set is_tie)"
        )
    fold_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train))
    cfg = plan_steps(cfg, len(train_pairs))
    from harness.launch import finish_tracking

    result, target = train(cfg, out)  # workers read the train split themselves
    folds = None
    if cfg.folds:
        of_train = {p.pair_id: fold_of(p.query_id, cfg.folds, cfg.fold_seed) for p in train_pairs}
        folds = train_folds(fold_cfg, out, of_train)
    # a tie has no right answer: ACC / ACC+ are over the held-out preference pairs
    preference = [p for p in held if not p.is_tie]
    heldout = evaluate_heldout(
        cfg, result.hf_dir, preference, out.local_path("heldout_items.parquet")
    )
    Path(out.local_path("heldout.json")).write_text(json.dumps(heldout, indent=2))
    manifest = out.finish(
        len(rows),
        len(good),
        len(bad),
        steps=result.steps,
        tie_pairs={"train": ties, "heldout": sum(p.is_tie for p in held)},
        heldout=heldout,
        model_dir=result.hf_dir,
        **({"folds": folds} if folds else {}),
        **finish_tracking(target, result, {"heldout": heldout.get("table", {})}),
    )
    print(
        f"train-reward: {len(train_pairs)} train / {len(held)} held-out pairs "
        f"({len(bad)} quarantined), {result.steps} steps, held-out "
        f"{overall_line(heldout.get('table', {}))}; model in {result.hf_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("train-reward", TrainRewardConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
