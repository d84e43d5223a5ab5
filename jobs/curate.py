"""Curate the pool: CLIP-embed on a Ray Data actor pool, faiss k-means, ratio sampling.

The paper's data selection (Sec. 2.2, Fig. 2-3, Table 1). Reads the pool parts of the
``toyworld`` (or ``import``) stage and writes ``<run_dir>/curate/``:

* ``embeddings/<shard>.parquet``: sample_id, category, float16 embedding of every
  good row (one part per pool shard: a re-run skips shards already embedded);
* ``quarantine/<shard>.parquet``: rows that could not be embedded, with field + reason;
* ``data/<shard>.parquet``: the selected pool rows plus ``cluster_id`` and ``category``;
* ``report/``: composition before/after (Table 1, md + csv), per-cluster counts, the
  cluster map (Fig. 3, PNG), ``decontamination.{md,csv}`` (the pool checked against
  every evaluation set: per set the count and the matched ids, also in the manifest);
  ``centroids.npy``; ``manifest.json`` with counts in = selected + unselected +
  quarantined (rows dropped as contaminated are quarantined with the matched item).

    mmrlhf curate --config configs/curate.yaml run_dir=runs/demo
    ray job submit --working-dir . -- python jobs/curate.py --config configs/curate.gpu.yaml run_dir=s3://bucket/run
"""

from __future__ import annotations

import sys
import time

import pyarrow.parquet as pq
from tqdm import tqdm

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.stage import StageDir, begin_stage
from mmrlhf_ray.curation.config import CurateConfig
from mmrlhf_ray.curation.pipeline import (
    ShardCollector,
    cluster_and_select,
    embedding_fingerprint,
    embeddings_path,
    exact_image_mask,
    has_embeddings,
    reset_if_stale,
    write_curation_report,
    write_selected,
)
from mmrlhf_ray.curation.screening import PoolScreen, load_reference


def build_embed_dataset(cfg: CurateConfig, src: StageDir, pending: list[str]):
    """Ray Data: pool work units -> rows -> ``ClipEmbedder`` on an actor pool."""
    import ray

    from actors.clip_embedder import ClipEmbedder, read_units

    # One work unit per (shard, row group): a unit is one block, one actor task, so the
    # actors share the work even when there are few shards.
    units = []
    for s in pending:
        path = src.path("data", f"{s}.parquet")
        groups = pq.ParquetFile(path, filesystem=src.fs).metadata.num_row_groups
        units += [{"path": path, "row_group": g} for g in range(groups)]
    e = cfg.embed
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map_batches(
        read_units, fn_kwargs={"filesystem": src.fs}, batch_size=1, batch_format="pyarrow",
        num_cpus=0.5,
    )  # fmt: skip
    model = {"model_name": e.model_name, "model_path": e.model_path, "weights": e.weights,
             "seed": e.model_seed, "threads": e.threads, "device": e.device}  # fmt: skip
    limits = {"max_side": e.max_side, "max_pixels": e.max_pixels,
              "long_threshold": cfg.long_threshold}  # fmt: skip
    return ds.map_batches(
        ClipEmbedder,
        fn_constructor_kwargs={**model, **limits, "fail_marker": e.fail_marker},
        batch_format="pyarrow",
        batch_size=e.batch_size,
        num_cpus=e.num_cpus,
        num_gpus=e.num_gpus or None,
        compute=ray.data.ActorPoolStrategy(size=e.pool_size),
    )


def embed_pending(cfg: CurateConfig, out: StageDir, src: StageDir, expected: dict[str, int]) -> int:
    """Embed every pool shard without an embeddings part; returns how many shards ran.

    Output batches reach the driver in any order; ``ShardCollector`` writes a shard's
    parts once all its rows are back and raises on a duplicate (exactly-once output).
    """
    pending = [s for s in expected if not has_embeddings(out, s)]
    collector = ShardCollector(out, {s: expected[s] for s in pending}, cfg.input_stage)
    for shard in [s for s in pending if expected[s] == 0]:
        collector.write_empty(shard)
    pending = [s for s in pending if expected[s] > 0]
    if not pending:
        return 0
    from harness.runtime import init_ray

    init_ray()
    ds = build_embed_dataset(cfg, src, pending)
    total = sum(expected[s] for s in pending)
    with tqdm(total=total, desc="curate: embed", unit="row") as bar:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            collector.add(batch)
            bar.update(batch.num_rows)
    missing = collector.missing()
    if missing:
        raise RuntimeError(f"curate: rows never came back from the embedder: {missing}")
    return len(pending)


