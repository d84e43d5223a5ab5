"""ACC / ACC+ exactly as defined, categories, and the official mm_reward_bench.jsonl."""

import json

import pytest

from mmrlhf_ray.evaluation.reward_bench import (
    PairResult,
    acc_table,
    category_of,
    format_table,
    read_bench_jsonl,
    results_from_rewards,
    write_bench_jsonl,
)


def test_acc_and_acc_plus_hand_computed():
    results = [
        # query a (mcq): both right -> counts for ACC+
        PairResult("a", "mcq", 1.0, 0.0),
        PairResult("a", "mcq", 2.0, -1.0),
        # query b (mcq): one wrong -> ACC+ fails
        PairResult("b", "mcq", 1.0, 0.0),
        PairResult("b", "mcq", 0.0, 1.0),
        # query c (long): a tie is wrong (strict >)
        PairResult("c", "long", 0.5, 0.5),
    ]
    table = acc_table(results)
    points = ("acc", "acc_plus", "pairs", "queries")
    assert {k: table["mcq"][k] for k in points} == {
        "acc": 0.75,
        "acc_plus": 0.5,
        "pairs": 4,
        "queries": 2,
    }
    assert {k: table["long"][k] for k in points} == {
        "acc": 0.0,
        "acc_plus": 0.0,
        "pairs": 1,
        "queries": 1,
    }
    # ACC resamples whole queries: 2 queries are too few for an interval, and it says so
    acc = table["mcq"]["acc_interval"]
    assert (acc["n"], acc["n_clusters"], acc["method"]) == (4, 2, "too-few-clusters")
    # ACC+ of 1 of 2 queries: the exact interval, 1 - (1-p)^2 = 0.025 .. p^2 = 0.975
    plus = table["mcq"]["acc_plus_interval"]
    assert plus["method"] == "clopper-pearson"
    assert (plus["low"], plus["high"]) == pytest.approx((1 - 0.975**0.5, 0.975**0.5), abs=1e-9)
    # one pair, wrong: nothing to resample, the exact interval of 0/1 is [0, 0.975]
    long_acc = table["long"]["acc_interval"]
    assert long_acc["method"] == "clopper-pearson" and long_acc["high"] == pytest.approx(0.975)
    assert table["overall"]["acc"] == pytest.approx(3 / 5)
    assert table["overall"]["acc_plus"] == pytest.approx(1 / 3)
    assert list(table) == ["mcq", "long", "overall"]  # paper's order, overall last
    md = format_table({"m": table})
    assert "| Mcq (4 pairs / 2 q) | 0.75 (no interval: 2 queries) | 0.50 [0.01, 0.99] |" in md


@pytest.mark.parametrize(
    "path,cat",
    [
        ("mcq/cauldron_iconqa_images_iconqa_00010991.png.png", "mcq"),
        ("data/long/x.png", "long"),
        ("video/clip_001", "video"),
        ("images/safety_vlguard_12.jpg", "safety"),
        ("foo/bar.png", None),
        (None, None),
    ],
)
def test_category_of_paths(path, cat):
    assert category_of(path) == cat


def _line(**kw):
    base = {
        "id": "q1",
        "image": "short/a.png",
        "prompt": "What colour?",
        "chosen": "red",
        "rejected": "blue",
        "chosen_reason": "right",
        "rejected_reason": "wrong",
    }
    base.update(kw)
    return json.dumps(base)


def test_read_quarantines_bad_lines_and_write_round_trip(tmp_path):
    src = tmp_path / "mm_reward_bench.jsonl"
    src.write_text(
        "\n".join(
            [
                _line(rewards=[1.0, 0.5]),
                "{not json",
                _line(id="q2", chosen=""),  # empty chosen
                _line(id="q3", image="misc/a.png"),  # no category in the path
                _line(id="q4", rewards=[1.0]),  # malformed rewards
                _line(id="q5", video="video/clip", image=None, rewards=[0.0, 2.0]),
            ]
        )
        + "\n"
    )
    rows, bad = read_bench_jsonl(src)
    assert [r["id"] for r in rows] == ["q1", "q5"]
    assert [(b["locator"], b["field"]) for b in bad] == [
        ("line 2", "line"),
        ("line 3", "chosen"),
        ("line 4", "image"),
        ("line 5", "rewards"),
    ]
    assert len(rows) + len(bad) == 6  # nothing lost
    results = results_from_rewards(rows)
    assert [(r.category, r.correct) for r in results] == [("short", True), ("video", False)]
    out = write_bench_jsonl(tmp_path / "scored.jsonl", rows, results)
    lines = [json.loads(x) for x in open(out)]
    assert lines[0]["rewards"] == [1.0, 0.5] and lines[0]["critic"] == ["", ""]
    assert "_line" not in lines[0] and lines[1]["video"] == "video/clip"


