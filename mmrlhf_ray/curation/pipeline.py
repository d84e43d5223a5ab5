"""The curation stage's plain (Ray-free) steps, called by ``jobs/curate.py`` and benchmarks.

1. :class:`ShardCollector` gathers the embedder's output batches (which arrive in any
   order, from any actor) per pool shard and, once a shard is complete, writes its
   quarantine and then its embeddings part ``<stage>/embeddings/<shard>.parquet``
   atomically. A shard whose part exists is done: a re-run skips it. A duplicate or
   foreign sample id raises instead of being written (exactly-once output).
2. :func:`cluster_and_select` trains k-means on a sample, streams the assignment over
   the embeddings parts and picks rows by ratio and per-cluster uniformity.
3. :func:`write_selected` writes, per pool shard, the selected pool rows with
   ``cluster_id`` and ``category`` into ``<stage>/data/<shard>.parquet``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.curation.categorize import CATEGORY_CODES
from mmrlhf_ray.curation.cluster import Assignment, assign_parts, sample_vectors, train_kmeans
from mmrlhf_ray.curation.config import ClusterConfig
from mmrlhf_ray.curation.embeddings import embeddings_table, write_embeddings
from mmrlhf_ray.curation.sampling import Selection, select_rows

EMBEDDINGS_DIR = "embeddings"


def embeddings_path(out: StageDir, shard: str) -> str:
    return out.path(EMBEDDINGS_DIR, f"{shard}.parquet")


def has_embeddings(out: StageDir, shard: str) -> bool:
    from pyarrow import fs as pafs

    return out.fs.get_file_info(embeddings_path(out, shard)).type == pafs.FileType.File


EMBED_KEYS = ("model_name", "model_path", "weights", "model_seed", "max_side", "max_pixels")


def embedding_fingerprint(embed: Any, long_threshold: int, input_fingerprint: str) -> str:
    """What the embeddings parts depend on: model, decode limits, categoriser, input."""
    import hashlib
    import json

    payload = {k: getattr(embed, k) for k in EMBED_KEYS}
    # layout 2: parts carry a perceptual hash (decontamination); older parts are redone
    payload.update(long_threshold=long_threshold, input=input_fingerprint, layout=2)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def reset_if_stale(out: StageDir, fingerprint: str) -> bool:
    """Keep earlier parts only if they were made the same way; else delete them all.

    Returns True when stale parts were deleted. The fingerprint is stored beside the
    parts (``embeddings.json``), so a resumed run reuses exactly what it may reuse.
    """
    import json

    from pyarrow import fs as pafs

    marker = out.path("embeddings.json")
    previous = None
    if out.fs.get_file_info(marker).type == pafs.FileType.File:
        with out.fs.open_input_stream(marker) as f:
            previous = json.loads(f.read().decode()).get("fingerprint")
    if previous == fingerprint:
        return False
    stale = (
        previous is not None
        or out.fs.get_file_info(out.path(EMBEDDINGS_DIR)).type == pafs.FileType.Directory
    )
    for directory in (out.path(EMBEDDINGS_DIR), out.data_dir, out.quarantine_dir):
        out.fs.create_dir(directory, recursive=True)
        out.fs.delete_dir_contents(directory)
    with out.fs.open_output_stream(marker) as f:
        f.write(json.dumps({"fingerprint": fingerprint}).encode())
    return stale


@dataclass
class ShardCollector:
    """Buffers embedder output per shard; writes a shard's parts once all its rows arrived."""

    out: StageDir
    expected: dict[str, int]  # shard name -> rows in that pool shard
    source: str = "toyworld"  # upstream stage, for quarantine rows
    buffers: dict[str, list[pa.Table]] = field(default_factory=dict)
    seen: dict[str, set[str]] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    quarantined: int = 0

    def add(self, batch: pa.Table) -> None:
        """Take one output batch (columns of ``actors.clip_embedder.OUTPUT_SCHEMA``)."""
        for shard in pc.unique(batch.column("shard")).to_pylist():
            part = batch.filter(pc.equal(batch.column("shard"), shard)) if shard else batch
            if shard not in self.expected:
                raise RuntimeError(f"embedder returned rows of unknown shard {shard!r}")
            ids = part.column("sample_id").to_pylist()
            seen = self.seen.setdefault(shard, set())
            if len(set(ids)) < len(ids) or not seen.isdisjoint(ids):
                dupes = sorted(seen.intersection(ids)) or sorted(ids)
                raise RuntimeError(f"{shard}: sample_id delivered twice, among {dupes[:3]}")
            seen.update(ids)
            self.buffers.setdefault(shard, []).append(part)
            if len(seen) == self.expected[shard]:
                self._write(shard)
            elif len(seen) > self.expected[shard]:
                raise RuntimeError(f"{shard}: {len(seen)} rows > {self.expected[shard]} expected")

    def _write(self, shard: str) -> None:
        table = pa.concat_tables(self.buffers.pop(shard), promote_options="permissive")
        bad = table.filter(pc.is_null(table.column("embedding")))
        good = table.filter(pc.invert(pc.is_null(table.column("embedding"))))
        rows = [
            quarantine_row(
                f"{self.source}/{shard}",
                r["sample_id"],
                r["error_field"],
                r["error_reason"],
                r.get("raw") or r["sample_id"],
            )
            for r in bad.to_pylist()
        ]
        self.out.write_quarantine(shard, rows)  # before the embeddings: that part marks done
        self.quarantined += len(rows)
        vectors = _vectors(good.column("embedding"))
        emb = embeddings_table(
            good.column("sample_id").to_pylist(),
            good.column("category").to_pylist(),
            vectors,
            good.column("image_hash").to_pylist(),
            good.column("phash").to_pylist() if "phash" in good.column_names else None,
        )
        self._write_embeddings(shard, emb)

    def write_empty(self, shard: str) -> None:
        """A pool shard with no rows: an empty embeddings part marks it done."""
        self._write_embeddings(shard, embeddings_table([], [], np.zeros((0, 0)), []))

    def _write_embeddings(self, shard: str, emb: pa.Table) -> None:
        self.out.fs.create_dir(self.out.path(EMBEDDINGS_DIR), recursive=True)
        final = embeddings_path(self.out, shard)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        write_embeddings(emb, tmp, filesystem=self.out.fs)
        self.out.fs.move(tmp, final)
        self.written.append(shard)

    def missing(self) -> dict[str, int]:
        """Shards not written, with the rows still missing (should be empty at the end)."""
        return {
            s: n - len(self.seen.get(s, ()))
            for s, n in self.expected.items()
            if s not in self.written
        }


