"""Generate the synthetic shapes world: the raw query pool, the held-out benchmark and,
optionally, oracle-annotated records answered by the simulated models.

Writes (all Parquet, every row a pure function of ``seed``):

* ``<run_dir>/toyworld/data/pool-00000.parquet`` ...  the pool (``POOL_SCHEMA``);
* ``<run_dir>/toyworld/benchmark/data/bench-00000.parquet`` ... held-out benchmark,
  a sub-stage ``StageDir(run_dir, "toyworld/benchmark")`` with its own manifest;
* ``<run_dir>/toyworld/records/data/records-00000.parquet`` ... when ``records_size > 0``
  (``RECORD_SCHEMA``), sub-stage ``StageDir(run_dir, "toyworld/records")``.

Shards are streamed one at a time (bounded memory) and skipped when already written,
so an interrupted run resumes; a finished run with the same config does nothing. With
``workers > 1`` the shards are shared out to that many Ray tasks (for 10M-row pools on
a cluster); the bytes written are the same either way.

    ray job submit --working-dir . -- python jobs/toyworld.py --config configs/toyworld.yaml
    mmrlhf toyworld run_dir=runs/demo pool_size=3000 benchmark_size=200
"""

from __future__ import annotations

import sys

from mmrlhf_ray.core.cli import parse_stage_args
from mmrlhf_ray.core.config import config_to_dict
from mmrlhf_ray.core.stage import StageDir, begin_stage
from mmrlhf_ray.toyworld.config import ToyWorldConfig
from mmrlhf_ray.toyworld.writer import (
    merge_stats,
    shard_ranges,
    write_benchmark,
    write_pool,
    write_records,
)

BENCHMARK_STAGE = "toyworld/benchmark"
RECORDS_STAGE = "toyworld/records"


def _write_share(writer, run_dir: str, stage: str, kwargs: dict, shards: list[int]) -> dict:
    """One writer's share of the shards (runs in-process or as a Ray task)."""
    return writer(StageDir(run_dir, stage), shards=shards, **kwargs)


def _write(cfg: ToyWorldConfig, writer, stage: str, n: int, **kwargs) -> dict:
    """Write ``n`` rows of ``stage`` with ``writer``: in-process, or over ``cfg.workers``
    Ray tasks that each take every ``workers``-th shard (shards are independent)."""
    kwargs.update(n=n, rows_per_shard=cfg.rows_per_shard, seed=cfg.seed)
    kwargs.update(size=cfg.image_size, frames=cfg.video_frames)
    n_shards = len(shard_ranges(n, cfg.rows_per_shard))
    if cfg.workers <= 1 or n_shards <= 1:
        return _write_share(writer, cfg.run_dir, stage, kwargs, list(range(n_shards)))
    import ray

    from harness.runtime import init_ray

    init_ray()
    task = ray.remote(num_cpus=1)(_write_share)
    shares = [list(range(w, n_shards, cfg.workers)) for w in range(min(cfg.workers, n_shards))]
    return merge_stats(
        ray.get([task.remote(writer, cfg.run_dir, stage, kwargs, s) for s in shares])
    )


def _sub_stage(cfg: ToyWorldConfig, stage: str, config: dict, n: int, writer, **kwargs) -> dict:
    """Run one sub-stage (benchmark / records) unless it is already done."""
    out = StageDir(cfg.run_dir, stage)
    if out.skip_if_done(config):
        return out.read_manifest()
    out.begin(config)
    stats = _write(cfg, writer, stage, n, **kwargs)
    return out.finish(
        n,
        stats["rows_out"],
        stats["rows_quarantined"],
        shards=stats["shards"],
        categories=stats["categories"],
    )


def run(cfg: ToyWorldConfig) -> dict:
    """The stage: pool, held-out benchmark and (optionally) records, resumable by shard."""
    out, done = begin_stage(cfg, "toyworld")
    if done:
        return out.read_manifest()
    config = config_to_dict(cfg)
    pool = _write(cfg, write_pool, "toyworld", cfg.pool_size, mix=cfg.mix.as_dict())
    bench = _sub_stage(cfg, BENCHMARK_STAGE, config, cfg.benchmark_size, write_benchmark)
    records = None
    if cfg.records_size:
        records = _sub_stage(
            cfg,
            RECORDS_STAGE,
            config,
            cfg.records_size,
            write_records,
            models=cfg.record_models,
            per_model=cfg.responses_per_model,
            mix=cfg.mix.as_dict(),
        )
    manifest = out.finish(
        cfg.pool_size,
        pool["rows_out"],
        pool["rows_quarantined"],
        shards=pool["shards"],
        shards_skipped=pool["shards_skipped"],
        categories=pool["categories"],
        benchmark={
            "stage": BENCHMARK_STAGE,
            "counts": bench["counts"],
            "categories": bench["categories"],
        },
        records=None if records is None else {"stage": RECORDS_STAGE, "counts": records["counts"]},
    )
    print(
        f"toyworld: pool {pool['rows_out']} rows in {pool['shards']} shards "
        f"({pool['shards_skipped']} resumed) {pool['categories']}, quarantined "
        f"{pool['rows_quarantined']}; benchmark {bench['counts']['out']} rows; records "
        f"{0 if records is None else records['counts']['out']}; under {out.root}"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    run(parse_stage_args("toyworld", ToyWorldConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
