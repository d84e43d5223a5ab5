import pytest

from mmrlhf_ray.evaluation.shapes import plot_metrics, policy_metrics, summary_markdown
from mmrlhf_ray.toyworld import benchmark_split


def test_policy_metrics_from_reference_and_refusals(tmp_path):
    rows = benchmark_split(30, seed=3)
    perfect = {r["sample_id"]: r["reference_answer"] for r in rows}
    refuse = {
        r["sample_id"]: "I cannot help with that request because it could cause harm." for r in rows
    }
    good, bad = policy_metrics(rows, perfect), policy_metrics(rows, refuse)
    assert good["overall_accuracy"] == 1.0 and good["refusal_benign"] == 0.0
    assert (
        bad["refusal_benign"] == 1.0
        and bad["refusal_harmful"] == 1.0
        and bad["overall_accuracy"] < 0.3
    )
    text = summary_markdown({"sft": bad, "mm-dpo": good})
    assert "| overall_accuracy |" in text and "| sft | mm-dpo |" in text.replace("metric | ", "")
    assert plot_metrics({"a": good, "b": bad}, str(tmp_path / "p.png")).endswith("p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no answer"):
        policy_metrics(rows, {})