def select_and_report(
    cfg: CurateConfig, out: StageDir, src: StageDir, shards: list[str], expected: dict[str, int]
) -> dict:
    """Cluster, sample, write the selected rows and the report; returns the manifest.

    Counts are taken independently (pool footers, embeddings parts, quarantine parts,
    selected parts) and ``finish`` checks in = selected + unselected + quarantined.
    """
    emb_paths = [embeddings_path(out, s) for s in shards]
    pool_paths = [src.path("data", f"{s}.parquet") for s in shards]
    eligible = exact_image_mask(emb_paths, out.fs) if cfg.image_dedup else None
    screen = None
    if cfg.decontaminate.mode != "off":
        ref, names = load_reference(cfg.run_dir, cfg.decontaminate, cfg.embed, cfg.embed.max_side)
        screen = PoolScreen(cfg.decontaminate, ref, names)
        screen.screen_parts(emb_paths, pool_paths, out.fs, src.fs)
    with tqdm(total=sum(expected.values()), desc="curate: assign", unit="row") as bar:
        curated = cluster_and_select(
            emb_paths,
            cfg.cluster,
            cfg.image_size,
            cfg.ratio.as_dict(),
            {"safety": cfg.safety_count, "video": cfg.video_count},
            cfg.seed,
            out.fs,
            progress=bar.update,
            eligible=eligible,
            screen=screen,
            counts=cfg.image_counts or None,
        )
    selected = write_selected(out, shards, pool_paths, curated, src.fs)
    decontam = (
        screen.finish(out, emb_paths, curated.selection.indices, cfg.input_stage)
        if screen is not None
        else {"mode": "off"}
    )
    quarantined = out.count_rows(quarantine=True)  # dropped contaminated rows included
    removed = decontam.get("rows_removed", 0)
    unselected = int(curated.assignment.offsets[-1]) - selected - removed  # embedded, not chosen
    rows_in = sum(expected.values())
    report = write_curation_report(out, curated, quarantined, cfg.map_points, cfg.seed)
    manifest = out.finish(
        rows_in,
        selected,
        quarantined,
        rows_unselected=unselected,
        clusters=int(len(curated.centres)),
        duplicates=0 if eligible is None else int((~eligible).sum()),
        targets=curated.selection.targets,
        available=curated.selection.available,
        selected_per_category=report["selected_per_category"],
        map_method=report["map_method"],
        timings={k: round(v, 3) for k, v in curated.timings.items()},
        decontamination=decontam,
    )
    return manifest


def run(cfg: CurateConfig) -> dict:
    """The stage: embed the pool (resumable by shard), cluster, sample per category."""
    # keep_parts: embeddings are kept across config changes that do not touch them
    out, done = begin_stage(cfg, "curate", inputs=[cfg.input_stage], keep_parts=True)
    if done:
        return out.read_manifest()
    src = StageDir(cfg.run_dir, cfg.input_stage)
    shards = src.part_names()
    expected = {
        s: pq.ParquetFile(src.path("data", f"{s}.parquet"), filesystem=src.fs).metadata.num_rows
        for s in shards
    }
    src.check_rows_read(sum(expected.values()))  # rows in = rows out of the input stage
    if reset_if_stale(out, embedding_fingerprint(cfg.embed, cfg.long_threshold, src.fingerprint())):
        print("curate: earlier parts were made from another model/pool: deleted, starting over")
    start = time.perf_counter()
    embedded = embed_pending(cfg, out, src, expected)
    embed_s = time.perf_counter() - start

    manifest = select_and_report(cfg, out, src, shards, expected)
    manifest["shards_embedded"] = embedded
    manifest["timings"]["embed"] = round(embed_s, 3)
    out.write_manifest(manifest)
    counts, report = manifest["counts"], manifest["selected_per_category"]
    rows_in, selected = counts["in"], counts["out"]
    unselected, quarantined = counts.get("unselected", 0), counts["quarantined"]
    mix = ", ".join(f"{c} {n}" for c, n in report.items())
    print(
        f"curate: {rows_in} rows in -> {selected} selected ({mix}), {unselected} unselected, "
        f"{quarantined} quarantined; {manifest['clusters']} clusters; wrote {out.data_dir}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("curate", CurateConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
