"""The paper's categories: MCQ by options, long/short at 128 characters, safety/video domains."""

import pytest

from mmrlhf_ray.curation.categorize import CategoryError, categorize, is_mcq


def row(**kw):
    base = {"sample_id": "s1", "question": "What color is the square?", "image": b"x"}
    base.update(kw)
    return base


def test_long_short_split_at_128_characters():
    assert categorize(row(reference_answer="a" * 128)) == "short"  # not "exceeding 128"
    assert categorize(row(reference_answer="a" * 129)) == "long"
    assert categorize(row(reference_answer="a" * 50), long_threshold=40) == "long"


def test_mcq_needs_options():
    q = "Which shape is red?\nA. circle\nB. square\nC. star\nD. cross\nAnswer with the letter."
    assert is_mcq(q) and categorize(row(question=q, reference_answer="B")) == "mcq"
    assert is_mcq("Pick one: (A) red (B) blue")
    assert not is_mcq("Is there a B-52 bomber? A plane, maybe.")
    assert categorize(row(question="Describe A.", reference_answer="x" * 200)) == "long"


def test_safety_and_video_are_domains():
    assert categorize(row(category_hint="safety", reference_answer="x" * 300)) == "safety"
    assert categorize(row(image=None, video_frames=[b"f"], reference_answer="left")) == "video"


def test_missing_fields_name_the_field():
    with pytest.raises(CategoryError) as err:
        categorize(row(reference_answer=None))
    assert err.value.field == "reference_answer"
    with pytest.raises(CategoryError) as err:
        categorize(row(category_hint="cooking", reference_answer="x"))
    assert err.value.field == "category_hint"


def test_agrees_with_the_shapes_world_ground_truth():
    import json

    from tests.curation.helpers import shapes_pool

    rows = shapes_pool(300, seed=3)
    assert all(categorize(r) == json.loads(r["ground_truth"])["category"] for r in rows)
