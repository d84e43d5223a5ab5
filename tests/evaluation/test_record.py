"""evaluate/metrics.json is one typed record: written and read back whole, an unknown
section refused with the file and the key named."""

import json

import pytest

from mmrlhf_ray.evaluation.record import FILE, EvaluationRecord


def test_record_round_trips_and_reads_the_stage_directory(tmp_path):
    record = EvaluationRecord(
        toy_benchmark={"sft": {"overall_accuracy": 0.25}},
        intervals={"toy_benchmark": {"sft": {"overall_accuracy": {"value": 0.25, "n": 8}}}},
        holm_family=3,
        safetybench={"averages": {"unsafety": {"value": None, "status": "not run"}}},
    )
    assert record.write(tmp_path) == tmp_path / FILE
    back = EvaluationRecord.read(tmp_path)
    assert back == record and back.points("sft") == {"overall_accuracy": 0.25}
    assert back.points("mm-dpo") == {} and back.reward_bench is None
    assert EvaluationRecord.read_if_exists(tmp_path / "nowhere") is None


def test_unknown_section_is_refused_with_file_and_key(tmp_path):
    path = tmp_path / FILE
    path.write_text(json.dumps({"toy_benchmark": {}, "toy_benchmarks": {}}))
    with pytest.raises(ValueError, match=r"metrics.json: unknown key 'toy_benchmarks'"):
        EvaluationRecord.read(path)


def test_null_section_reads_as_its_default(tmp_path):
    (tmp_path / FILE).write_text(json.dumps({"lmms_eval": None, "reward_bench": None}))
    record = EvaluationRecord.read(tmp_path)
    assert record.lmms_eval == {} and record.reward_bench is None
