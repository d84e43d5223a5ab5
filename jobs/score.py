"""Score every preference pair through the reward service: margin δ per pair.

Reads the ``pairs`` stage, groups pairs per query so each distinct response is scored
once (one ``/v1/compare`` per query), and writes the pairs with
``margin = r(chosen) - r(rejected)`` and ``margin_source = "reward-service"`` into
``<run_dir>/score/data/part-*.parquet``, one part per ``queries_per_part`` queries.
Service failures are retried with backoff; if they persist the stage stops with an
error (finished parts are kept, a re-run does only the rest); never a silent 0.
Rows the service refuses (4xx) or that fail validation are quarantined.

The service is reached over HTTP (``url``, default: the URL in serve-reward's
manifest), inside the cluster through a Serve handle (``via=handle``), or replaced by
the train-reward model loaded in this process (``via=local``).

``margins=out-of-fold`` (after ``train-reward folds=k``): each query is scored by the
fold model that was trained without its fold (loaded here, one per fold), and by the
service for comparison; the part holds the out-of-fold δ (``margin_source`` =
``reward-oof/fold-j``), ``oof/part-*.parquet`` both margins per pair, and the manifest and
``report/out_of_fold.md`` how they differ (mean |δ|, correlations, pairs whose β moves).

    ray job submit --working-dir . -- python jobs/score.py --config configs/score.yaml via=handle
    mmrlhf score run_dir=runs/demo margins=out-of-fold   # after train-reward folds=2
    mmrlhf score run_dir=runs/demo
"""

import os
import sys
from pathlib import Path

from tqdm import tqdm

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, StageInputError, begin_stage
from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.service.client import chunk, score_groups
from mmrlhf_ray.service.config import ScoreConfig


def make_client(cfg: ScoreConfig):
    """An HTTP, handle or in-process client of the reward model, as configured."""
    if cfg.via == "local":
        from mmrlhf_ray.reward.folds import LocalRewardClient

        return LocalRewardClient(str(Path(cfg.run_dir) / "train-reward" / "model"))
    if cfg.via == "handle":
        from harness.runtime import init_ray
        from serve.client import HandleRewardClient

        init_ray()
        return HandleRewardClient.for_app(cfg.app_name, cfg.timeout_s)
    from serve.client import HttpRewardClient

    url = cfg.url or (StageDir(cfg.run_dir, "serve-reward").read_manifest() or {}).get("url")
    if not url:
        raise StageInputError(
            "score: no url= given and no serve-reward manifest with a URL: run "
            f"`mmrlhf serve-reward run_dir={cfg.run_dir} detach=true` first"
        )
    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    return HttpRewardClient(url, token, cfg.timeout_s)


def fold_models(cfg: ScoreConfig) -> tuple[dict, list]:
    """train-reward's fold manifest and one in-process client per fold model."""
    from mmrlhf_ray.reward.folds import LocalRewardClient

    folds = (StageDir(cfg.run_dir, "train-reward").read_manifest() or {}).get("folds")
    if not folds:
        raise StageInputError(
            "score margins=out-of-fold: train-reward has no fold models: run "
            f"`mmrlhf train-reward run_dir={cfg.run_dir} folds=2` first"
        )
    return folds, [LocalRewardClient(m["model_dir"]) for m in folds["models"]]


def write_oof_report(out: StageDir, folds: dict) -> dict:
    """Both margins of every pair -> the manifest's summary and report/out_of_fold.md."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmrlhf_ray.dpo.config import LossConfig
    from mmrlhf_ray.reward.folds import compare_summary, summary_markdown

    names = out.part_names()  # this attempt's parts (a stale oof file is never read)
    table = pa.concat_tables(
        [pq.read_table(out.path("oof", f"{n}.parquet"), filesystem=out.fs) for n in names]
    )
    loss = LossConfig()  # train-dpo's beta(delta) defaults
    summary = compare_summary(
        table.column("margin_in").to_pylist(),
        table.column("margin_oof").to_pylist(),
        loss.beta_ori,
        loss.w,
        loss.k,
    )
    per_fold = table.column("fold").to_pylist()
    summary["pairs_per_fold"] = {j: per_fold.count(j) for j in range(int(folds["k"]))}
    report = Path(out.local_path("report/out_of_fold.md"))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(summary_markdown(summary))
    return summary


def score_part(cfg: ScoreConfig, out: StageDir, i: int, groups: list, client, oof) -> None:
    """Score one part (its quarantine first, then its data: the part marks it done)."""
    if oof is None:
        scored, rejected = score_groups(
            groups, client.compare, cfg.retry, cfg.concurrency, cfg.max_frames
        )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from mmrlhf_ray.reward.folds import score_out_of_fold

        folds, fold_clients = oof
        scored, rejected, compared = score_out_of_fold(
            groups, client.compare, [c.compare for c in fold_clients], folds, cfg.retry,
            cfg.concurrency, cfg.max_frames,
        )  # fmt: skip
        out.fs.create_dir(out.path("oof"), recursive=True)
        pq.write_table(pa.Table.from_pylist(compared), out.path("oof", f"part-{i:05d}.parquet"),
                       filesystem=out.fs)  # fmt: skip
    out.write_quarantine(f"part-{i:05d}", rejected)
    out.write_part(f"part-{i:05d}", to_table(scored, "pair"))


def run(cfg: ScoreConfig) -> dict:
    """The stage: margins of every pair from the reward service, part by part."""
    # Margins of other pairs (or another config) would be mixed in: begin() drops them.
    oof_mode = cfg.margins == "out-of-fold"
    inputs = ["pairs", "train-reward"] if oof_mode else ["pairs"]
    out, done = begin_stage(cfg, "score", inputs=inputs)
    if done:
        return out.read_manifest()
    pairs = StageDir(cfg.run_dir, "pairs")
    rows = pairs.read().to_pylist()
    groups, bad = group_pairs(rows, critiques=cfg.use_pair_critiques, keep_rows=True)
    out.write_quarantine("input", bad)
    client = make_client(cfg)
    oof = fold_models(cfg) if oof_mode else None
    parts = chunk(groups, cfg.queries_per_part)
    todo = [i for i in range(len(parts)) if not out.has_part(f"part-{i:05d}")]
    with tqdm(total=sum(len(parts[i]) for i in todo), desc="score: queries", unit="q") as bar:
        for i in todo:
            score_part(cfg, out, i, parts[i], client, oof)
            bar.update(len(parts[i]))
    client.close()
    n_out, n_bad = out.count_rows(), out.count_rows(quarantine=True)
    extra = {"out_of_fold": write_oof_report(out, oof[0])} if oof else {}
    manifest = out.finish(len(rows), n_out, n_bad, queries=len(groups), parts=len(parts), **extra)
    print(
        f"score: {n_out} pairs of {len(groups)} queries scored ({len(todo)} of {len(parts)} "
        f"parts this run), {n_bad} quarantined -> {out.data_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("score", ScoreConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
