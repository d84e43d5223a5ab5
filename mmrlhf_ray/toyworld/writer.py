"""Streaming a shapes-world pool (or benchmark) into Parquet shards with bounded memory.

Shard ``k`` holds rows ``k*rows_per_shard .. min((k+1)*rows_per_shard, n) - 1`` and is a
pure function of (seed, k), because every row is a pure function of (seed, index). Only
one shard's rows are in memory at a time, so a 10M-row pool needs no more memory than a
10k one. Shards already on disk are skipped: a crashed run resumes where it stopped.
Rows that fail ``validate_row`` (none should) are quarantined, never dropped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
from tqdm import tqdm

from mmrlhf_ray.schemas import to_table, validate_row
from mmrlhf_ray.stage import StageDir
from mmrlhf_ray.toyworld.oracle import simulated_record
from mmrlhf_ray.toyworld.queries import bench_row, make_row
from mmrlhf_ray.toyworld.responses import SIMULATED_MODELS

Row = dict[str, Any]


def shard_ranges(n: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """[(start, stop)] of each shard; the last one may be shorter."""
    if n < 0 or rows_per_shard < 1:
        raise ValueError(
            f"n={n}, rows_per_shard={rows_per_shard}: need n >= 0 and rows_per_shard >= 1"
        )
    return [(s, min(s + rows_per_shard, n)) for s in range(0, n, rows_per_shard)]


def _quarantine_row(row: Row, problems: list[str], part: str) -> Row:
    return {
        "source": part,
        "locator": row.get("sample_id") or row.get("query_id"),
        "field": problems[0].split(":")[0],
        "reason": "; ".join(problems),
        "raw": json.dumps({k: v for k, v in row.items() if not isinstance(v, (bytes, list))}),
    }


def write_rows(
    stage_dir: StageDir,
    n: int,
    rows_per_shard: int,
    make: Callable[[int], Row],
    prefix: str = "pool",
    kind: str = "pool",
    desc: str | None = None,
) -> dict[str, Any]:
    """Write ``kind`` rows ``make(0..n-1)`` as parts ``<prefix>-00000`` ...; skip parts on disk.

    Returns {"rows", "rows_out", "rows_quarantined", "shards", "shards_written",
    "shards_skipped", "categories"}; skipped shards are counted from their files.
    """
    stats: dict[str, Any] = dict(
        rows=n, rows_out=0, rows_quarantined=0, shards=0, shards_written=0, shards_skipped=0
    )
    categories: Counter[str] = Counter()
    ranges = shard_ranges(n, rows_per_shard)
    for k, (start, stop) in enumerate(tqdm(ranges, desc=desc or prefix, unit="shard", leave=False)):
        name = f"{prefix}-{k:05d}"
        stats["shards"] += 1
        if stage_dir.has_part(name):  # written by an earlier attempt: count it, skip it
            path = f"{stage_dir.data_dir}/{name}.parquet"
            done = pq.read_table(path, columns=["ground_truth"], filesystem=stage_dir.fs)
            categories.update(
                json.loads(g)["category"] for g in done.column("ground_truth").to_pylist()
            )
            stats["rows_out"] += done.num_rows
            stats["rows_quarantined"] += (stop - start) - done.num_rows
            stats["shards_skipped"] += 1
            continue
        good, bad = [], []
        for index in range(start, stop):
            row = make(index)
            problems = validate_row(row, kind)
            (bad.append(_quarantine_row(row, problems, name)) if problems else good.append(row))
        categories.update(json.loads(r["ground_truth"])["category"] for r in good)
        stage_dir.write_quarantine(name, bad)
        stage_dir.write_part(name, to_table(good, kind))
        stats["rows_out"] += len(good)
        stats["rows_quarantined"] += len(bad)
        stats["shards_written"] += 1
    stats["categories"] = dict(sorted(categories.items()))
    return stats


def write_pool(
    stage_dir: StageDir,
    n: int,
    rows_per_shard: int = 500,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    size: int = 64,
    frames: int = 4,
    prefix: str = "pool",
) -> dict[str, Any]:
    """Stream an ``n``-row pool into ``stage_dir`` as parts ``pool-00000`` ... (resumable)."""
    return write_rows(
        stage_dir,
        n,
        rows_per_shard,
        lambda i: make_row("pool", seed, i, mix, size=size, frames=frames),
        prefix,
    )


def write_benchmark(
    stage_dir: StageDir,
    n: int,
    rows_per_shard: int = 500,
    seed: int = 0,
    size: int = 64,
    frames: int = 4,
    prefix: str = "bench",
) -> dict[str, Any]:
    """Stream the held-out benchmark (``benchmark_split`` rows) into ``stage_dir``."""
    return write_rows(
        stage_dir, n, rows_per_shard, lambda i: bench_row(seed, i, size, frames), prefix
    )


def write_records(
    stage_dir: StageDir,
    n: int,
    rows_per_shard: int = 500,
    seed: int = 0,
    models: list[str] | None = None,
    per_model: int = 1,
    mix: dict[str, float] | None = None,
    size: int = 64,
    frames: int = 4,
    prefix: str = "records",
) -> dict[str, Any]:
    """Oracle-annotated records for the first ``n`` pool queries, answered by simulated models."""
    models = models or list(SIMULATED_MODELS)

    def make(i: int) -> Row:
        row = make_row("pool", seed, i, mix, size=size, frames=frames)
        return simulated_record(row, models, per_model, seed)

    return write_rows(stage_dir, n, rows_per_shard, make, prefix, kind="record")
