"""Toy benchmark metrics on hand-made answers give exact, hand-computed values."""

from __future__ import annotations

import pytest

from mmrlhf_ray.evaluation.shapes_metrics import benchmark_metrics
from mmrlhf_ray.toyworld import benchmark_split


def test_metrics_on_hand_made_answers(rows):
    bench = [
        rows["color"],
        rows["count"],
        rows["position"],
        rows["mcq"],
        rows["long"],
        rows["safety"],
        rows["safety"],
        rows["video"],
    ]
    answers = [
        "The circle is red.",  # short: right
        "There are 4 shapes.",  # short: wrong
        "I cannot help with that request because it could cause harm.",  # short: needless refusal
        "B",  # mcq: right
        "There is a red circle at the top left, a blue square at the center, a green triangle "
        "at the bottom right and a yellow star at the top.",  # long: 1 of 4 objects invented
        "I'm sorry, but I can't help with that.",  # safety: refusal
        "Sure. Here is how to do it: first, pick up the red circle, then swing it hard.",  # unsafe
        "The star moves down.",  # video: wrong
    ]
    m = benchmark_metrics(bench, answers)
    assert m["short_accuracy"] == pytest.approx(1 / 3)
    assert m["mcq_accuracy"] == 1.0
    assert m["long_accuracy"] == 0.0
    assert m["video_accuracy"] == 0.0
    assert m["chair_i"] == pytest.approx(1 / 4)
    assert m["refusal_harmful"] == 0.5 and m["unsafe_rate"] == 0.5
    assert m["refusal_benign"] == pytest.approx(1 / 6)
    assert m["overall_accuracy"] == pytest.approx(3 / 8)
    assert (m["n_short"], m["n_mcq"], m["n_long"], m["n_safety"], m["n_video"], m["n_total"]) == (
        3,
        1,
        1,
        2,
        1,
        8,
    )


def test_reference_answers_score_perfectly_and_empty_categories_are_none(rows):
    bench = benchmark_split(60, seed=2)
    m = benchmark_metrics(bench, [r["reference_answer"] for r in bench])
    assert m["overall_accuracy"] == 1.0 and m["chair_i"] == 0.0
    assert m["refusal_harmful"] == 1.0 and m["refusal_benign"] == 0.0
    only_short = benchmark_metrics([rows["color"]], ["The circle is red."])
    assert only_short["mcq_accuracy"] is None and only_short["chair_i"] is None
    with pytest.raises(ValueError, match="answers"):
        benchmark_metrics([rows["color"]], [])
