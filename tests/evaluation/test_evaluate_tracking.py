"""The evaluate stage logs its record's numbers to the tracking backends, as training does:
TensorBoard scalars (points, interval bounds, n, paired differences) equal metrics.json."""

import pytest

from jobs.evaluate import log_metrics
from mmrlhf_ray.evaluation.config import EvaluateConfig
from mmrlhf_ray.evaluation.record import EvaluationRecord
from mmrlhf_ray.training.tracking import flatten
from tests.evaluation.test_outcomes import _evaluated_run
from tests.training.helpers import tensorboard_scalars


def test_evaluate_logs_every_interval_and_comparison_to_tensorboard(tmp_path):
    _evaluated_run(tmp_path)
    record = EvaluationRecord.read(tmp_path / "evaluate")
    log_metrics(EvaluateConfig(run_dir=str(tmp_path)), record)
    scalars = tensorboard_scalars(str(tmp_path / "evaluate" / "tensorboard"))
    expected = flatten({"intervals": record.intervals, "comparisons": record.comparisons}, "", True)
    assert set(scalars) == set(expected)
    for tag, value in expected.items():
        assert scalars[tag] == [(0, pytest.approx(value, rel=1e-6, abs=1e-7))], tag  # float32
    overall = "intervals/toy_benchmark/sft/overall_accuracy"
    assert scalars[f"{overall}/n"] == [(0, 200.0)]
    assert scalars[f"{overall}/low"][0][1] < scalars[f"{overall}/value"][0][1]
    assert any(t.startswith("comparisons/toy_benchmark/sft to mm-dpo/") for t in scalars)
    none = EvaluateConfig(run_dir=str(tmp_path / "other"))
    none.tracking.report_to = ["none"]
    log_metrics(none, record)
    assert not (tmp_path / "other").exists()
