"""Scenes, queries and pool rows: determinism by seed, schema validity, category mix."""

from __future__ import annotations

import io
import json
from collections import Counter

from PIL import Image

from mmrlhf_ray.data.schemas import to_table, validate_row
from mmrlhf_ray.toyworld import (
    CATEGORIES,
    LONG_MIN_CHARS,
    benchmark_split,
    corpus_texts,
    generate_pool,
    iter_pool,
    simulated_responses,
)
from mmrlhf_ray.toyworld.responses import STYLES


def test_same_seed_identical_bytes_different_seed_differs():
    a, b = generate_pool(60, seed=7), generate_pool(60, seed=7)
    assert to_table(a, "pool").equals(to_table(b, "pool"))
    c = generate_pool(60, seed=8)
    assert (
        sum(
            x["image"] != y["image"] or x["video_frames"] != y["video_frames"]
            for x, y in zip(a, c, strict=True)
        )
        >= 55
    )
    assert [x["question"] for x in a] != [x["question"] for x in c]
    # row i does not depend on where generation started (shards are independent)
    assert generate_pool(10, seed=7, start=50) == a[50:]


def test_rows_are_valid_and_media_decode():
    rows = generate_pool(200, seed=1)
    for row in rows:
        assert validate_row(row, "pool") == []
        gt = json.loads(row["ground_truth"])
        assert row["source"] == "shapes"
        if gt["category"] == "video":
            assert row.get("image") is None and len(row["video_frames"]) == 4
            frames = [Image.open(io.BytesIO(f)) for f in row["video_frames"]]
            assert all(f.size == (64, 64) for f in frames)
            assert row["category_hint"] == "video" and gt["direction"] == gt["answer"]
        else:
            assert Image.open(io.BytesIO(row["image"])).size == (64, 64)
            assert 1 <= len(gt["objects"]) <= 4
            assert len({o["shape"] for o in gt["objects"]}) == len(gt["objects"])
        if gt["category"] == "mcq":
            assert len(gt["options"]) == 4 and gt["answer"] in "ABCD"
            assert "\nA. " in row["question"] and "option's letter" in row["question"]


def test_long_short_threshold_and_skewed_mix():
    counts: Counter[str] = Counter()
    for row in iter_pool(3000, seed=2):
        gt = json.loads(row["ground_truth"])
        counts[gt["category"]] += 1
        length = len(row["reference_answer"])
        assert (length > LONG_MIN_CHARS) == (gt["category"] == "long"), row["reference_answer"]
    image = counts["long"] + counts["short"] + counts["mcq"]
    assert 0.09 < counts["long"] / image < 0.15
    assert 0.80 < counts["short"] / image < 0.88
    assert 0.02 < counts["mcq"] / image < 0.06
    assert counts["safety"] > 60 and counts["video"] > 60


def test_moving_shape_moves_in_its_direction():
    for row in [r for r in generate_pool(300, seed=3) if r.get("video_frames")][:10]:
        gt = json.loads(row["ground_truth"])
        frames = [Image.open(io.BytesIO(f)).convert("L") for f in row["video_frames"]]
        centres = []
        for f in frames:  # centroid of the dark (shape) pixels
            pts = [(x, y) for y in range(64) for x in range(64) if f.getpixel((x, y)) < 215]
            centres.append((sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)))
        dx, dy = centres[-1][0] - centres[0][0], centres[-1][1] - centres[0][1]
        expect = {"right": dx > 20, "left": dx < -20, "down": dy > 20, "up": dy < -20}
        assert expect[gt["direction"]], (gt["direction"], dx, dy)


def test_benchmark_is_held_out_with_exact_category_counts():
    bench = benchmark_split(40, seed=0)
    cats = Counter(json.loads(r["ground_truth"])["category"] for r in bench)
    assert cats == {"short": 12, "mcq": 8, "long": 8, "safety": 6, "video": 6}
    pool_ids = {r["sample_id"] for r in generate_pool(40, seed=0)}
    assert not pool_ids & {r["sample_id"] for r in bench}
    assert benchmark_split(40, seed=0) == bench


def test_corpus_and_simulated_responses_are_deterministic_and_cover_styles():
    texts = corpus_texts(400, seed=0)
    assert len(texts) == 400 and texts == corpus_texts(400, seed=0)
    joined = "\n".join(texts)
    for needle in (
        "I cannot help with that request",
        "Here is how",
        "The image shows",
        "Answer with the option's letter",
        "moves",
        "There are",
        "Paris",
    ):
        assert needle in joined
    row = generate_pool(1, seed=5)[0]
    assert simulated_responses(row, "sim-weak", 5, seed=1) == simulated_responses(
        row, "sim-weak", 5, seed=1
    )
    assert set(STYLES) >= {
        "correct",
        "wrong_attribute",
        "hallucination",
        "off_topic",
        "refusal",
        "unsafe",
    }
    assert set(c for c in CATEGORIES) == {"long", "short", "mcq", "safety", "video"}