def exact_image_mask(paths: list[str], filesystem: Any = None) -> np.ndarray:
    """True for the first row of each distinct image (by pixel hash), in part order."""
    hashes = pa.concat_arrays(
        [
            pq.read_table(p, columns=["image_hash"], filesystem=filesystem)
            .column("image_hash")
            .combine_chunks()
            for p in paths
        ]
    )
    codes = hashes.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    keep = np.zeros(len(codes), dtype=bool)
    _, first = np.unique(codes, return_index=True)
    keep[first] = True
    return keep


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    """float16 byte strings -> ``(N, dim)`` float16 array."""
    values = column.to_pylist()
    if not values:
        return np.zeros((0, 0), dtype=np.float16)
    return np.frombuffer(b"".join(values), dtype=np.float16).reshape(len(values), -1)


@dataclass
class Curated:
    """Everything :func:`cluster_and_select` decided, with timings in seconds."""

    centres: np.ndarray
    sample: np.ndarray
    assignment: Assignment
    selection: Selection
    timings: dict[str, float]


def cluster_and_select(
    paths: list[str],
    cluster: ClusterConfig,
    image_size: int,
    ratio: dict[str, float],
    fixed: dict[str, int],
    seed: int,
    filesystem: Any = None,
    progress=None,
    eligible: np.ndarray | None = None,
    screen: Any = None,
    counts: dict[str, int] | None = None,
) -> Curated:
    """k-means on a sample, streamed assignment, then ratio + per-cluster sampling.

    ``eligible`` (bool per row) excludes rows from sampling (exact-image dedup);
    ``counts`` (long/short/mcq) replace the ratio split when given.
    ``screen`` (decontamination) gets the k-means sample and centres
    (``screen.prepare``), sees every chunk during the assignment
    (``screen.visit(first_row, vectors, nearest_centres)``) and then ``screen.exclude(total)`` gives the
    rows to keep out of the sample (bool mask, or None).
    """
    t0 = time.perf_counter()
    sample = sample_vectors(paths, cluster.sample_size, seed, filesystem)
    k = min(cluster.k, len(sample))
    t1 = time.perf_counter()
    centres = train_kmeans(sample, k, seed, cluster.niter, cluster.threads)
    t2 = time.perf_counter()
    if screen is not None:
        screen.prepare(sample, centres)  # the pool's mean embedding; the IVF lists
    visit = screen.visit if screen is not None else None
    assignment = assign_parts(
        paths, centres, cluster.threads, cluster.batch_size, filesystem, progress, visit
    )
    t3 = time.perf_counter()
    categories = assignment.categories
    excluded = screen.exclude(len(categories)) if screen is not None else None
    if excluded is not None:
        eligible = ~excluded if eligible is None else eligible & ~excluded
    if eligible is not None:
        categories = np.where(eligible, categories, len(CATEGORY_CODES)).astype(np.int8)
    selection = select_rows(
        categories, assignment.clusters, k, image_size, ratio, fixed, seed, counts
    )
    t4 = time.perf_counter()
    timings = {
        "sample": t1 - t0,
        "train": t2 - t1,
        "assign": t3 - t2,
        "select": t4 - t3,
        "total": t4 - t0,
    }
    return Curated(centres, sample, assignment, selection, timings)


