"""Spherical k-means over image embeddings with faiss, trained on a sample, assigned streaming.

The paper clusters 10M samples by image similarity before sampling (Fig. 2-3). At that
scale the vectors (10 GB as float16) do not fit in memory, so:

* :func:`sample_vectors` draws a seeded sample from randomly chosen row groups of the
  embeddings parts (reads only those row groups);
* :func:`train_kmeans` runs faiss spherical k-means (``IndexFlatIP`` on normalised
  vectors: cosine similarity) on the sample;
* :func:`assign_parts` streams every part chunk by chunk and keeps only a cluster id
  (int16) and a category code (int8) per row. Parts run one per thread with
  single-threaded faiss: measured as fast as 2 OpenMP threads and it degrades
  gracefully when the shared machine is busy (ENVIRONMENT.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmrlhf_ray.core.config import ConfigError
from mmrlhf_ray.curation.categorize import CATEGORY_CODES
from mmrlhf_ray.curation.embeddings import dim_of, iter_embedding_chunks


@dataclass
class Assignment:
    """Per-row results of streaming over the parts, in part order then row order."""

    clusters: np.ndarray  # int16 cluster id per row
    categories: np.ndarray  # int8 category code per row (CATEGORY_CODES)
    offsets: np.ndarray  # offsets[i] = first global row of part i; offsets[-1] = total
    similarity: np.ndarray  # float32 cosine similarity to the assigned centre


def part_rows(paths: list[str], filesystem=None) -> np.ndarray:
    """Row counts of Parquet files from their footers (no data read)."""
    return np.array(
        [pq.ParquetFile(p, filesystem=filesystem).metadata.num_rows for p in paths], dtype=np.int64
    )


def sample_vectors(
    paths: list[str], sample_size: int, seed: int, filesystem=None, min_groups: int = 32
) -> np.ndarray:
    """A seeded sample of ``sample_size`` float32 vectors spread across the parts.

    Reads only some row groups: enough to hold the sample and at least ``min_groups``
    of them (so a pool whose shards are sorted by source is still sampled broadly),
    keeping an equal random quota of rows from each.
    """
    rng = np.random.default_rng(seed)
    groups = []  # (path index, row group, rows)
    for i, p in enumerate(paths):
        meta = pq.ParquetFile(p, filesystem=filesystem).metadata
        groups += [
            (i, g, meta.row_group(g).num_rows)
            for g in range(meta.num_row_groups)
            if meta.row_group(g).num_rows
        ]
    if not groups:
        raise ValueError("embeddings: no rows to train k-means on")
    order = rng.permutation(len(groups))
    held = np.cumsum([groups[j][2] for j in order])  # rows held by the first m groups
    needed = min(int(np.searchsorted(held, sample_size)) + 1, len(groups))
    picked = sorted(groups[j] for j in order[: max(needed, min(min_groups, len(groups)))])
    quota = -(-sample_size // len(picked))
    chunks = []
    for i, g, n in picked:
        keep = np.sort(rng.choice(n, min(quota, n), replace=False))
        vecs = np.concatenate(
            [
                v.copy()
                for v, _ in iter_embedding_chunks(paths[i], filesystem=filesystem, row_groups=[g])
            ]
        )
        chunks.append(vecs[keep])
    sample = np.concatenate(chunks)
    if len(sample) > sample_size:
        sample = sample[np.sort(rng.choice(len(sample), sample_size, replace=False))]
    return sample


def kmeanspp_init(
    x: np.ndarray, k: int, rng: np.random.Generator, max_points: int = 20000
) -> np.ndarray:
    """k-means++ seeding for cosine distance (``1 - x.c`` on unit vectors).

    faiss seeds k-means with k random points, which often puts two seeds in one dense
    group and leaves another group to be merged; D^2 seeding spreads them. Runs on at
    most ``max_points`` rows: k passes of one matrix-vector product each.
    """
    pts = x if len(x) <= max_points else x[rng.choice(len(x), max_points, replace=False)]
    chosen = [int(rng.integers(len(pts)))]
    dist = np.maximum(1.0 - pts @ pts[chosen[0]], 0.0)
    for _ in range(1, k):
        weight = dist * dist  # D^2 sampling
        total = float(weight.sum())
        nxt = (
            int(rng.choice(len(pts), p=weight / total))
            if total > 0
            else int(rng.integers(len(pts)))
        )
        chosen.append(nxt)
        dist = np.minimum(dist, np.maximum(1.0 - pts @ pts[nxt], 0.0))
    return np.ascontiguousarray(pts[chosen], dtype=np.float32)


def train_kmeans(
    sample: np.ndarray, k: int, seed: int, niter: int = 20, threads: int = 2
) -> np.ndarray:
    """Spherical k-means centres ``(k, dim)`` float32, unit norm, trained on ``sample``.

    Seeded with :func:`kmeanspp_init`, then faiss Lloyd iterations with centres
    re-normalised each step (``spherical=True``): k-means under cosine similarity.
    """
    import faiss

    if len(sample) < k:
        raise ConfigError(
            f"cluster.k: {k} centres need at least {k} sample rows, got {len(sample)}"
        )
    faiss.omp_set_num_threads(threads)
    x = np.array(sample, dtype=np.float32, copy=True)
    faiss.normalize_L2(x)
    init = kmeanspp_init(x, k, np.random.default_rng(seed))
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        verbose=False,
        max_points_per_centroid=max(256, -(-len(x) // k)),
    )
    km.train(x, init_centroids=init)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def _category_codes(array: pa.Array) -> np.ndarray:
    """Category codes (int8) of a dictionary-encoded or plain string category column."""
    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    lookup = np.array(
        [CATEGORY_CODES.get(v, -1) for v in array.dictionary.to_pylist()] + [-1], dtype=np.int8
    )
    indices = array.indices.fill_null(len(array.dictionary)).to_numpy(zero_copy_only=False)
    codes = lookup[indices]
    if (codes < 0).any():
        bad = array.dictionary.to_pylist()
        raise ValueError(f"category: unknown or null value among {bad}")
    return codes


def _assign_part(
    path: str,
    centres: np.ndarray,
    out: Assignment,
    start: int,
    batch_size: int,
    filesystem,
    visit: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> int:
    """Assign one part's rows to their nearest centre, writing into ``out`` from ``start``."""
    import faiss

    faiss.omp_set_num_threads(1)  # OpenMP settings are per thread: set it in this one
    dim = dim_of(pq.read_schema(path, filesystem=filesystem))
    if dim != centres.shape[1] and pq.ParquetFile(path, filesystem=filesystem).metadata.num_rows:
        raise ValueError(
            f"{path}: embedding dim {dim} differs from the centres' {centres.shape[1]}"
        )
    index = faiss.IndexFlatIP(centres.shape[1])
    index.add(centres)
    row = start
    for vecs, cats in iter_embedding_chunks(path, batch_size, filesystem, with_categories=True):
        sims, labels = index.search(vecs, 1)
        n = len(vecs)
        norms = np.sqrt(np.einsum("ij,ij->i", vecs, vecs))
        out.clusters[row : row + n] = labels[:, 0]
        out.similarity[row : row + n] = sims[:, 0] / np.maximum(norms, 1e-12)
        out.categories[row : row + n] = _category_codes(cats)
        if visit is not None:  # decontamination: the same chunk, no second read
            visit(row, vecs, labels[:, 0])
        row += n
    return row - start


def assign_parts(
    paths: list[str],
    centres: np.ndarray,
    threads: int = 2,
    batch_size: int = 65536,
    filesystem=None,
    progress: Callable[[int], None] | None = None,
    visit: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
) -> Assignment:
    """Stream every part and assign each row to its nearest centre (cosine).

    ``visit(first_row, vectors, nearest_centres)``, when given, sees every chunk (from
    the part threads).
    Memory: 7 bytes per row of results plus one chunk buffer per thread.
    """
    counts = part_rows(paths, filesystem)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    out = Assignment(
        np.empty(total, np.int16), np.empty(total, np.int8), offsets, np.empty(total, np.float32)
    )
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        futures = [
            pool.submit(
                _assign_part, p, centres, out, int(offsets[i]), batch_size, filesystem, visit
            )
            for i, p in enumerate(paths)
        ]
        for i, fut in enumerate(futures):
            done = fut.result()
            if done != counts[i]:
                raise RuntimeError(f"{paths[i]}: read {done} rows, footer says {counts[i]}")
            if progress:
                progress(done)
    return out
