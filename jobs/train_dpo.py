"""MM-DPO (paper Sec. 4) on Ray Train + DeepSpeed: dynamic reward scaling, grouped pairs.

Reads the preference pairs with reference log-probs (``ref-logps``; without them an
online reference is used and the run says so), groups them by query, holds out a
fraction of the queries, and trains the policy (the SFT policy by default) with the
shared harness ``harness/trainer.py``: ZeRO-2/3, frozen vision tower (projector and LLM
train), gradient accumulation, Ray Train checkpoints, resume after a killed worker.
Each micro-batch is a set of queries; each query's K responses are forwarded once
(vision features once per query) and all its pairs take their log-probs from them.

Writes ``<run_dir>/train-dpo/``: ``policy/`` (Hugging Face checkpoint), ``metrics.csv``
(per step: loss, reward accuracy/margin, beta mean/std, pairs/queries/responses),
``beta_hist.png`` (the beta(delta) distribution), ``data/pairs.parquet`` (every pair:
split, margin, beta) and the manifest with held-out preference accuracy.

    ray job submit --working-dir . -- python jobs/train_dpo.py --config configs/train-dpo.yaml
    mmrlhf train-dpo run_dir=runs/demo loss.kind=dpo     # a Table 4 baseline
"""

import sys
from functools import partial

import pyarrow as pa

from mmrlhf_ray.cli import parse_stage_args
from mmrlhf_ray.config import ConfigError
from mmrlhf_ray.dpo.config import DpoConfig
from mmrlhf_ray.dpo.evaluate import evaluate_heldout, heldout_line
from mmrlhf_ray.dpo.io import (
    load_split_groups,
    margin_sources,
    read_pair_rows,
    resolve_pairs_stage,
    resolve_policy,
)
from mmrlhf_ray.dpo.train_task import DpoLoss, collate_queries, encode_query, query_modality
from mmrlhf_ray.groups import count_pairs, group_pairs, split_groups
from mmrlhf_ray.models.settings import EncodingMismatch, EncodingSettings, require_same_encoding
from mmrlhf_ray.outcomes import item_table, write_items
from mmrlhf_ray.stage import StageDir, StageInputError, begin_stage


def choose_input(cfg: DpoConfig) -> tuple[StageDir, bool]:
    """(pair stage to read, online reference?) following ``pairs_stage`` and ``reference``."""
    if cfg.reference == "online" or not cfg.loss.needs_reference:
        return resolve_pairs_stage(
            cfg.run_dir, cfg.pairs_stage, ("ref-logps", "score", "pairs")
        ), cfg.loss.needs_reference
    if cfg.pairs_stage in ("auto", "ref-logps") and StageDir(cfg.run_dir, "ref-logps").is_done():
        return StageDir(cfg.run_dir, "ref-logps"), False
    if cfg.reference == "precomputed":
        raise StageInputError(
            f"reference=precomputed but ref-logps has not finished in "
            f"{cfg.run_dir}: run `mmrlhf ref-logps run_dir={cfg.run_dir}`"
        )
    print(
        "train-dpo: WARNING no precomputed reference log-probs (ref-logps not finished): "
        "falling back to an ONLINE reference model (2 models per worker, slower)"
    )
    return resolve_pairs_stage(cfg.run_dir, cfg.pairs_stage, ("score", "pairs")), True


def check_encoding(cfg: DpoConfig, src: StageDir, policy: str, online: bool) -> None:
    """Refuse to train on reference log-probs taken over other inputs than training's."""
    if online or src.stage != "ref-logps":
        return
    mine = EncodingSettings.of(policy, cfg.max_response_tokens, cfg.max_frames)
    try:
        require_same_encoding(mine, (src.read_manifest() or {}).get("encoding"))
    except EncodingMismatch as exc:
        raise ConfigError(str(exc)) from None


def pair_table(train, held, cfg: DpoConfig) -> pa.Table:
    """Every used pair with its split, margin and the beta MM-DPO gives it."""
    import torch

    from mmrlhf_ray.losses import dynamic_beta

    rows = []
    for split, groups in (("train", train), ("heldout", held)):
        for g in groups:
            for p in g.pairs:
                rows.append(
                    {
                        "pair_id": p.pair_id,
                        "query_id": g.query_id,
                        "split": split,
                        "margin": p.margin,
                    }
                )
    margins = torch.tensor([float("nan") if r["margin"] is None else r["margin"] for r in rows])
    if cfg.loss.kind == "mm_dpo" and cfg.loss.needs_margin:
        betas = dynamic_beta(torch.nan_to_num(margins), cfg.loss.beta_ori, cfg.loss.w, cfg.loss.k)
    else:
        betas = torch.full_like(margins, cfg.loss.beta_ori)
    for r, b in zip(rows, betas.tolist(), strict=True):
        r["beta"] = b
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("pair_id", pa.string()),
                ("query_id", pa.string()),
                ("split", pa.string()),
                ("margin", pa.float32()),
                ("beta", pa.float32()),
            ]
        ),
    )


def heldout_of(cfg: DpoConfig, out: StageDir, policies: dict, held, online: bool) -> dict:
    """Held-out metrics before / after (paired), per-pair outcomes to heldout_items.parquet."""
    heldout, items = evaluate_heldout(
        policies,
        held,
        online,
        cfg.loss.beta_ori,
        max_response_tokens=cfg.max_response_tokens,
        max_frames=cfg.max_frames,
        forward=cfg.forward,
    )
    if items:
        write_items(out.local_path("heldout_items.parquet"), item_table(items))
    return heldout


