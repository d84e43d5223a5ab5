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