def test_vl_rewardbench_categories_are_accepted(tmp_path):
    from mmrlhf_ray.evaluation.reward_bench import acc_table, results_from_rewards

    src = tmp_path / "vl_reward_bench.jsonl"
    src.write_text(
        "\n".join(
            [
                _line(id="g1", image="vl/1.png", category="general", rewards=[1.0, 0.0]),
                _line(id="h1", image="hallucination/2.png", rewards=[0.0, 1.0]),
                _line(id="r1", image="vl/3.png", category="Reasoning", rewards=[2.0, 1.0]),
                _line(id="r1", image="vl/3.png", category="reasoning", rewards=[0.0, 1.0]),
            ]
        )
        + "\n"
    )
    rows, bad = read_bench_jsonl(src)
    assert bad == [] and len(rows) == 4
    table = acc_table(results_from_rewards(rows))
    assert list(table) == ["general", "hallucination", "reasoning", "overall"]
    r = table["reasoning"]
    assert (r["acc"], r["acc_plus"], r["pairs"], r["queries"]) == (0.5, 0.0, 2, 1)
    assert table["overall"]["acc"] == 2 / 4 and table["overall"]["acc_plus"] == 1 / 3


def test_bench_runs_at_the_reward_models_own_settings(tmp_path):
    from jobs.evaluate_reward_bench import model_settings
    from mmrlhf_ray.evaluation.reward_bench import DEFAULT_CRITIQUE_TOKENS
    from mmrlhf_ray.reward.config import EvaluateRewardBenchConfig

    model = tmp_path / "rm"
    model.mkdir()
    meta = {"hidden_size": 8, "max_length": 4096, "max_frames": 10, "max_new_tokens": 512}
    (model / "reward_config.json").write_text(json.dumps(meta))
    _, s = model_settings(EvaluateRewardBenchConfig(model=str(model)))
    assert (s.max_new_tokens, s.max_frames, s.max_length) == (512, 10, 4096)
    assert set(s.source.values()) == {"reward_config.json"}
    _, o = model_settings(EvaluateRewardBenchConfig(model=str(model), max_frames=4))
    assert (o.max_frames, o.source["max_frames"], o.max_new_tokens) == (4, "override", 512)
    del meta["max_new_tokens"]  # a model saved before the critique length was recorded
    (model / "reward_config.json").write_text(json.dumps(meta))
    _, old = model_settings(EvaluateRewardBenchConfig(model=str(model)))
    assert (
        old.max_new_tokens == DEFAULT_CRITIQUE_TOKENS
        and "not recorded" in (old.source["max_new_tokens"])
    )
    with pytest.raises(FileNotFoundError, match="no reward_config.json"):
        model_settings(EvaluateRewardBenchConfig(model=str(tmp_path)))


def test_paired_acc_of_two_reward_models_is_clustered_by_query():
    from mmrlhf_ray.evaluation.reward_bench import paired_acc, reward_outcomes

    # 20 queries x 3 pairs; model b fixes every pair of queries 0-5 that model a got wrong
    a = [PairResult(f"q{q}", "short", float(q >= 6), 0.5) for q in range(20) for _ in range(3)]
    b = [PairResult(f"q{q}", "short", 1.0, 0.5) for q in range(20) for _ in range(3)]
    d = paired_acc(a, b)
    assert (d.before, d.after, d.n, d.n_clusters) == (pytest.approx(0.7), 1.0, 60, 20)
    assert d.test == "bootstrap" and d.low > 0
    rows = reward_outcomes(a, "a")
    assert sum(r["metric"] == "acc" for r in rows) == 60
    assert sum(r["metric"] == "acc_plus" for r in rows) == 20
    with pytest.raises(ValueError, match="same pairs"):
        paired_acc(a, b[::-1][:59] + b[:1])
