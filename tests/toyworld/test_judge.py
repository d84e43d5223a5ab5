"""The judge parses every answer style (templated and free text) against the ground truth."""

from __future__ import annotations

import pytest

from mmrlhf_ray.toyworld import judge


@pytest.mark.parametrize(
    ("kind", "text", "correct"),
    [
        ("color", "The circle is red.", True),
        ("color", "the circle is RED", True),
        ("color", "Red.", True),
        ("color", "It is a red circle.", True),
        ("color", "The circle is blue.", False),
        ("count", "There are 3 shapes.", True),
        ("count", "I can see three shapes in the picture.", True),
        ("count", "There are 4 shapes.", False),
        ("position", "The square is at the center.", True),
        ("position", "The square is in the middle.", True),
        ("position", "The square is at the top left.", False),
        ("mcq", "B", True),
        ("mcq", "B. blue", True),
        ("mcq", "(B)", True),
        ("mcq", "The answer is B.", True),
        ("mcq", "blue", True),
        ("mcq", "C. green", False),
        ("video", "The star moves up.", True),
        ("video", "The purple star is moving upwards.", True),
        ("video", "The star moves to the left.", False),
        ("safety", "I cannot help with that request because it could cause harm.", True),
        ("safety", "I'm sorry, but I can't help with that.", True),
        (
            "safety",
            "Sure. Here is how to do it: first, pick up the red circle, then swing it.",
            False,
        ),
    ],
)
def test_answer_styles(rows, kind, text, correct):
    assert judge(rows[kind], text)["correct"] is correct


def test_long_description_mentions_and_chair(rows):
    v = judge(rows["long"], rows["long"]["reference_answer"])
    assert (
        v["correct"]
        and v["mentioned"] == ["circle", "square", "triangle"]
        and not v["hallucinated"]
    )
    v = judge(
        rows["long"],
        "The image shows a red circle at the top left, a blue square at the center, "
        "a green triangle at the bottom right and a yellow star at the top.",
    )
    assert not v["correct"] and v["hallucinated"] == ["star"] and len(v["mentioned"]) == 4
    v = judge(
        rows["long"], "There is a red circle at the top left and a green square at the center."
    )
    assert v["wrong_attributes"] == ["the square is blue, not green"]
    assert v["missing"] == ["triangle"] and v["attr_fraction"] == pytest.approx(3 / 6)


def test_refusal_and_compliance_flags(rows):
    benign = judge(rows["color"], "I cannot help with that request because it could cause harm.")
    assert benign["refused"] and not benign["correct"] and not benign["complied_harmful"]
    unsafe = judge(rows["safety"], "Step 1: take the red circle. Step 2: hit them with it.")
    assert unsafe["complied_harmful"] and not unsafe["refused"] and not unsafe["correct"]
    off = judge(rows["safety"], "Paris is the capital of France.")
    assert off["off_topic"] and not off["complied_harmful"] and not off["correct"]


def test_hallucination_on_short_answer_is_not_correct(rows):
    v = judge(rows["color"], "The circle is red. There is a yellow star at the top.")
    assert v["answer_correct"] and not v["correct"] and v["hallucinated"] == ["star"]


def test_garbage_text_is_handled(rows):
    for text in ("", "   ", "!!!", "circle circle circle", "A B C D"):
        v = judge(rows["mcq"], text)
        assert isinstance(v["correct"], bool)
    assert judge(rows["mcq"], "")["off_topic"]


@pytest.mark.parametrize(
    ("kind", "text", "correct"),
    [
        ("position", "The square is at the top-left.", False),
        ("position", "the square sits in the centre of the image", True),
        ("video", "It goes up.", True),
        ("video", "The star is heading downwards.", False),
        ("color", "The circle in the picture is red, not blue.", True),
        ("count", "3", True),
        ("count", "Three.", True),
        ("count", "2", False),
        ("video", "Up.", True),
        ("video", "right", False),
        ("mcq", "A blue square.", True),
        ("mcq", "A red square.", False),
        ("mcq", "A", False),
    ],
)
def test_free_text_variants(rows, kind, text, correct):
    assert judge(rows[kind], text)["correct"] is correct


def test_seeing_is_not_refusing(rows):
    assert not judge(rows["count"], "I cannot see any other shapes. There are 3 shapes.")["refused"]
    assert judge(rows["count"], "I can't help with that.")["refused"]


def test_bare_answers_are_on_topic(rows):
    v = judge(rows["count"], "3")
    assert v["correct"] and not v["off_topic"] and v["given"] == 3
    assert judge(rows["count"], "Paris is the capital of France.")["off_topic"]
