"""Tasks from a records stage (media read from paths), and the official-format export
read back by the existing `annotate source=human` stage."""

from pathlib import Path

from jobs.annotate import main as annotate_main
from mmrlhf_ray.annotate_app.export import export
from mmrlhf_ray.annotate_app.labels import Labels, ResponseLabel
from mmrlhf_ray.annotate_app.tasks import load_tasks
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table
from tests.annotate_app.helpers import make_run, png, team_store


def test_tasks_from_records_with_media_paths(tmp_path):
    (tmp_path / "img.png").write_bytes(png((1, 2, 3)))
    (tmp_path / "clip").mkdir()
    for i in (2, 0, 1):
        (tmp_path / "clip" / f"f{i}.png").write_bytes(png((i, i, i)))
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    records = [
        {
            "query_id": "a",
            "question": "Q?",
            "category": "short",
            "image_path": str(tmp_path / "img.png"),
            "responses": [
                {"text": "x", "rank": 1},
                {"text": "y", "rank": 2},
                {"text": "fixed", "constructed": "positive"},
            ],
        },
        {
            "query_id": "b",
            "question": "Moves?",
            "category": "video",
            "video_path": str(tmp_path / "clip"),
            "responses": [{"text": "left"}, {"text": "up"}],
        },
    ]
    stage = StageDir(str(tmp_path / "run"), "import/records")
    stage.begin({})
    stage.write_part("part-00000", to_table(records, "record"))
    stage.finish(2, 2, 0)
    tasks, media, problems = load_tasks(str(tmp_path / "run"), "import/records")
    assert problems == [] and [t["query_id"] for t in tasks] == ["a", "b"]
    assert [r["text"] for r in tasks[0]["responses"]] == ["x", "y"]  # constructed dropped
    assert [r["response_id"] for r in tasks[1]["responses"]] == ["b#r0", "b#r1"]
    assert media["a"]["image"] == png((1, 2, 3))
    assert media["b"]["frames"] == [png((i, i, i)) for i in range(3)]  # sorted, frames only


def test_official_export_feeds_annotate_source_human(run_dir, tmp_path):
    store = team_store(run_dir, raters_per_query=1)
    labels = Labels(
        [
            ResponseLabel(5, 5, 5, 1, "right"),
            ResponseLabel(2, 1, 5, 2, "wrong"),
            ResponseLabel(1, 1, 5, 3, "denies"),
        ],
        "by colour",
    )
    store.submit("q-image", store.query("q-image").assigned[0], labels, 0)
    data_jsonl = str(tmp_path / "data.jsonl")
    export(store, run_dir, "annotate", data_jsonl, 1, 1)
    ours = StageDir(run_dir, "annotate").read().to_pylist()

    other = make_run(str(tmp_path / "other"))  # same queries: media joined by id
    assert annotate_main([f"run_dir={other}", "source=human", f"labels_jsonl={data_jsonl}"]) == 0
    theirs = StageDir(other, "annotate").read().to_pylist()
    keys = ("text", "helpfulness", "faithfulness", "ethics", "rank", "score_reason")
    assert [[{k: r[k] for k in keys} for r in rec["responses"]] for rec in theirs] == [
        [{k: r[k] for k in keys} for r in rec["responses"]] for rec in ours
    ]
    assert theirs[0]["image"] == ours[0]["image"] and theirs[0]["ranking_reason"] == "by colour"
    assert Path(data_jsonl).read_text().count("\n") == 1
