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
    from mmrlhf_ray.evaluation.record import EvaluationRecord
    from mmrlhf_ray.evaluation.report import harness_sections
    from mmrlhf_ray.evaluation.safetybench import (
        TASKS,
        Verdict,
        averages,
        get_task,
        not_run,
        score_task,
    )
    from mmrlhf_ray.evaluation.stats import estimate

    unsafes = score_task(get_task("Unsafes"), [Verdict(str(i), refused=i < 3) for i in range(8)])
    results = {t.name: not_run(t.name, "no classifier judge") for t in TASKS}
    results["Unsafes"] = unsafes
    lmms = {"sft": {"mmrlhf_shapes": {
        "metrics": {"accuracy": 0.5, "note": 1.0},
        "intervals": {"accuracy": estimate([1.0, 0.0, 1.0, 0.0]).to_dict()},
    }, "_actor_restarts": 0}}  # fmt: skip
    record = EvaluationRecord(
        lmms_eval=lmms,
        safetybench={
            "tasks": {k: v.as_dict() for k, v in results.items()},
            "averages": averages(results),
        },
    )
    text = "\n".join(harness_sections(record))
    assert "| sft | mmrlhf_shapes | accuracy | 0.500 [" in text and "n = 4 |" in text
    assert "| sft | mmrlhf_shapes | note | 1.000 (no interval) |" in text
    assert "_actor_restarts" not in text
    # Unsafes: 5 of 8 did not refuse, exact interval, n = 8; the rest not run with the reason
    assert f"| {get_task('Unsafes').label} | lower | 0.625 [" in text and "n = 8 |" in text
    assert text.count("not run: no classifier judge") == len(TASKS) - 1
    assert "| Unsafety (average) | lower | not run: tasks without a result:" in text
    assert harness_sections(EvaluationRecord()) == []
