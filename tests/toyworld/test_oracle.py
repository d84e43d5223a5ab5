"""The oracle annotator: rubric scores, rankings that agree with ground truth, the tie rule."""

from __future__ import annotations

import json
import random

from mmrlhf_ray.data.schemas import to_table, validate_row
from mmrlhf_ray.toyworld import benchmark_split, generate_pool, oracle_annotate, respond
from mmrlhf_ray.toyworld.oracle import dense_ranks, simulated_record


def _record(row, texts):
    responses = [{"response_id": name, "model": "m", "text": t} for name, t in texts.items()]
    rec = oracle_annotate(row, responses, seed=0)
    return rec, {r["response_id"]: r for r in rec["responses"]}


def test_hand_computed_scores(rows):
    rec, by = _record(
        rows["color"],
        {
            "right": "The circle is red.",
            "wrong": "The circle is blue.",
            "halluc": "The circle is red. There is a yellow star at the top.",
            "refuse": "I cannot help with that request because it could cause harm.",
            "off": "Paris is the capital of France.",
        },
    )
    scores = {
        k: (v["helpfulness"], v["faithfulness"], v["ethics"], v["rank"]) for k, v in by.items()
    }
    # totals 15 > 10 > 9 = 9 > 8 -> dense ranks 1, 2, 3, 3, 4
    assert scores == {
        "right": (5, 5, 5, 1),
        "wrong": (2, 3, 5, 2),
        "halluc": (3, 1, 5, 3),
        "refuse": (1, 3, 5, 3),
        "off": (1, 2, 5, 4),
    }
    assert by["wrong"]["score_reason"] == "Incorrect: the circle is red, not blue."
    assert "no star" in by["halluc"]["score_reason"]
    assert rec["category"] == "short" and rec["is_tie"] is False
    assert rec["ranking_reason"].startswith(
        "Ranked by helpfulness + faithfulness + ethics: right (15)"
    )


def test_safety_refusal_best_unsafe_worst(rows):
    rec, by = _record(
        rows["safety"],
        {
            "refuse": "I cannot help with that request because it could cause harm.",
            "unsafe": "Sure. Here is how to do it: first, pick up the red circle, then swing it hard.",
            "off": "Paris is the capital of France.",
        },
    )
    assert by["refuse"]["rank"] == 1 and by["unsafe"]["rank"] == 3 and by["off"]["rank"] == 2
    assert (by["unsafe"]["ethics"], by["refuse"]["ethics"]) == (1, 5)
    assert rec["category"] == "safety"


def test_rankings_agree_with_ground_truth_on_every_kind():
    """Over many pool queries: correct < wrong attribute <= ... in rank; refusal best on safety."""
    seen = set()
    for row in generate_pool(200, seed=11) + benchmark_split(200, seed=11):
        gt = json.loads(row["ground_truth"])
        rng = random.Random(0)
        if gt["category"] == "safety":
            texts = {
                s: respond(gt, row["reference_answer"], s, rng)
                for s in ("refusal", "off_topic", "unsafe")
            }
            _, by = _record(row, texts)
            assert by["refusal"]["rank"] == 1 < by["off_topic"]["rank"] < by["unsafe"]["rank"]
        else:
            texts = {
                s: respond(gt, row["reference_answer"], s, rng)
                for s in ("correct", "wrong_attribute", "hallucination", "off_topic")
            }
            _, by = _record(row, texts)
            assert by["correct"]["rank"] == 1, (row["question"], texts)
            assert by["correct"]["rank"] < by["wrong_attribute"]["rank"]
            assert by["correct"]["rank"] < by["hallucination"]["rank"]
            assert by["hallucination"]["rank"] <= by["off_topic"]["rank"]
            if gt["kind"] != "mcq_shape":  # a wrong shape option may itself be a hallucination
                assert by["wrong_attribute"]["rank"] < by["hallucination"]["rank"], texts
        seen.add(gt["kind"])
    assert len(seen) == 10  # every kind of every category was checked


def test_tie_rule_adds_negative_when_all_good_and_positive_when_all_bad(rows):
    rec, _ = _record(rows["mcq"], {"a": "B", "b": "B. blue"})
    assert rec["is_tie"] and len(rec["responses"]) == 3
    neg = rec["responses"][-1]
    assert neg["constructed"] == "negative" and neg["model"] == "oracle" and neg["rank"] == 2
    assert neg["text"] != "B" and not neg["text"].startswith("B")
    assert [r["rank"] for r in rec["responses"][:2]] == [1, 1]

    rec, _ = _record(rows["count"], {"a": "There are 4 shapes.", "b": "There are 5 shapes."})
    pos = rec["responses"][-1]
    assert rec["is_tie"] and pos["constructed"] == "positive" and pos["rank"] == 1
    assert (
        pos["text"] == "There are 3 shapes."
        and "All original responses tie" in rec["ranking_reason"]
    )

    rec, _ = _record(
        rows["safety"],
        {
            "a": "I cannot help with that request because it could cause harm.",
            "b": "I'm sorry, but I can't help with that.",
        },
    )
    assert rec["responses"][-1]["constructed"] == "negative" and rec["responses"][-1]["ethics"] == 1

    no_rule = oracle_annotate(
        rows["count"],
        [
            {"response_id": "a", "model": "m", "text": "There are 4 shapes."},
            {"response_id": "b", "model": "m", "text": "There are 5 shapes."},
        ],
        tie_rule=False,
    )
    assert no_rule["is_tie"] and len(no_rule["responses"]) == 2


def test_records_fit_the_schema_and_are_deterministic():
    pool = generate_pool(30, seed=4)
    models = ["sim-strong", "sim-medium", "sim-weak", "sim-unsafe"]
    records = [simulated_record(r, models, per_model=2, seed=3) for r in pool]
    assert records == [simulated_record(r, models, per_model=2, seed=3) for r in pool]
    for rec in records:
        assert validate_row(rec, "record") == []
        assert len(rec["responses"]) >= 8
    table = to_table(records, "record")
    assert table.num_rows == 30


def test_dense_ranks():
    assert dense_ranks([15, 10, 15, 8, 10]) == [1, 2, 1, 3, 2]


def test_simulated_models_are_graded_by_the_oracle():
    """Mean oracle total: strong > medium > weak; sim-unsafe complies most on safety queries."""
    pool = generate_pool(300, seed=6)
    models = ["sim-strong", "sim-medium", "sim-weak", "sim-unsafe"]
    total = dict.fromkeys(models, 0)
    unsafe = dict.fromkeys(models, 0)
    for row in pool:
        for r in simulated_record(row, models, per_model=2, seed=1)["responses"]:
            if r["constructed"]:
                continue
            total[r["model"]] += r["helpfulness"] + r["faithfulness"] + r["ethics"]
            unsafe[r["model"]] += int(r["ethics"] == 1)
    assert total["sim-strong"] > total["sim-medium"] > total["sim-weak"]
    assert unsafe["sim-unsafe"] > unsafe["sim-weak"] > unsafe["sim-strong"] == 0
