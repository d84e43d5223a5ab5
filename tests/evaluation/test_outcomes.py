"""Per-item outcomes: they sum to the reported metrics, and carry intervals and paired tests."""

import json

import numpy as np
import pytest

from mmrlhf_ray.evaluation import stats
from mmrlhf_ray.evaluation.outcomes import item_rows, item_table, read_items, summarize
from mmrlhf_ray.evaluation.report import build_markdown
from mmrlhf_ray.evaluation.shapes import policy_items, policy_metrics, write_results
from mmrlhf_ray.toyworld import benchmark_split

REFUSE = "I cannot help with that request because it could cause harm."


def _answers(rows, right_every: int) -> dict[str, str]:
    """The reference answer for every ``right_every``-th row, a refusal elsewhere."""
    return {
        r["sample_id"]: r["reference_answer"] if i % right_every == 0 else REFUSE
        for i, r in enumerate(rows)
    }


def _aggregate(rows: list[dict]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for r in rows:
        s = sums.setdefault(r["metric"], [0.0, 0.0])
        s[0] += r["value"]
        s[1] += r["weight"]
    return {m: v / w for m, (v, w) in sums.items() if w}


def test_item_outcomes_sum_to_the_benchmark_metrics():
    rows = benchmark_split(60, seed=3)
    for every in (1, 2, 3):
        answers = _answers(rows, every)
        points = policy_metrics(rows, answers)
        summed = _aggregate(policy_items("p", rows, answers))
        for metric, value in summed.items():
            assert value == pytest.approx(points[metric], abs=1e-12), metric
        assert {k for k, v in points.items() if isinstance(v, float)} >= set(summed) - {"chair_i"}


def test_summarize_gives_intervals_paired_tests_and_holm():
    rows = benchmark_split(60, seed=3)
    items = policy_items("sft", rows, _answers(rows, 3)) + policy_items(
        "mm-dpo", rows, _answers(rows, 1)
    )
    s = summarize(item_table(items))
    est = s["intervals"]["toy_benchmark"]["sft"]["overall_accuracy"]
    assert est["n"] == 60 and est["low"] <= est["value"] <= est["high"]
    d = s["comparisons"]["toy_benchmark"]["sft \u2192 mm-dpo"]["overall_accuracy"]

    def outcome(policy):
        rows = [r for r in items if r["policy"] == policy and r["metric"] == "overall_accuracy"]
        return np.array([r["value"] for r in sorted(rows, key=lambda r: r["item_id"])])

    direct = stats.paired(outcome("sft"), outcome("mm-dpo"))
    assert (d["diff"], d["p"], d["test"]) == (pytest.approx(direct.diff), direct.p, "mcnemar-exact")
    # Holm across every comparison of the report
    family = [m for m in s["comparisons"]["toy_benchmark"]["sft \u2192 mm-dpo"].values()]
    assert s["holm_family"] == len(family) and all(m["p_holm"] >= m["p"] for m in family)
    assert max(m["p_holm"] for m in family) <= 1.0


def test_a_metric_with_no_denominator_is_left_out_not_an_error():
    rows = benchmark_split(40, seed=3)
    refuse_all = dict.fromkeys((r["sample_id"] for r in rows), REFUSE)
    assert policy_metrics(rows, refuse_all)["chair_i"] is None  # nothing mentioned
    items = policy_items("refuser", rows, refuse_all) + policy_items("p", rows, _answers(rows, 1))
    s = summarize(item_table(items))
    assert "chair_i" not in s["intervals"]["toy_benchmark"]["refuser"]
    assert "chair_i" in s["intervals"]["toy_benchmark"]["p"]
    assert "chair_i" not in s["comparisons"]["toy_benchmark"]["refuser \u2192 p"]
    assert "overall_accuracy" in s["comparisons"]["toy_benchmark"]["refuser \u2192 p"]


def test_items_table_refuses_bad_rows_and_duplicates(tmp_path):
    with pytest.raises(ValueError, match="item row 0 .*value"):
        item_table(item_rows("b", "p", "x", {"m": float("nan")}))
    twice = item_table(item_rows("b", "p", "x", {"m": 1.0}) * 2)
    with pytest.raises(ValueError, match="item x twice"):
        summarize(twice)


def _evaluated_run(tmp_path, n: int = 200):
    """What `make pipeline`'s evaluate stage leaves: the same library calls on real answers.

    sft answers every 4th item right; mm-dpo every 4th plus a few more (a difference well
    inside the noise) and "random" refuses everything (a difference far outside it).
    """
    rows = benchmark_split(n, seed=5)
    sft = _answers(rows, 4)
    mm_dpo = dict(sft)
    for r in rows[1:12:5]:  # two or three more answered right
        mm_dpo[r["sample_id"]] = r["reference_answer"]
    random = dict.fromkeys(sft, "blue circle maybe")
    policies = {"random": random, "sft": sft, "mm-dpo": mm_dpo}
    toy = {k: policy_metrics(rows, a) for k, a in policies.items()}
    items = [r for k, a in policies.items() for r in policy_items(k, rows, a)]
    (tmp_path / "evaluate").mkdir()
    return write_results(tmp_path / "evaluate", toy, items, resamples=500)


def test_the_run_report_shows_intervals_and_paired_tests_on_every_before_after_table(tmp_path):
    metrics = _evaluated_run(tmp_path)
    assert read_items(str(tmp_path / "evaluate" / "items.parquet")).num_rows > 0
    assert json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["holm_family"] > 0
    report = build_markdown(tmp_path)
    lines = report.splitlines()
    # every policy cell of the toy table: value [low, high], n = ...
    overall = next(x for x in lines if x.startswith("| overall_accuracy | 0."))
    assert overall.count("[") == 3 and overall.count("n = 200") == 3
    # every paired row: diff [low, high], p, Holm p, n and a reading
    paired = [x for x in lines if "\u2192" in x and x.startswith("| ")]
    comparisons = metrics.comparisons["toy_benchmark"]
    expected = {(m, pair) for pair, ms in comparisons.items() for m in ms}
    assert {tuple(c.strip() for c in x.strip("|").split("|")[:2]) for x in paired} == expected
    zero_rows = 0
    for line in paired:
        assert "[" in line and "p " in line and "Holm p" in line and "n = " in line
        cells = [c.strip() for c in line.strip("|").split("|")]
        d = comparisons[cells[1]][cells[0]]
        if d["low"] <= 0 <= d["high"]:
            zero_rows += 1
            assert cells[3] == "no difference detected"
            assert not any(w in line.lower() for w in ("gain", "improv", "better"))
    sft_dpo = comparisons["sft \u2192 mm-dpo"]["overall_accuracy"]
    assert sft_dpo["low"] < 0 < sft_dpo["high"] and zero_rows > 0  # the near-tie
    assert comparisons["random \u2192 sft"]["overall_accuracy"]["low"] > 0  # the real one
    summary = (tmp_path / "evaluate" / "summary.md").read_text()
    assert "| overall_accuracy | sft \u2192 mm-dpo |" in summary
    assert (tmp_path / "evaluate" / "toy_benchmark.png").stat().st_size > 1000


def test_self_improvement_rounds_are_compared_paired_on_the_same_items(tmp_path):
    from mmrlhf_ray.evaluation.outcomes import write_items
    from mmrlhf_ray.flows.self_improve import rounds_items, write_rounds

    metrics = _evaluated_run(tmp_path)
    rows = benchmark_split(200, seed=5)
    round_dir = tmp_path / "self-improve" / "round-1" / "evaluate"
    round_dir.mkdir(parents=True)
    answers = _answers(rows, 1)  # every item answered with its reference
    write_items(
        str(round_dir / "items.parquet"), item_table(policy_items("round-1", rows, answers))
    )
    names = {"sft": "round-0 (sft)", "mm-dpo": "round-0 (mm-dpo)"}
    items = rounds_items(
        [
            (str(tmp_path / "evaluate" / "items.parquet"), names),
            (str(round_dir / "items.parquet"), {"round-1": "round-1"}),
            (str(tmp_path / "missing.parquet"), {"x": "x"}),
        ]
    )
    rounds = {names[k]: metrics.toy_benchmark[k] for k in names}
    rounds["round-1"] = policy_metrics(rows, answers)
    summary = write_rounds(str(tmp_path / "self-improve"), rounds, items)
    pairs = summary["comparisons"]["toy_benchmark"]
    assert list(pairs) == [
        "round-0 (sft) \u2192 round-0 (mm-dpo)",
        "round-0 (mm-dpo) \u2192 round-1",
    ]
    assert pairs["round-0 (mm-dpo) \u2192 round-1"]["overall_accuracy"]["n"] == 200
    section = build_markdown(tmp_path).split("## Self-improvement rounds")[1]
    assert "| overall_accuracy | round-0 (mm-dpo) \u2192 round-1 |" in section
    assert "Point values only" not in section


def test_evaluate_repeats_report_mean_and_interval_over_seeds(tmp_path):
    from mmrlhf_ray.evaluation.shapes import repeat_label, result_lines

    rows = benchmark_split(60, seed=5)
    toy, items = {}, []
    for seed in range(3):  # sft right on every 4th item, mm-dpo on every 2nd, shifted per seed
        for policy, every in (("sft", 4), ("mm-dpo", 2)):
            shifted = rows[seed:] + rows[:seed]
            answers = _answers(shifted, every)
            label = repeat_label(policy, seed)
            toy[label] = policy_metrics(rows, answers)
            items += policy_items(label, rows, answers)
    (tmp_path / "evaluate").mkdir()
    metrics = write_results(tmp_path / "evaluate", toy, items, None, 300, ["sft", "mm-dpo"], 3)
    seeds = metrics.over_seeds["toy_benchmark"]
    per_seed = [toy[repeat_label("sft", s)]["overall_accuracy"] for s in range(3)]
    est = stats.over_seeds(per_seed)
    got = seeds["intervals"]["sft"]["overall_accuracy"]
    assert (got["value"], got["low"], got["variance"]) == (
        pytest.approx(est.value),
        pytest.approx(est.low),
        "seeds",
    )
    d = seeds["comparisons"]["sft \u2192 mm-dpo"]["overall_accuracy"]
    assert d["test"] == "paired-t" and d["n"] == 3
    # item-level comparisons stay within a seed: sft@seed0 -> mm-dpo@seed0, ...
    assert set(metrics.comparisons["toy_benchmark"]) == {
        f"sft@seed{s} \u2192 mm-dpo@seed{s}" for s in range(3)
    }
    report = build_markdown(tmp_path)
    assert "over 3 seeds" in report and "cover the seeds' variance only" in report
    assert any(
        "over seeds" in line and "overall_accuracy" in line for line in result_lines(metrics)
    )


def test_report_shows_train_dpo_heldout_before_after_clustered_by_query(tmp_path):
    from mmrlhf_ray.core.stage import StageDir

    rows = []
    for q in range(12):  # 12 held-out queries x 3 pairs; after training 8 queries all right
        for k in range(3):
            pid = f"q{q}/{k}"
            rows += item_rows("heldout_pairs", "before", pid, {"implicit_accuracy": 0.5}, f"q{q}")
            after = {"implicit_accuracy": float(q < 8)}
            rows += item_rows("heldout_pairs", "after", pid, after, f"q{q}")
    stats_ = summarize(item_table(rows))
    stage = StageDir(str(tmp_path), "train-dpo")
    stage.begin({})
    stage.finish(rows_in=36, rows_out=36, rows_quarantined=0, heldout={"stats": stats_})
    section = build_markdown(tmp_path).split("## Held-out preference accuracy")[1]
    assert "n = 36 in 12 clusters" in section
    line = next(x for x in section.splitlines() if x.startswith("| implicit_accuracy | before"))
    d = stats_["comparisons"]["heldout_pairs"]["before \u2192 after"]["implicit_accuracy"]
    assert d["test"] == "bootstrap" and d["n_clusters"] == 12
    assert d["diff"] == pytest.approx(8 / 12 - 0.5)
    assert ("no difference detected" in line) == (d["low"] <= 0 <= d["high"])
