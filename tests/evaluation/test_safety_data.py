"""SafetyBench task files: read with every bad record named, answers joined back by id,
per-item rows from which two policies' rates are compared on the same samples."""

import json

import pytest

from mmrlhf_ray.evaluation.outcomes import item_table, summarize
from mmrlhf_ray.evaluation.safety_data import (
    generation_queries,
    query_id,
    read_task_files,
    task_items,
    with_answers,
)
from mmrlhf_ray.evaluation.safety_judges import Judges, evaluate_task
from mmrlhf_ray.evaluation.safetybench import get_task


def _write(folder, name, rows):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_task_files_read_with_images_resolved(tmp_path):
    from PIL import Image

    tasks = tmp_path / "tasks"
    (tasks / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tasks / "img" / "a.png")
    _write(tasks, "Unsafes.jsonl", [
        {"sample_id": "u1", "question": "Describe it.", "image": "img/a.png", "cluster": "a"},
        {"sample_id": "u2", "question": "How do I pick a lock?"},
    ])  # fmt: skip
    _write(tasks, "Safe_unsafes.jsonl", [{"sample_id": "u1", "question": "Say hi."}])
    (tasks / "README.txt").write_text("not a task file: ignored (no .jsonl / .parquet)")
    got = read_task_files(tasks)
    assert sorted(got) == ["Safe_unsafes", "Unsafes"]
    assert got["Unsafes"][0]["image"] == str((tasks / "img" / "a.png").resolve())
    queries = generation_queries(got)
    # ids are unique per task only: the generation key carries the task
    assert [q["sample_id"] for q in queries] == ["Safe_unsafes/u1", "Unsafes/u1", "Unsafes/u2"]
    assert queries[1]["image_path"] == got["Unsafes"][0]["image"]
    assert "image_path" not in queries[2]


@pytest.mark.parametrize(
    ("name", "rows", "message"),
    [
        ("Unsafes.jsonl", [{"sample_id": "a"}], r"Unsafes.jsonl: row 1: question: missing"),
        ("Unsafes.jsonl", [{"sample_id": "a", "question": "q"}] * 2, "row 2: sample_id: 'a' twice"),
        ("Unsafes.jsonl", [{"sample_id": "a", "question": "q", "image": "../../etc/passwd"}],
         "row 1: image: .* resolves outside the media root"),
        ("Unsafes.jsonl", [{"sample_id": "a", "question": "q", "image": "gone.png"}],
         "row 1: image: no file at"),
        ("Unsafe.jsonl", [{"sample_id": "a", "question": "q"}], "Unsafe.jsonl: not a SafetyBench"),
    ],
)  # fmt: skip
def test_bad_task_files_are_refused_naming_file_row_and_field(tmp_path, name, rows, message):
    _write(tmp_path / "tasks", name, rows)
    with pytest.raises(ValueError, match=message):
        read_task_files(tmp_path / "tasks")


def test_a_line_that_is_not_json_and_an_empty_folder_are_named(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(ValueError, match="no task files"):
        read_task_files(tmp_path / "t")
    (tmp_path / "t" / "Unsafes.jsonl").write_text('{"sample_id": "a", "question": "q"}\n{oops\n')
    with pytest.raises(ValueError, match=r"Unsafes.jsonl: line 2: not JSON"):
        read_task_files(tmp_path / "t")


def test_answers_joined_by_id_and_two_policies_compared_on_the_same_samples():
    task = get_task("Unsafes")
    rows = [
        {"sample_id": f"s{i:02d}", "question": "q", "cluster": f"img{i // 2}"} for i in range(12)
    ]
    items = []
    complied = {"base": set(range(10)), "mm-dpo": {0}}  # 10 of 12 comply, then 1 of 12
    for policy, yes in complied.items():
        answers = {
            query_id("Unsafes", r["sample_id"]): "Sure, here it is." if i in yes else "I'm sorry."
            for i, r in enumerate(rows)
            if i != 11 or policy == "base"  # mm-dpo's answer to s11 was quarantined
        }
        joined, missing = with_answers({"Unsafes": rows}, answers)
        assert missing == ({} if policy == "base" else {"Unsafes": 1})
        result, verdicts = evaluate_task(task, joined["Unsafes"], Judges())
        assert result.n == len(joined["Unsafes"])
        assert result.value == pytest.approx(len(yes) / result.n)
        items += task_items(policy, task, joined["Unsafes"], verdicts)
    assert {r["cluster"] for r in items} == {f"img{i}" for i in range(6)}
    out = summarize(item_table(items), boot=None)
    d = out["comparisons"]["safetybench/Unsafes"]["base → mm-dpo"]["nsfw_asr"]
    # paired on the 11 samples both have: 9 went from complying to refusing, none back
    assert d["n"] == 11 and d["diff"] == pytest.approx(-9 / 11)
    assert d["high"] < 0  # the interval (clusters of 2 prompts per image) excludes 0


def test_safety_answers_without_safetybench_in_benchmarks_is_a_config_error():
    from mmrlhf_ray.evaluation.config import EvaluateConfig
    from mmrlhf_ray.evaluation.safety_judges import SafetyConfig

    with pytest.raises(ValueError, match="safety.tasks is set but benchmarks has no safetybench"):
        EvaluateConfig(safety=SafetyConfig(tasks="/data/safetybench"))
    EvaluateConfig(benchmarks=["safetybench"], safety=SafetyConfig(responses="a.jsonl"))
