"""The driver-side pieces of the stage without Ray: shard collection, staleness, report doc."""

import numpy as np
import pyarrow as pa
import pytest

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.curation.config import EmbedConfig
from mmrlhf_ray.curation.pipeline import (
    ShardCollector,
    embedding_fingerprint,
    embeddings_path,
    has_embeddings,
    reset_if_stale,
)
from mmrlhf_ray.curation.report import update_benchmarks_section


def batch(shard, ids, bad=()):
    vec = np.full(4, 0.5, np.float16).tobytes()
    return pa.table(
        {
            "sample_id": ids,
            "shard": [shard] * len(ids),
            "category": [None if i in bad else "short" for i in ids],
            "image_hash": [None if i in bad else f"h{i}" for i in ids],
            "embedding": [None if i in bad else vec for i in ids],
            "error_field": ["image" if i in bad else None for i in ids],
            "error_reason": ["not a decodable image" if i in bad else None for i in ids],
        }
    )


def test_collector_writes_a_shard_once_complete_and_refuses_duplicates(tmp_path):
    out = StageDir(str(tmp_path), "curate")
    collector = ShardCollector(out, {"s0": 3, "s1": 2})
    collector.add(pa.concat_tables([batch("s0", ["a", "b"]), batch("s1", ["x"])]))
    assert collector.written == [] and collector.missing() == {"s0": 1, "s1": 1}
    collector.add(batch("s0", ["c"], bad={"c"}))
    assert collector.written == ["s0"] and has_embeddings(out, "s0")
    emb = pa.parquet.read_table(embeddings_path(out, "s0"))
    assert emb.column("sample_id").to_pylist() == ["a", "b"]
    assert out.read(quarantine=True).to_pylist()[0]["locator"] == "c"
    with pytest.raises(RuntimeError, match="delivered twice"):
        collector.add(batch("s1", ["x"]))  # a retried task must not deliver again
    with pytest.raises(RuntimeError, match="unknown shard"):
        collector.add(batch("s9", ["z"]))


def test_parts_made_by_another_model_are_deleted(tmp_path):
    out = StageDir(str(tmp_path), "curate")
    fp = embedding_fingerprint(EmbedConfig(), 128, "pool-v1")
    assert embedding_fingerprint(EmbedConfig(pool_size=7, batch_size=3), 128, "pool-v1") == fp
    assert reset_if_stale(out, fp) is False  # fresh directory
    ShardCollector(out, {"s0": 1}).add(batch("s0", ["a"]))
    assert reset_if_stale(out, fp) is False and has_embeddings(out, "s0")
    other = embedding_fingerprint(EmbedConfig(model_seed=1), 128, "pool-v1")
    assert reset_if_stale(out, other) is True and not has_embeddings(out, "s0")
    assert reset_if_stale(out, embedding_fingerprint(EmbedConfig(), 128, "pool-v2")) is True


def test_benchmarks_doc_section_is_updated_in_place(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## Serving\n\nfast\n")
    update_benchmarks_section(doc, "a", "first")
    update_benchmarks_section(doc, "b", "second")
    update_benchmarks_section(doc, "a", "first, again")
    text = doc.read_text()
    assert text.count("## Curation") == 1 and "## Serving\n\nfast" in text
    assert "first, again" in text and "second" in text and "first\n" not in text


def test_exact_image_dedup_keeps_the_first_copy(tmp_path):
    from mmrlhf_ray.curation.pipeline import exact_image_mask

    out = StageDir(str(tmp_path), "curate")
    collector = ShardCollector(out, {"s0": 3, "s1": 2})
    b0 = batch("s0", ["a", "b", "c"])
    b0 = b0.set_column(3, "image_hash", pa.array(["h1", "h2", "h1"]))
    b1 = batch("s1", ["d", "e"]).set_column(3, "image_hash", pa.array(["h2", "h3"]))
    collector.add(b0)
    collector.add(b1)
    mask = exact_image_mask([embeddings_path(out, "s0"), embeddings_path(out, "s1")])
    assert mask.tolist() == [True, True, False, False, True]
