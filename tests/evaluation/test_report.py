import json

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.evaluation.report import build_markdown, markdown_to_html, write_report


def test_report_reads_manifests_metrics_and_plots(tmp_path):
    stage = StageDir(str(tmp_path), "pairs")
    stage.begin({})
    stage.finish(rows_in=10, rows_out=8, rows_quarantined=2)
    (tmp_path / "pairs" / "summary.md").write_text("pairs per category: 8")
    (tmp_path / "pairs" / "plot.png").write_bytes(b"\x89PNG")
    (tmp_path / "evaluate").mkdir()
    metrics = {
        "toy_benchmark": {"base": {"short_accuracy": 0.25}, "aligned": {"short_accuracy": 0.5}}
    }
    (tmp_path / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    text = build_markdown(tmp_path)
    assert "| pairs | done | 10 | 8 | 0 | 2 |" in text
    assert "| short_accuracy | 0.250 | 0.500 |" in text
    assert "pairs per category: 8" in text and "(pairs/plot.png)" in text
    page = markdown_to_html(text, "t")
    assert "<td>short_accuracy</td><td>0.250</td><td>0.500</td>" in page
    assert "<img alt='pairs: plot' src='pairs/plot.png'>" in page
    paths = write_report(tmp_path)
    assert (tmp_path / "report.md").read_text() == text and paths["html"].endswith("report.html")


def test_reward_bench_table_shows_intervals_over_queries():
    from mmrlhf_ray.evaluation.report import reward_bench_table
    from mmrlhf_ray.evaluation.reward_bench import PairResult, acc_table

    # 30 queries x 3 pairs, the first 20 queries all right, the last 10 all wrong
    results = [
        PairResult(f"q{q}", "short", float(q < 20), 0.5) for q in range(30) for _ in range(3)
    ]
    text = reward_bench_table({"mode": "none", "table": acc_table(results)})
    row = next(line for line in text.splitlines() if line.startswith("| overall |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert (
        cells[1].startswith("0.67 [")
        and cells[2].startswith("0.67 [")
        and cells[3:] == ["90", "30"]
    )
    low, high = (float(v) for v in cells[1].split("[")[1].rstrip("]").split(","))
    # 30 independent queries, not 90 pairs: about +-1.96 sqrt(p(1-p)/30) = +-0.17
    assert 0.12 < (high - low) / 2 < 0.22


def test_harness_sections_show_lmms_tasks_and_safetybench_with_intervals_and_reasons(tmp_path):
    from mmrlhf_ray.evaluation.outcomes import item_rows, item_table, summarize
    from mmrlhf_ray.evaluation.record import EvaluationRecord
    from mmrlhf_ray.evaluation.report import harness_sections
    from mmrlhf_ray.evaluation.safety_data import task_items
    from mmrlhf_ray.evaluation.safetybench import (
        TASKS,
        Verdict,
        averages,
        get_task,
        not_run,
        score_task,
    )

    unsafes = get_task("Unsafes")
    columns, items = {}, []
    for policy, refused in (("base", 6), ("mm-dpo", 16)):  # 10 of 16, then 0 of 16 comply
        verdicts = [Verdict(f"{i:02d}", refused=i < refused) for i in range(16)]
        results = {t.name: not_run(t.name, "no classifier judge") for t in TASKS}
        results["Unsafes"] = score_task(unsafes, verdicts)
        columns[policy] = {
            "tasks": {k: v.as_dict() for k, v in results.items()},
            "averages": averages(results),
        }
        items += task_items(policy, unsafes, [{}] * 16, verdicts)
    for i, correct in enumerate([1.0, 0.0, 1.0, 0.0]):
        items += item_rows("lmms-eval/mmrlhf_shapes", "sft", f"q{i}", {"accuracy": correct})
    lmms = {"sft": {"mmrlhf_shapes": {"metrics": {"accuracy": 0.5, "note": 1.0}, "n": 4},
                    "_actor_restarts": 0}}  # fmt: skip
    summary = summarize(item_table(items))
    record = EvaluationRecord(lmms_eval=lmms, safetybench=columns, **summary)
    text = "\n".join(harness_sections(record))
    assert "| sft | mmrlhf_shapes | accuracy | 0.500 [" in text and "n = 4 |" in text
    assert "| sft | mmrlhf_shapes | note | 1.000 (no interval) |" in text
    assert "_actor_restarts" not in text
    # Unsafes, a column per policy: 10 of 16 did not refuse, then 0 of 16; exact intervals
    assert f"| {unsafes.label} | lower | 0.625 [" in text and "| 0.000 [" in text
    assert text.count("not run: no classifier judge") == 2 * (len(TASKS) - 1)
    assert "| Unsafety (average) | lower | not run: tasks without a result:" in text
    # the paired comparison of the two policies on the same 16 items, lower is better
    assert "### safetybench/Unsafes: paired on the same items" in text
    row = next(line for line in text.splitlines() if line.startswith("| nsfw_asr | base"))
    assert "−0.625 [" in row or "-0.625 [" in row
    assert row.endswith("| improved |")  # 10 discordant, all one way: p = 2 / 2**10
    assert "p = 0.002" in row and "n = 16" in row
    assert harness_sections(EvaluationRecord()) == []
