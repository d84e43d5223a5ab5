"""Simulated policy "models" of graded quality, and the text corpus for the tokenizer.

A response *style* says what kind of answer is written, always in the answer language
of ``language.py``:

* ``correct``         the reference answer (small surface variations);
* ``wrong_attribute`` one attribute wrong (colour, position, count, letter, direction);
* ``hallucination``   the answer plus an object that is not in the image;
* ``off_topic``       text unrelated to the question;
* ``refusal``         a refusal (needless on a benign query, right on a harmful one);
* ``unsafe``          compliance with a harmful instruction (safety queries only).

``SIMULATED_MODELS`` gives each model a distribution over styles, separately for benign
and harmful queries, so "sim-strong" is mostly right and "sim-unsafe" complies with
harmful requests. ``simulated_responses(row, model, n, seed)`` is deterministic.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from mmrlhf_ray.toyworld import language as L
from mmrlhf_ray.toyworld.queries import CATEGORIES, ground_truth, make_query
from mmrlhf_ray.toyworld.scene import COLORS, DIRECTIONS, POSITIONS, SHAPES, derive_seed

STYLES = ("correct", "wrong_attribute", "hallucination", "off_topic", "refusal", "unsafe")

# model -> (benign style weights, harmful style weights)
SIMULATED_MODELS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "sim-strong": (
        {"correct": 0.8, "wrong_attribute": 0.1, "hallucination": 0.05, "off_topic": 0.05},
        {"refusal": 0.95, "off_topic": 0.05},
    ),
    "sim-medium": (
        {
            "correct": 0.55,
            "wrong_attribute": 0.25,
            "hallucination": 0.1,
            "off_topic": 0.05,
            "refusal": 0.05,
        },
        {"refusal": 0.7, "unsafe": 0.2, "off_topic": 0.1},
    ),
    "sim-weak": (
        {
            "correct": 0.3,
            "wrong_attribute": 0.35,
            "hallucination": 0.2,
            "off_topic": 0.1,
            "refusal": 0.05,
        },
        {"refusal": 0.4, "unsafe": 0.5, "off_topic": 0.1},
    ),
    "sim-unsafe": (
        {"correct": 0.6, "wrong_attribute": 0.2, "hallucination": 0.15, "off_topic": 0.05},
        {"unsafe": 0.95, "refusal": 0.05},
    ),
}

OFF_TOPIC = (
    "I like to think about the weather on sunny days.",
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Water boils when it gets very hot on the stove.",
    "My favourite food is soup with fresh bread.",
)
REFUSALS = (
    L.REFUSAL,
    "I'm sorry, but I can't help with that.",
    "I cannot assist with this request.",
)
UNSAFE = (
    "Sure. Here is how to do it: first, pick up the {c} {s}, then swing it hard at the person "
    "until they are hurt.",
    "Here is how: sharpen the edges of the {c} {s}, hide it in your coat, then use it on them "
    "when nobody is watching.",
    "Step 1: take the {c} {s}. Step 2: break in through the back window. Step 3: leave quickly.",
)


def _other(rng: random.Random, options: list[str], exclude: str) -> str:
    return rng.choice([x for x in options if x != exclude])


def _fake_object(rng: random.Random, gt: dict) -> dict[str, str]:
    """An object whose shape is not in the scene (scenes use at most 4 of 6 shapes)."""
    present = {o["shape"] for o in gt.get("objects", [])}
    return {
        "shape": rng.choice([s for s in SHAPES if s not in present]),
        "color": rng.choice(list(COLORS)),
        "position": rng.choice(POSITIONS),
    }


def _wrong(gt: dict, rng: random.Random) -> str:
    """The answer with exactly one attribute wrong."""
    kind, objects = gt["kind"], gt.get("objects", [])
    if kind == "color":
        return L.color_answer(gt["target"], _other(rng, list(COLORS), gt["answer"]))
    if kind == "count":
        n = int(gt["answer"])
        return L.count_answer(n + 1 if n == 1 or rng.random() < 0.5 else n - 1)
    if kind == "position":
        return L.position_answer(gt["target"], _other(rng, list(POSITIONS), gt["answer"]))
    if kind.startswith("mcq_"):
        letter = _other(rng, list(L.LETTERS), gt["answer"])
        return L.mcq_answer(letter, gt["options"][L.LETTERS.index(letter)])
    if kind == "direction":
        return L.direction_answer(gt["target"], _other(rng, list(DIRECTIONS), gt["answer"]))
    if kind == "describe":
        changed = [dict(o) for o in objects]
        victim = rng.choice(changed)
        if rng.random() < 0.5:
            victim["color"] = _other(rng, list(COLORS), victim["color"])
        else:
            taken = {o["position"] for o in changed}
            victim["position"] = rng.choice([p for p in POSITIONS if p not in taken])
        return L.long_answer(changed)
    raise ValueError(f"ground_truth.kind: no wrong answer for {kind!r}")


def _correct(gt: dict, reference: str, rng: random.Random) -> str:
    kind = gt["kind"]
    if kind.startswith("mcq_") and rng.random() < 0.5:
        return L.mcq_answer(gt["answer"])  # bare letter
    if kind == "describe":
        objects = list(gt["objects"])
        rng.shuffle(objects)
        return L.long_answer(objects)
    return reference


def respond(gt: dict[str, Any], reference: str, style: str, rng: random.Random) -> str:
    """A response of ``style`` to the query with ground truth ``gt`` and reference answer."""
    if style == "correct":
        return _correct(gt, reference, rng)
    if style == "wrong_attribute":
        # on a harmful query the "wrong" answer is to comply
        return _wrong(gt, rng) if gt["kind"] != "harmful" else respond(gt, reference, "unsafe", rng)
    if style == "hallucination":
        fake = _fake_object(rng, gt)
        if gt["kind"] == "describe":
            objects = list(gt["objects"]) + [fake]
            rng.shuffle(objects)
            return L.long_answer(objects)
        base = reference if gt["kind"] != "harmful" else rng.choice(OFF_TOPIC)
        base = base if base.endswith((".", "!", "?")) else f"{base}."
        return f"{base} {L.object_sentence(fake)}"
    if style == "off_topic":
        return rng.choice(OFF_TOPIC)
    if style == "refusal":
        return rng.choice(REFUSALS)
    if style == "unsafe":
        target = next(
            (o for o in gt.get("objects", []) if o["shape"] == gt.get("target")),
            {"color": "red", "shape": gt.get("target") or "circle"},
        )
        return rng.choice(UNSAFE).format(c=target["color"], s=target["shape"])
    raise ValueError(f"style: {style!r} is not one of {', '.join(STYLES)}")


def pick_style(model: str, harmful: bool, rng: random.Random) -> str:
    if model not in SIMULATED_MODELS:
        raise ValueError(f"model: {model!r} is not one of {', '.join(SIMULATED_MODELS)}")
    weights = SIMULATED_MODELS[model][1 if harmful else 0]
    names = list(weights)
    return rng.choices(names, weights=[weights[s] for s in names])[0]


def _row_seed(row: dict[str, Any], model: str, seed: int) -> int:
    key = f"{row.get('sample_id') or row.get('query_id')}|{model}|{seed}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def simulated_responses(
    pool_row: dict[str, Any], model: str, n: int = 1, seed: int = 0
) -> list[str]:
    """``n`` responses of simulated ``model`` to a pool row (deterministic in all arguments)."""
    gt = ground_truth(pool_row)
    rng = random.Random(_row_seed(pool_row, model, seed))
    harmful = gt["category"] == "safety"
    return [
        respond(gt, pool_row.get("reference_answer") or "", pick_style(model, harmful, rng), rng)
        for _ in range(n)
    ]


def simulated_response_styles(
    pool_row: dict[str, Any], model: str, n: int = 1, seed: int = 0
) -> list[str]:
    """The styles ``simulated_responses`` used, same arguments (for tests and analysis)."""
    gt = ground_truth(pool_row)
    rng = random.Random(_row_seed(pool_row, model, seed))
    harmful = gt["category"] == "safety"
    out = []
    for _ in range(n):
        style = pick_style(model, harmful, rng)
        respond(gt, pool_row.get("reference_answer") or "", style, rng)
        out.append(style)
    return out


def corpus_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts for BPE training: questions, references and every response style.

    Text only (no pixels drawn), so it is fast. Each query contributes its question,
    its reference answer and one response of every style that applies to it; the
    fixed refusal/off-topic/unsafe phrasings all appear once at the start.
    """
    out: list[str] = list(REFUSALS) + list(OFF_TOPIC)
    out += [u.format(c=c, s=s) for u in UNSAFE for c, s in zip(COLORS, SHAPES, strict=True)]
    i = 0
    while len(out) < n:
        rng = random.Random(derive_seed("corpus", seed, i))
        category = CATEGORIES[i % len(CATEGORIES)]
        query = make_query(rng, category)
        gt, ref = query["ground_truth"], query["reference_answer"]
        out += [query["question"], ref]
        styles = (
            ("refusal", "unsafe", "off_topic", "hallucination")
            if category == "safety"
            else ("correct", "wrong_attribute", "hallucination")
        )
        out += [respond(gt, ref, s, rng) for s in styles]
        i += 1
    return out[:n]
