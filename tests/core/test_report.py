import json

from mmrlhf_ray.report import build_markdown, markdown_to_html, write_report
from mmrlhf_ray.stage import StageDir


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
    from mmrlhf_ray.report import reward_bench_table
    from mmrlhf_ray.reward.bench import PairResult, acc_table

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
