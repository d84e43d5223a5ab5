"""Pure pieces of the lmms-eval path: benchmark names, shards, the exactly-once merge."""

import json

import pytest

from mmrlhf_ray.evaluation.lmms import (
    merge_samples,
    shard_ranges,
    split_benchmarks,
    task_items,
    write_shapes_task,
)
from mmrlhf_ray.toyworld import benchmark_split


def test_benchmark_names_split_into_in_house_and_lmms_eval():
    own, lmms = split_benchmarks(["shapes", "mmmu_val", "safetybench", "shapes", "mmrlhf_shapes"])
    assert own == ["shapes", "safetybench"] and lmms == ["mmmu_val", "mmrlhf_shapes"]
    with pytest.raises(ValueError, match="benchmarks: an empty name"):
        split_benchmarks(["shapes", " "])


def test_shards_cover_every_document_once():
    assert shard_ranges(7, 2) == [(0, 4), (4, 3)]
    assert shard_ranges(2, 4) == [(0, 1), (1, 1)]  # never an empty shard
    covered = [d for off, n in shard_ranges(101, 8) for d in range(off, off + n)]
    assert covered == list(range(101))


def _rows(ids, shard):
    return [{"doc_id": i, "shard": shard, "metrics": json.dumps({"acc": i % 2})} for i in ids]


def test_merge_refuses_duplicates_and_gaps():
    merged = merge_samples("t", 4, [_rows([2, 3], "b"), _rows([0, 1], "a")])
    assert [r["doc_id"] for r in merged] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="t: doc_id 1: in shards a and b"):
        merge_samples("t", 4, [_rows([0, 1], "a"), _rows([1, 2, 3], "b")])
    with pytest.raises(ValueError, match=r"t: doc_id: missing \[2\]"):
        merge_samples("t", 4, [_rows([0, 1], "a"), _rows([3], "b")])


def _samples(policy, correct, extra):
    return [
        {"sample_id": f"q{i}", "metrics": json.dumps({"acc": c, "score": extra, "tag": "x"})}
        for i, c in enumerate(correct)
    ]


def test_per_item_rows_only_where_the_aggregate_is_their_mean():
    from mmrlhf_ray.evaluation.outcomes import item_table, summarize

    before = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    after = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    items, left = [], []
    for policy, correct in (("base", before), ("mm-dpo", after)):
        # acc: lmms-eval's mean; score: summed (MME-like), not a mean; tag: not a number
        agg = {"acc": sum(correct) / 10, "score": 20.0, "tag": "x"}
        rows, without = task_items(policy, "t", _samples(policy, correct, 2.0), agg)
        items, left = items + rows, left + without
    assert {(r["benchmark"], r["metric"]) for r in items} == {("lmms-eval/t", "acc")}
    assert len(items) == 20
    assert any("t/base/score: the task's aggregate (20.0) is not the mean" in x for x in left)
    assert any("t/base/tag: per-sample values not numbers" in x for x in left)
    result = summarize(item_table(items))
    base = result["intervals"]["lmms-eval/t"]["base"]["acc"]
    assert base["value"] == 0.2 and base["n"] == 10
    d = result["comparisons"]["lmms-eval/t"]["base → mm-dpo"]["acc"]
    # 8 items 0 -> 1, 1 item 1 -> 0: exact McNemar two-sided p = 2 * P(X <= 1), X ~ B(9, .5)
    assert d["diff"] == pytest.approx(0.7) and d["p"] == pytest.approx(20 / 512)


def test_shapes_task_written_with_its_data(tmp_path):
    rows = benchmark_split(3, seed=1)
    folder = write_shapes_task(rows, tmp_path, "shapes_x")
    text = (folder / "shapes_x.yaml").read_text()
    assert "task: shapes_x\n" in text and str((folder / "data.parquet").resolve()) in text
    assert (folder / "utils.py").exists()
    import pyarrow.parquet as pq

    assert pq.read_table(folder / "data.parquet")["sample_id"].to_pylist() == [
        r["sample_id"] for r in rows
    ]
