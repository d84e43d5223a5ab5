"""Streaming shards: exact counts at 10k rows, memory flat in n, resume, and the stage job."""

from __future__ import annotations

import json
import os
import tracemalloc

import pyarrow.parquet as pq
import pytest

from jobs import toyworld as job
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.toyworld import generate_pool, write_pool


def _peak_bytes(run_dir, n: int) -> tuple[int, dict]:
    tracemalloc.start()
    stats = write_pool(StageDir(str(run_dir), "toyworld"), n, rows_per_shard=500, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, stats


def test_10k_pool_exact_counts_and_memory_does_not_scale_with_n(tmp_path):
    write_pool(StageDir(str(tmp_path / "warm"), "toyworld"), 20, rows_per_shard=10)  # lazy imports
    peak_2k, _ = _peak_bytes(tmp_path / "a", 2_000)
    peak_10k, stats = _peak_bytes(tmp_path / "b", 10_000)
    out = StageDir(str(tmp_path / "b"), "toyworld")
    assert stats["rows_out"] == 10_000 and stats["rows_quarantined"] == 0 and stats["shards"] == 20
    assert out.part_names() == [f"pool-{k:05d}" for k in range(20)]
    assert out.count_rows() == 10_000
    ids = out.read(columns=["sample_id"]).column("sample_id").to_pylist()
    assert len(set(ids)) == 10_000 and ids[0] == "shapes-pool0-0000000"
    assert sum(stats["categories"].values()) == 10_000
    # 5x the rows, about the same peak (one shard of rows in memory at a time)
    assert peak_10k < 1.5 * peak_2k + 1_000_000, (peak_2k, peak_10k)


def test_resume_rewrites_only_missing_shards_with_identical_bytes(tmp_path):
    out = StageDir(str(tmp_path), "toyworld")
    first = write_pool(out, 250, rows_per_shard=100, seed=3)
    assert (first["shards_written"], first["shards_skipped"]) == (3, 0)
    path = f"{out.data_dir}/pool-00001.parquet"
    before = pq.read_table(path)
    os.remove(path)  # as if the run crashed before writing shard 1
    again = write_pool(out, 250, rows_per_shard=100, seed=3)
    assert (again["shards_written"], again["shards_skipped"], again["rows_out"]) == (1, 2, 250)
    assert pq.read_table(path).equals(before)
    shard2 = pq.read_table(f"{out.data_dir}/pool-00002.parquet").to_pylist()
    assert shard2 == generate_pool(50, seed=3, start=200)  # shard k = f(seed, k)


def test_stage_job_writes_pool_benchmark_records_and_is_idempotent(tmp_path, capsys):
    argv = [
        f"run_dir={tmp_path}",
        "pool_size=130",
        "rows_per_shard=50",
        "benchmark_size=40",
        "records_size=12",
    ]
    assert job.main(argv) == 0
    manifest = StageDir(str(tmp_path), "toyworld").read_manifest()
    assert manifest["status"] == "done" and manifest["counts"] == {
        "in": 130,
        "out": 130,
        "quarantined": 0,
    }
    assert manifest["shards"] == 3 and manifest["benchmark"]["counts"]["out"] == 40
    bench = StageDir(str(tmp_path), job.BENCHMARK_STAGE)
    assert bench.count_rows() == 40 and bench.part_names() == ["bench-00000"]
    records = StageDir(str(tmp_path), job.RECORDS_STAGE).read().to_pylist()
    assert len(records) == 12 and all(len(r["responses"]) >= 4 for r in records)
    assert {json.loads(r["ground_truth"])["category"] for r in records} <= {
        "long",
        "short",
        "mcq",
        "safety",
        "video",
    }
    assert "toyworld: pool 130 rows in 3 shards" in capsys.readouterr().out
    assert job.main(argv) == 0
    assert "already done" in capsys.readouterr().out
    # another seed: stale parts are dropped and the pool regenerated from the new seed
    assert job.main(argv + ["seed=5"]) == 0
    first = (
        StageDir(str(tmp_path), "toyworld")
        .read(columns=["sample_id"])
        .column("sample_id")[0]
        .as_py()
    )
    assert first == "shapes-pool5-0000000"


@pytest.mark.ray
def test_parallel_ray_writers_produce_the_same_bytes(ray_session, tmp_path):
    common = ["pool_size=80", "rows_per_shard=20", "benchmark_size=20", "records_size=10", "seed=2"]
    assert job.main([f"run_dir={tmp_path / 'serial'}", *common]) == 0
    assert job.main([f"run_dir={tmp_path / 'ray'}", "workers=2", *common]) == 0
    for stage in ("toyworld", job.BENCHMARK_STAGE, job.RECORDS_STAGE):
        serial, parallel = (
            StageDir(str(tmp_path / "serial"), stage),
            StageDir(str(tmp_path / "ray"), stage),
        )
        assert parallel.part_names() == serial.part_names()
        assert parallel.read().equals(serial.read())
        assert parallel.read_manifest()["counts"] == serial.read_manifest()["counts"]
    assert StageDir(str(tmp_path / "ray"), "toyworld").read_manifest()["shards"] == 4
