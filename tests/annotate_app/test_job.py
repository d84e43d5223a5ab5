"""`mmrlhf annotate-app` actions: accounts, gold answers, assignment, status, export."""

import json

from jobs.annotate_app import main
from mmrlhf_ray.annotate_app.labels import Labels, ResponseLabel
from mmrlhf_ray.annotate_app.store import Store
from mmrlhf_ray.core.stage import StageDir


def test_actions_from_the_command_line(run_dir, monkeypatch, capsys):
    for user, role in (("alice", "rater"), ("bob", "rater"), ("lead", "lead")):
        monkeypatch.setenv("MMRLHF_PASSWORD", f"{user}-secret")
        assert main([f"run_dir={run_dir}", "action=add-user", f"user={user}", f"role={role}"]) == 0
    gold = f"{run_dir}/gold.jsonl"
    with open(gold, "w") as f:  # the official format; no image path: the task's media
        f.write(
            json.dumps(
                {
                    "id": "q-third",
                    "question": "How many shapes are there?",
                    "models_output": ["Two.", "Three."],
                    "final_ranking": [1, 2],
                    "helpfulness": [5, 1],
                    "faithfulness": [5, 1],
                    "ethical": [5, 5],
                }
            )
            + "\n"
        )
    args = [f"run_dir={run_dir}", "raters_per_query=1", f"gold_jsonl={gold}"]
    assert main([*args, "action=assign"]) == 0
    assert "3 queries in generate (3 new)" in capsys.readouterr().out
    store = Store(f"{run_dir}/annotate-app/annotations.sqlite")
    assert store.query("q-third").gold.ranks == [1, 2]
    assert sorted(store.query("q-third").assigned) == ["alice", "bob"]  # gold: every rater
    assert len(store.query("q-image").assigned) == 1
    assert store.login("lead", "lead-secret") is not None
    rater = store.query("q-video").assigned[0]
    store.submit(
        "q-video", rater, Labels([ResponseLabel(4, 4, 5, r, "x") for r in (1, 2, 3)], "y"), 0
    )
    assert main([*args, "action=status"]) == 0
    assert "(pending 1, disputed 0, agreed 1, adjudicated 0, gold 1)" in capsys.readouterr().out
    assert main([*args, "action=export"]) == 0
    assert "exported 2 final records" in capsys.readouterr().out
    ids = StageDir(run_dir, "annotate").read(columns=["query_id"]).column("query_id").to_pylist()
    assert ids == ["q-third", "q-video"]


def test_bad_setup_is_a_clear_error(run_dir, capsys):
    assert main([f"run_dir={run_dir}", "action=assign", "input_stage=annotate"]) == 2
    assert "stage 'annotate' has not finished" in capsys.readouterr().err
    gold = f"{run_dir}/gold.jsonl"
    with open(gold, "w") as f:
        f.write(
            json.dumps(
                {
                    "id": "q-image",
                    "question": "?",
                    "models_output": ["Other."],
                    "final_ranking": [1],
                }
            )
            + "\n"
        )
    assert main([f"run_dir={run_dir}", "action=assign", f"gold_jsonl={gold}"]) == 2
    assert "models_output differ from the task's responses" in capsys.readouterr().err