def write_selected(
    out: StageDir, shards: list[str], pool_paths: list[str], curated: Curated, pool_fs: Any = None
) -> int:
    """Write the selected pool rows (+ cluster_id, category) per shard; returns the count."""
    offsets = curated.assignment.offsets
    selected = curated.selection.indices
    code_names = np.array(list(CATEGORY_CODES), dtype=object)
    written = 0
    for i, shard in enumerate(shards):
        lo, hi = np.searchsorted(selected, [offsets[i], offsets[i + 1]])
        local = selected[lo:hi] - offsets[i]
        emb = pq.read_table(embeddings_path(out, shard), columns=["sample_id"], filesystem=out.fs)
        ids = emb.column("sample_id").take(pa.array(local)).to_pylist()
        info = {
            sid: (
                int(curated.assignment.clusters[offsets[i] + j]),
                code_names[curated.assignment.categories[offsets[i] + j]],
            )
            for sid, j in zip(ids, local, strict=True)
        }
        pool = pq.read_table(pool_paths[i], filesystem=pool_fs)
        rows = pool.filter(pc.is_in(pool.column("sample_id"), pa.array(ids, pa.string())))
        if rows.num_rows != len(ids):
            raise RuntimeError(f"{shard}: {len(ids)} selected ids, {rows.num_rows} pool rows")
        row_ids = rows.column("sample_id").to_pylist()
        rows = rows.append_column("cluster_id", pa.array([info[s][0] for s in row_ids], pa.int32()))
        rows = rows.append_column("category", pa.array([info[s][1] for s in row_ids], pa.string()))
        out.write_part(shard, rows)
        written += rows.num_rows
    return written


def _write_bytes(out: StageDir, path: str, payload: bytes) -> None:
    out.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with out.fs.open_output_stream(path) as f:
        f.write(payload)


def write_curation_report(
    out: StageDir, curated: Curated, quarantined: int, map_points: int, seed: int
) -> dict[str, Any]:
    """Composition table (md + csv), per-cluster counts (csv), cluster map (png), centres."""
    import io

    from mmrlhf_ray.curation.report import (
        cluster_map,
        composition_markdown,
        composition_rows,
        write_composition_csv,
    )

    sel = curated.selection
    after = {c: int(take.sum()) for c, take in sel.per_cluster.items()}
    rows = composition_rows(sel.available, after, quarantined)
    _write_bytes(out, out.path("report", "composition.md"), composition_markdown(rows).encode())
    buf = io.StringIO()
    write_composition_csv(rows, buf)
    _write_bytes(out, out.path("report", "composition.csv"), buf.getvalue().encode())
    lines = ["category,cluster_id,selected"]
    lines += [
        f"{c},{k},{int(n)}" for c, take in sel.per_cluster.items() for k, n in enumerate(take)
    ]
    _write_bytes(out, out.path("report", "per_cluster.csv"), ("\n".join(lines) + "\n").encode())
    rng = np.random.default_rng(seed)
    sample = curated.sample
    points = sample[np.sort(rng.choice(len(sample), min(map_points, len(sample)), replace=False))]
    labels = np.argmax(points @ curated.centres.T, axis=1)
    png = io.BytesIO()
    method = cluster_map(points, labels, curated.centres, png, seed)
    _write_bytes(out, out.path("report", "cluster_map.png"), png.getvalue())
    npy = io.BytesIO()
    np.save(npy, curated.centres)
    _write_bytes(out, out.path("centroids.npy"), npy.getvalue())
    return {"composition": rows, "selected_per_category": after, "map_method": method}
