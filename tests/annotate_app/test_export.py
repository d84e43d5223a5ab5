"""Final labels -> annotate records -> the real `pairs` stage gives exactly the expected
pairs; the official data.jsonl reads back through the release reader; gold checks."""

import pytest

from jobs.pairs import main as pairs_main
from mmrlhf_ray.annotate.pairs import expand_record
from mmrlhf_ray.annotate_app.export import export
from mmrlhf_ray.annotate_app.labels import Labels, ResponseLabel
from mmrlhf_ray.annotate_app.review import agreement, review_query
from mmrlhf_ray.annotate_app.tasks import load_tasks
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.release import read_release_file
from tests.annotate_app.helpers import team_store


def labels(ranks, h=(3, 3, 3), tie=None):
    responses = [ResponseLabel(h[i], 4, 5, r, f"reason {i + 1}") for i, r in enumerate(ranks)]
    kind, text = tie or (None, None)
    return Labels(responses, "ranked by correctness", kind, text)


def pair_ids(run_dir):
    assert pairs_main([f"run_dir={run_dir}"]) == 0
    return sorted(
        StageDir(run_dir, "pairs").read(columns=["pair_id"]).column("pair_id").to_pylist()
    )


@pytest.fixture
def store(run_dir):
    s = team_store(run_dir)
    s.submit("q-image", "alice", labels([1, 2, 3]), 0)
    s.submit("q-image", "bob", labels([1, 2, 2]), 0)  # rankings differ: disputed
    s.submit("q-video", "alice", labels([1, 2, 3], h=(5, 2, 1)), 0)
    s.submit("q-video", "bob", labels([1, 2, 3], h=(4, 2, 2)), 0)  # agreed
    s.submit("q-third", "alice", labels([1, 1], tie=("negative", "It is green.")), 0)
    return s


def test_export_then_pairs_gives_the_expected_pairs(store, run_dir):
    data_jsonl = f"{run_dir}/annotate-app/data.jsonl"
    summary = export(store, run_dir, "annotate", data_jsonl, 2, 1)
    assert summary["records"] == 1  # q-video only: q-image disputed, q-third pending
    assert summary["counts"] == {
        "pending": 1,
        "disputed": 1,
        "agreed": 1,
        "adjudicated": 0,
        "gold": 0,
    }
    assert pair_ids(run_dir) == [
        "q-video::q-video/m0/0>q-video/m1/0",
        "q-video::q-video/m0/0>q-video/m2/0",
        "q-video::q-video/m1/0>q-video/m2/0",
    ]
    record = StageDir(run_dir, "annotate").read().to_pylist()[0]
    assert [r["helpfulness"] for r in record["responses"]] == [4, 2, 1]  # lower medians
    assert len(record["video_frames"]) == 3 and record["category"] == "video"

    store.submit("q-third", "bob", labels([1, 1], tie=("positive", "Two shapes.")), 0)
    q = store.query("q-image")
    store.adjudicate("q-image", "lead", labels([1, 2, 2]), q.labels_rev)
    summary = export(store, run_dir, "annotate", data_jsonl, 2, 1)
    assert summary["counts"] == {
        "pending": 0,
        "disputed": 0,
        "agreed": 2,
        "adjudicated": 1,
        "gold": 0,
    }
    expected = [
        "q-image::q-image/m0/0>q-image/m1/0",  # m1, m2 tied: no pair
        "q-image::q-image/m0/0>q-image/m2/0",
        "q-third::q-third/m0/0>q-third#constructed-negative",  # tie rule: alice's negative
        "q-third::q-third/m1/0>q-third#constructed-negative",
        "q-video::q-video/m0/0>q-video/m1/0",
        "q-video::q-video/m0/0>q-video/m2/0",
        "q-video::q-video/m1/0>q-video/m2/0",
    ]
    assert pair_ids(run_dir) == expected  # pairs saw its input change and re-made itself
    manifest = StageDir(run_dir, "annotate").read_manifest()
    assert manifest["counts"] == {"in": 3, "out": 3, "quarantined": 0}

    # the official format reads back through the release reader to the same pairs; media
    # held as bytes have no path there: `annotate source=human` joins them by id (known)
    known = {t["query_id"]: t for t in load_tasks(run_dir, "generate")[0]}
    lines = list(read_release_file(data_jsonl, "data", known=known))
    assert [line.problem for line in lines] == [None, None, None]
    texts = sorted(
        (p["chosen"], p["rejected"]) for line in lines for p in expand_record(line.row)[0]
    )
    parquet = StageDir(run_dir, "pairs").read(columns=["chosen", "rejected"]).to_pylist()
    assert texts == sorted((p["chosen"], p["rejected"]) for p in parquet)
    tie_line = next(line.row for line in lines if line.row["query_id"] == "q-third")
    assert [r["constructed"] for r in tie_line["responses"]] == [None, None, "negative"]
    assert [r["score_reason"] for r in tie_line["responses"]][:2] == ["reason 1", "reason 2"]


def test_export_again_without_changes_does_nothing(store, run_dir):
    first = export(store, run_dir, "annotate", f"{run_dir}/d.jsonl", 2, 1)
    again = export(store, run_dir, "annotate", f"{run_dir}/d.jsonl", 2, 1)
    assert (first["unchanged"], again["unchanged"]) == (False, True)


def test_gold_queries_score_the_raters(store):
    store.set_gold("q-third", labels([1, 2], h=(5, 1)))
    store.submit("q-third", "bob", labels([2, 1], h=(5, 3)), 0)
    q = store.query("q-third")
    review = review_query(q, 2)
    assert review.status == "gold" and review.final.ranks == [1, 2]
    gold = agreement(store.queries()).gold_by_rater
    # alice tied both (tau undefined); bob reversed them (tau -1). Score errors:
    # alice |3-5| + |3-1| over 6 scores = 4/6; bob |3-1| = 2/6.
    assert gold == {
        "alice": {"queries": 1, "tau": None, "score_mae": pytest.approx(4 / 6)},
        "bob": {"queries": 1, "tau": -1.0, "score_mae": pytest.approx(2 / 6)},
    }
