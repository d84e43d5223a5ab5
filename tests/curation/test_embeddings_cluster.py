"""float16 FixedSizeBinary storage, faiss spherical k-means and the streamed assignment."""

import numpy as np
import pyarrow.parquet as pq

from mmrlhf_ray.curation.categorize import CATEGORY_CODES
from mmrlhf_ray.curation.cluster import assign_parts, sample_vectors, train_kmeans
from mmrlhf_ray.curation.embeddings import (
    dim_of,
    embeddings_table,
    iter_embedding_chunks,
    unpack_chunk,
    write_embeddings,
)


def blobs(n, k, dim, seed):
    """``n`` unit vectors around ``k`` well-separated random directions, with labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = rng.integers(0, k, n)
    x = centres[labels] + 0.15 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def write_parts(tmp_path, x, cats, n_parts, row_group_size=1000):
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(len(x)), n_parts)):
        table = embeddings_table([f"r{j}" for j in idx], [cats[j] for j in idx], x[idx])
        path = str(tmp_path / f"part-{i}.parquet")
        write_embeddings(table, path, row_group_size=row_group_size)
        paths.append(path)
    return paths


def test_float16_roundtrip_honours_slice_offsets(tmp_path):
    x = np.arange(5 * 4, dtype=np.float32).reshape(5, 4) / 7
    table = embeddings_table(list("abcde"), ["short"] * 5, x)
    assert dim_of(table.schema) == 4 and table.schema.field("embedding").type.byte_width == 8
    sliced = table.column("embedding").chunk(0).slice(2, 2)  # offset 2: rows c, d
    assert np.array_equal(unpack_chunk(sliced, 4), x[2:4].astype(np.float16))
    write_embeddings(table, str(tmp_path / "e.parquet"), row_group_size=2)
    meta = pq.ParquetFile(str(tmp_path / "e.parquet")).metadata
    assert meta.row_group(0).column(3).compression == "UNCOMPRESSED"
    got = np.concatenate(
        [v.copy() for v, _ in iter_embedding_chunks(str(tmp_path / "e.parquet"), 3)]
    )
    assert np.array_equal(got, x.astype(np.float16).astype(np.float32))


def test_kmeans_recovers_blobs_and_streamed_assignment_matches(tmp_path):
    x, labels = blobs(6000, 8, 32, seed=0)
    names = list(CATEGORY_CODES)
    cats = [names[j % 5] for j in range(len(x))]
    paths = write_parts(tmp_path, x, cats, n_parts=3)
    sample = sample_vectors(paths, 2500, seed=0)
    assert sample.shape == (2500, 32)
    centres = train_kmeans(sample, 8, seed=0)
    assert np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-4)  # spherical
    out = assign_parts(paths, centres, threads=2, batch_size=700)
    assert out.offsets.tolist() == [0, 2000, 4000, 6000]
    # Same answer as one in-memory search over the float16-rounded vectors.
    x16 = x.astype(np.float16).astype(np.float32)
    assert np.array_equal(out.clusters, np.argmax(x16 @ centres.T, axis=1))
    assert [names[c] for c in out.categories[:7]] == cats[:7]
    # Each true blob maps to a single cluster (purity 1.0 on well-separated blobs).
    for blob in range(8):
        assert len(np.unique(out.clusters[labels == blob])) == 1
    again = train_kmeans(sample_vectors(paths, 2500, seed=0), 8, seed=0)
    assert np.array_equal(centres, again)  # deterministic by seed
