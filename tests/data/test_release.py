"""Readers of the official release on hand-written lines, malformed ones included."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from mmrlhf_ray.data.release import (
    ReleaseError,
    category_from_path,
    pair_to_dpo_line,
    parse_data_line,
    parse_pair_line,
    read_release_file,
    record_to_data_line,
)
from mmrlhf_ray.data.schemas import to_table

GOOD_DATA = {
    "id": "q1",
    "question": "What colour is the circle?",
    "answer": "Red.",
    "image": "short/coco_000123.png",
    "video": None,
    "models_output": ["Red.", "Blue.", "It is red and round.", "I cannot tell."],
    "faithfulness": [5, 1, 5, 2],
    "helpfulness": [4, 1, 5, 1],
    "ethical": [5, 5, 5, 5],
    "final_ranking": [2, 4, 1, 3],
    "score_reasons": ["right", "wrong colour", "best", "vague"],
    "ranking_reason": "3 is complete, 1 is terse.",
}
GOOD_PAIR = {
    "id": "cauldron/iconqa/images/iconqa_00010991.png_6971175",
    "image": "mcq/cauldron_iconqa_images_iconqa_00010991.png.png",
    "prompt": "What time is it? Answer with the option's letter.",
    "chosen": "B. 11:00 A.M.",
    "rejected": "B",
    "chosen_reason": "The answer is correct.",
}


def _line(obj) -> str:
    return json.dumps(obj)


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_data_line_list_reading_gives_record():
    row = parse_data_line(GOOD_DATA)
    assert row["query_id"] == "q1" and row["category"] == "short"
    assert row["image_path"] == "short/coco_000123.png" and row["reference_answer"] == "Red."
    assert [r["rank"] for r in row["responses"]] == [2, 4, 1, 3]
    assert [r["ethics"] for r in row["responses"]] == [5, 5, 5, 5]
    assert row["responses"][1]["score_reason"] == "wrong colour"
    assert row["responses"][0]["response_id"] == "q1#r0" and row["is_tie"] is False
    to_table([row], "record")  # fits the Arrow schema


def test_data_line_dict_reading_takes_model_names_and_zero_based_ranks():
    obj = dict(
        GOOD_DATA,
        final_ranking={"gpt4o": 1, "claude": 3, "qwen": 0, "llava": 2},
        score_reasons={"gpt4o": "a", "claude": "b", "qwen": "c", "llava": "d"},
        faithfulness=[5.0, "1", 5, 2],
    )
    row = parse_data_line(obj, media_root="/data/mmrlhf")
    assert [r["model"] for r in row["responses"]] == ["gpt4o", "claude", "qwen", "llava"]
    assert [r["rank"] for r in row["responses"]] == [2, 4, 1, 3]
    assert [r["faithfulness"] for r in row["responses"]] == [5, 1, 5, 2]
    assert row["image_path"] == "/data/mmrlhf/short/coco_000123.png"


def test_data_line_all_equal_ranks_is_a_tie_and_video_category():
    obj = dict(GOOD_DATA, image=None, video="video/clip_0042", final_ranking=[1, 1, 1, 1])
    row = parse_data_line(obj)
    assert row["is_tie"] is True and row["category"] == "video"
    assert row["video_path"] == "video/clip_0042" and row["image_path"] is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"final_ranking": [1, 2, 3]}, "final_ranking"),
        ({"helpfulness": [4, 1, 2.5, 1]}, "helpfulness[2]"),
        ({"ethical": [5, 5, 9, 5]}, "ethical[2]"),
        ({"models_output": ["a", "", "c", "d"]}, "models_output[1]"),
        ({"question": None}, "question"),
        ({"image": "misc/x.png"}, "image"),
        ({"id": 7}, "id"),
        ({"final_ranking": None}, "final_ranking"),
    ],
)
def test_data_line_errors_name_the_field(change, field):
    with pytest.raises(ReleaseError) as err:
        parse_data_line({**GOOD_DATA, **change})
    assert err.value.field == field


def test_pair_line_reads_official_fields():
    obj = dict(
        GOOD_PAIR,
        rejected_reason="Only a letter.",
        ls_factor=2.5,
        is_tie="false",
        reference_chosen_logp=-3.5,
        reference_rejected_logp=-1.25,
    )
    row = parse_pair_line(obj, occurrence=2)
    assert row["pair_id"] == GOOD_PAIR["id"] + "#2" and row["query_id"] == GOOD_PAIR["id"]
    assert row["category"] == "mcq" and row["question"].startswith("What time")
    assert row["margin"] == 2.5 and row["margin_source"] == "release"
    assert row["ref_chosen_logp"] == -3.5 and row["is_tie"] is False
    assert pair_to_dpo_line(row)["ls_factor"] == 2.5
    assert parse_pair_line(GOOD_PAIR)["margin"] is None


def test_category_from_path():
    assert category_from_path("safety/a/b.jpg") == "safety"
    assert category_from_path("data/long/b.jpg") == "long"
    assert category_from_path("b.jpg", default="short") == "short"
    with pytest.raises(ReleaseError):
        category_from_path("images/b.jpg")


def test_data_file_counts_and_quarantine_reasons(tmp_path):
    lines = [
        _line(GOOD_DATA),  # 1 ok
        '{"id": "q2", "question": ',  # 2 invalid JSON
        _line(dict(GOOD_DATA, id="q3", helpfulness=[1, 2])),  # 3 length mismatch
        "",  # 4 blank
        _line(GOOD_DATA),  # 5 duplicate id
        _line(dict(GOOD_DATA, id="q6", image="long/x.png")),  # 6 ok
        _line(["not", "an", "object"]),  # 7 not an object
    ]
    path = _write(tmp_path, "data.jsonl", lines)
    results = list(read_release_file(path, "data"))
    assert len(results) == 7
    rows = [r.row for r in results if r.row]
    bad = {r.line_no: r.problem for r in results if r.problem}
    assert [r["query_id"] for r in rows] == ["q1", "q6"]
    assert sorted(bad) == [2, 3, 4, 5, 7]
    assert bad[2]["field"] == "line" and "invalid JSON" in bad[2]["reason"]
    assert bad[3]["field"] == "helpfulness" and "2 entries for 4" in bad[3]["reason"]
    assert bad[5]["field"] == "id" and bad[5]["reason"] == "duplicate of line 1"
    assert bad[3]["locator"] == "line 3" and bad[3]["source"] == path


def test_pair_file_ids_count_occurrences(tmp_path):
    lines = [
        _line(GOOD_PAIR),
        _line(dict(GOOD_PAIR, rejected="B. 10:00 A.M.")),
        _line(dict(GOOD_PAIR, rejected=GOOD_PAIR["chosen"])),  # identical texts
        _line(dict(GOOD_PAIR, chosen=None)),  # missing chosen
        _line(dict(GOOD_PAIR, ls_factor="big")),  # bad margin
        _line(dict(GOOD_PAIR, rejected="C")),
    ]
    path = _write(tmp_path, "mm_reward_bench.jsonl", lines)
    results = list(read_release_file(path, "reward_bench"))
    ids = [r.row["pair_id"] for r in results if r.row]
    assert ids == [GOOD_PAIR["id"] + f"#{k}" for k in range(3)]
    fields = [r.problem["field"] for r in results if r.problem]
    assert fields == ["rejected", "chosen", "ls_factor"]


def test_record_round_trips_through_official_format():
    row = parse_data_line(GOOD_DATA)
    again = parse_data_line(record_to_data_line(row))
    assert again["responses"] == row["responses"] and again["question"] == row["question"]
    task = record_to_data_line(row, with_labels=False)
    assert task["final_ranking"] is None and task["models_output"] == GOOD_DATA["models_output"]


def test_import_stage_counts_and_resume(tmp_path, capsys):
    from jobs.import_release import main

    data = _write(
        tmp_path, "data.jsonl", [_line(dict(GOOD_DATA, id=f"q{i}")) for i in range(5)] + ["{oops"]
    )
    bench = _write(tmp_path, "bench.jsonl", [_line(GOOD_PAIR), _line(dict(GOOD_PAIR, chosen=""))])
    run = str(tmp_path / "run")
    args = [
        f"run_dir={run}",
        f"data_jsonl={data}",
        f"reward_bench_jsonl={bench}",
        "rows_per_part=2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 lines read = 5 rows written + 1 quarantined" in out
    assert "8 lines read = 6 rows written + 2 quarantined" in out
    assert "line 6: line: invalid JSON" in out
    from mmrlhf_ray.core.stage import StageDir

    records = StageDir(run, "import/records")
    assert records.count_rows() == 5 and records.count_rows(quarantine=True) == 1
    assert len(records.part_names()) == 3  # lines 1-2, 3-4, 5-6
    assert StageDir(run, "import/bench").read().column("category").to_pylist() == ["mcq"]
    # A finished import does nothing; a crashed one redoes only missing parts.
    assert main(args) == 0 and "already done" in capsys.readouterr().out
    last = f"{records.data_dir}/part-00002.parquet"
    mtime_first = (tmp_path / "run/import/records/data/part-00000.parquet").stat().st_mtime_ns
    records.fs.delete_file(last)
    manifest = records.read_manifest()
    records.write_manifest(dict(manifest, status="running"))
    stage = StageDir(run, "import")
    stage.write_manifest(dict(stage.read_manifest(), status="running"))
    assert main(args) == 0
    assert records.count_rows() == 5 and pq.read_table(last).num_rows == 1
    assert (
        tmp_path / "run/import/records/data/part-00000.parquet"
    ).stat().st_mtime_ns == mtime_first


def test_pool_lines_read_media_paths_hints_and_name_bad_fields(tmp_path):
    from mmrlhf_ray.data.release import parse_pool_line

    row = parse_pool_line({"id": "p1", "question": "Is it safe?", "image": "safety/a.png"}, "/m")
    assert row["image_path"] == "/m/safety/a.png" and row["category_hint"] == "safety"
    assert row["source"] == "pool" and row["video_path"] is None
    video = parse_pool_line({"id": "v", "question": "What moves?", "video": "/abs/clip_1"}, "/m")
    assert video["video_path"] == "/abs/clip_1" and video["category_hint"] is None
    lines = [
        _line({"id": "a", "question": "q", "image": "x.png", "answer": "A."}),
        _line({"id": "b", "question": "", "image": "x.png"}),
        _line({"id": "c", "question": "q"}),
        _line({"id": "d", "question": "q", "image": "x.png", "category_hint": "poetry"}),
        _line({"id": "a", "question": "q again", "image": "y.png"}),
    ]
    results = list(read_release_file(_write(tmp_path, "pool.jsonl", lines), "pool"))
    assert [r.row["sample_id"] for r in results if r.row] == ["a"]
    assert [(r.problem["locator"], r.problem["field"]) for r in results if r.problem] == [
        ("line 2", "question"),
        ("line 3", "image"),
        ("line 4", "category_hint"),
        ("line 5", "id"),
    ]
