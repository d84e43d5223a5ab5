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
from collections.abc import Callable, Collection
from typing import Any

import pyarrow.parquet as pq
from tqdm import tqdm

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table, validate_row
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
    locator = row.get("sample_id") or row.get("query_id")
    return quarantine_row(part, locator, problems[0].split(":")[0], "; ".join(problems), row)


def _existing_shard(stage_dir: StageDir, name: str, expected: int) -> tuple[int, int, Counter]:
    """(rows out, rows quarantined, categories) of a shard an earlier attempt wrote."""
    path = f"{stage_dir.data_dir}/{name}.parquet"
    done = pq.read_table(path, columns=["ground_truth"], filesystem=stage_dir.fs)
    cats = Counter(json.loads(g)["category"] for g in done.column("ground_truth").to_pylist())
    return done.num_rows, expected - done.num_rows, cats


def _new_shard(
    stage_dir: StageDir, name: str, indices: range, make: Callable[[int], Row], kind: str
) -> tuple[int, int, Counter]:
    """Generate, validate and write one shard (quarantine first, then the part, atomically)."""
    good, bad = [], []
    for index in indices:
        row = make(index)
        problems = validate_row(row, kind)
        (bad.append(_quarantine_row(row, problems, name)) if problems else good.append(row))
    cats = Counter(json.loads(r["ground_truth"])["category"] for r in good)
    stage_dir.write_quarantine(name, bad)
    stage_dir.write_part(name, to_table(good, kind))
    return len(good), len(bad), cats


def write_rows(
    stage_dir: StageDir,
    n: int,
    rows_per_shard: int,
    make: Callable[[int], Row],
    prefix: str = "pool",
    kind: str = "pool",
    shards: Collection[int] | None = None,
    desc: str | None = None,
) -> dict[str, Any]:
    """Write ``kind`` rows ``make(0..n-1)`` as parts ``<prefix>-00000`` ...; skip parts on disk.

    ``shards`` restricts the work to those shard indices (parallel writers each take a
    share). Returns {"rows", "rows_out", "rows_quarantined", "shards", "shards_written",
    "shards_skipped", "categories"}; skipped shards are counted from their files.
    """
    stats: dict[str, Any] = dict(
        rows=0, rows_out=0, rows_quarantined=0, shards=0, shards_written=0, shards_skipped=0
    )
    categories: Counter[str] = Counter()
    todo = [
        (k, r)
        for k, r in enumerate(shard_ranges(n, rows_per_shard))
        if shards is None or k in shards
    ]
    for k, (start, stop) in tqdm(todo, desc=desc or prefix, unit="shard", leave=False):
        name = f"{prefix}-{k:05d}"
        if stage_dir.has_part(name):  # written by an earlier attempt: count it, skip it
            out, quarantined, cats = _existing_shard(stage_dir, name, stop - start)
            stats["shards_skipped"] += 1
        else:
            out, quarantined, cats = _new_shard(stage_dir, name, range(start, stop), make, kind)
            stats["shards_written"] += 1
        stats["shards"] += 1
        stats["rows"] += stop - start
        stats["rows_out"] += out
        stats["rows_quarantined"] += quarantined
        categories.update(cats)
    stats["categories"] = dict(sorted(categories.items()))
    return stats


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the stats of several ``write_rows`` calls (parallel writers)."""
    total: dict[str, Any] = {}
    categories: Counter[str] = Counter()
    for part in parts:
        for key, value in part.items():
            if key == "categories":
                categories.update(value)
            else:
                total[key] = total.get(key, 0) + value
    total["categories"] = dict(sorted(categories.items()))
    return total


def write_pool(
    stage_dir: StageDir,
    n: int,
    rows_per_shard: int = 500,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    size: int = 64,
    frames: int = 4,
    prefix: str = "pool",
    shards: Collection[int] | None = None,
) -> dict[str, Any]:
    """Stream an ``n``-row pool into ``stage_dir`` as parts ``pool-00000`` ... (resumable)."""
    return write_rows(
        stage_dir,
        n,
        rows_per_shard,
        lambda i: make_row("pool", seed, i, mix, size=size, frames=frames),
        prefix,
        shards=shards,
    )


def write_benchmark(
    stage_dir: StageDir,
    n: int,
    rows_per_shard: int = 500,
    seed: int = 0,
    size: int = 64,
    frames: int = 4,
    prefix: str = "bench",
    shards: Collection[int] | None = None,
) -> dict[str, Any]:
    """Stream the held-out benchmark (``benchmark_split`` rows) into ``stage_dir``."""
    make = lambda i: bench_row(seed, i, size, frames)  # noqa: E731
    return write_rows(stage_dir, n, rows_per_shard, make, prefix, shards=shards)


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
    shards: Collection[int] | None = None,
) -> dict[str, Any]:
    """Oracle-annotated records for the first ``n`` pool queries, answered by simulated models."""
    models = models or list(SIMULATED_MODELS)

    def make(i: int) -> Row:
        row = make_row("pool", seed, i, mix, size=size, frames=frames)
        return simulated_record(row, models, per_model, seed)

    return write_rows(stage_dir, n, rows_per_shard, make, prefix, kind="record", shards=shards)