def run(cfg: DpoConfig) -> dict:
    """The stage: MM-DPO (or a baseline loss) on the pairs, then held-out metrics."""
    src, online = choose_input(cfg)
    policy = resolve_policy(cfg.run_dir, cfg.policy)
    check_encoding(cfg, src, policy, online)
    out, done = begin_stage(cfg, "train-dpo", inputs=[src], other_inputs={"policy": policy})
    if done:
        return out.read_manifest()
    rows = read_pair_rows(src)
    need_margin, need_ref = cfg.loss.needs_margin, cfg.loss.needs_reference and not online
    groups, bad = group_pairs(rows, src.stage, need_margin=need_margin, need_ref=need_ref)
    out.write_quarantine("input", bad)
    train, held = split_groups(groups, cfg.heldout_fraction, seed=0)
    needed = cfg.train.num_workers * cfg.train.micro_batch_size
    if len(train) < needed:
        reasons = sorted({q["field"] for q in bad})
        raise ConfigError(
            f"train-dpo: {len(train)} training queries, fewer than workers x "
            f"micro_batch_size = {needed} ({len(bad)} pairs quarantined, fields "
            f"{reasons}; see {out.quarantine_dir})"
        )
    responses = sum(len(g.responses) for g in train)
    print(
        f"train-dpo: {len(train)} train / {len(held)} held-out queries, {count_pairs(train)} "
        f"train pairs from {responses} responses ({2 * count_pairs(train)} sequences if "
        f"forwarded per pair); margins: {margin_sources(rows)}; loss {cfg.loss.kind}"
    )
    if src.stage == "ref-logps":
        check_forward_kind(cfg, src, train, policy)
    task = dpo_task(cfg, policy, src.stage, need_margin, need_ref, online)
    from harness.runtime import init_ray
    from harness.trainer import run_training

    init_ray()
    result = run_training(
        task,
        cfg.train,
        name=f"train-dpo-{out.attempt_key()}",
        storage_path=out.path("ray"),
        output_dir=out.local_path("policy"),
        metrics_csv=out.local_path("metrics.csv"),
    )
    table = pair_table(train, held, cfg)
    out.write_part("pairs", table)
    _plot(out, table, cfg)
    heldout = heldout_of(cfg, out, {"before": policy, "after": result.hf_dir}, held, online)
    last = result.metrics[-1] if result.metrics else {}
    manifest = out.finish(
        len(rows),
        table.num_rows,
        len(bad),
        policy=result.hf_dir,
        steps=result.steps,
        online_reference=online,
        heldout=heldout,
        last_step=last,
        pairs_from=src.stage,
    )
    print(
        f"train-dpo: {result.steps} steps, last loss {last.get('loss', float('nan')):.4f}, "
        f"{heldout_line(heldout)} -> {result.hf_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("train-dpo", DpoConfig, argv, __doc__))
    return 0


def check_forward_kind(
    cfg: DpoConfig, src: StageDir, train: list, policy: str, n_queries: int = 2
) -> None:
    """ref-logps and train-dpo use the same forward kind, or their log-probs agree:
    with different kinds, a few queries are re-scored under the reference policy."""
    made = src.read_manifest() or {}
    kind = made.get("config", {}).get("forward", "grouped")  # before the switch: grouped
    if kind == cfg.forward or not train:
        return
    from mmrlhf_ray.dpo.reference import check_reference_logps
    from mmrlhf_ray.models import load_policy

    model, processor = load_policy(made.get("inputs", {}).get("policy") or policy)
    worst = check_reference_logps(
        model, processor, train[:n_queries], cfg.forward, cfg.max_response_tokens, cfg.max_frames
    )
    print(
        f"train-dpo: reference log-probs from forward={kind}, training with "
        f"forward={cfg.forward}: equal on {min(n_queries, len(train))} queries "
        f"(max |diff| {worst:.2e})"
    )


def dpo_task(
    cfg: DpoConfig, policy: str, stage: str, need_margin: bool, need_ref: bool, online: bool
):
    from harness.trainer import TrainTask

    return TrainTask(
        model_path=policy,
        rows=partial(
            load_split_groups,
            cfg.run_dir,
            stage,
            need_margin,
            need_ref,
            cfg.heldout_fraction,
            "train",
        ),
        encode=partial(
            encode_query, max_response_tokens=cfg.max_response_tokens, max_frames=cfg.max_frames
        ),
        collate=partial(collate_queries, forward=cfg.forward),
        loss_fn=DpoLoss(cfg.loss, cfg.train.freeze_vision, policy if online else ""),
        group_key=query_modality,
    )


def _plot(out: StageDir, table: pa.Table, cfg: DpoConfig) -> None:
    from mmrlhf_ray.dpo.metrics import plot_beta_histogram

    train = [r for r in table.to_pylist() if r["split"] == "train"]
    plot_beta_histogram(
        [r["beta"] for r in train],
        [float("nan") if r["margin"] is None else r["margin"] for r in train],
        out.local_path("beta_hist.png"),
        cfg.loss.beta_ori,
        cfg.loss.w,
    )


if __name__ == "__main__":
    sys.exit(main())
