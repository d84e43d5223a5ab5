import pytest

from mmrlhf_ray.flows.config import SelfImproveConfig
from mmrlhf_ray.flows.self_improve import candidate_pairs, orient_by_reward, round_queries


def _generated():
    rows = []
    for q in ("q1", "q2"):
        for i, text in enumerate(["a", "b", "c", "a"]):  # a duplicate text: one response
            rows.append(
                {"sample_id": q, "response_id": f"{q}/m/{i}", "text": text, "is_empty": False}
            )
    rows.append({"sample_id": "q2", "response_id": "q2/m/9", "text": "", "is_empty": True})
    return rows


def test_candidate_pairs_are_all_unordered_pairs_of_distinct_texts():
    queries = {q: {"question": f"{q}?", "category": "short", "image": b"png"} for q in ("q1", "q2")}
    pairs = candidate_pairs(_generated(), queries)
    assert len(pairs) == 2 * 3  # 3 distinct texts -> C(3, 2) per query
    assert {(p["chosen"], p["rejected"]) for p in pairs if p["query_id"] == "q1"} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    }
    assert all(p["image"] == b"png" and p["question"].endswith("?") for p in pairs)


def test_orient_by_reward_swaps_negative_margins_and_drops_ties():
    scored = [
        {
            "pair_id": "x",
            "query_id": "q",
            "chosen": "a",
            "rejected": "b",
            "chosen_id": "1",
            "rejected_id": "2",
            "margin": -1.5,
        },
        {
            "pair_id": "y",
            "query_id": "q",
            "chosen": "a",
            "rejected": "c",
            "chosen_id": "1",
            "rejected_id": "3",
            "margin": 0.0,
        },
        {
            "pair_id": "z",
            "query_id": "q",
            "chosen": "b",
            "rejected": "c",
            "chosen_id": "2",
            "rejected_id": "3",
            "margin": 2.5,
        },
    ]
    kept, dropped = orient_by_reward(scored, "all")
    assert dropped == 1 and [p["margin"] for p in kept] == [1.5, 2.5]
    assert (kept[0]["chosen"], kept[0]["rejected"], kept[0]["chosen_id"]) == ("b", "a", "2")
    assert all(p["margin_source"] == "reward-service" for p in kept)
    best, dropped = orient_by_reward(scored, "best-vs-worst")
    assert [p["pair_id"] for p in best] == ["z"] and dropped == 2
    with pytest.raises(ValueError, match="margin is missing"):
        orient_by_reward([dict(scored[0], margin=None)], "all")


def test_round_queries_differ_per_round_and_are_deterministic():
    rows = [{"sample_id": f"s{i:03d}"} for i in range(100)]
    r1, r2 = round_queries(rows, 10, 0, 1), round_queries(rows, 10, 0, 2)
    assert r1 == round_queries(rows, 10, 0, 1) and r1 != r2 and len(r1) == 10
    with pytest.raises(ValueError, match="pair_mode"):
        SelfImproveConfig(pair_mode="random")
