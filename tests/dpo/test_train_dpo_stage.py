"""`mmrlhf train-dpo` end to end: Ray Train + DeepSpeed, grouped MM-DPO, tiny Qwen2-VL."""

import csv
import os

import pytest
import torch
from safetensors.torch import load_file

from jobs import train_dpo as job
from mmrlhf_ray.config import ConfigError
from mmrlhf_ray.stage import StageDir
from tests.dpo.helpers import make_pairs, write_ref_logps_stage


@pytest.mark.ray
def test_train_dpo_stage_learns_and_keeps_vision_frozen(tmp_path, ray_session, policy_dir):
    rows = make_pairs(n_queries=14, k=4, seed=1)  # 84 pairs; shorter responses are preferred
    rows[0]["margin"] = None  # MM-DPO needs delta: this pair is quarantined, not dropped
    write_ref_logps_stage(tmp_path, rows, policy_dir)
    argv = [
        f"run_dir={tmp_path}",
        f"policy={policy_dir}",
        "heldout_fraction=0.25",
        "train.max_steps=8",
        "train.micro_batch_size=2",
        "train.lr=0.002",
        "train.warmup_steps=1",
        "train.checkpoint_every=4",
        "train.num_workers=1",
        "loss.sft_weight=0.0",
    ]
    assert job.main(argv) == 0
    out = StageDir(str(tmp_path), "train-dpo")
    m = out.read_manifest()
    assert {k: m["counts"][k] for k in ("in", "out", "quarantined")} == {
        "in": 84,
        "out": 83,
        "quarantined": 1,
    }
    assert m["online_reference"] is False
    assert out.read(quarantine=True).to_pylist()[0]["field"] == "margin"
    with open(out.path("metrics.csv")) as f:
        steps = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    assert [s["step"] for s in steps] == list(range(1, 9))
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=2e-3)  # policy == reference at step 0
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.05
    # 2 queries per micro-batch (the harness may give an epoch's tail 1): 4 forwards, 6 pairs each
    assert all(s["queries"] in (1, 2) and s["responses"] == 4 * s["queries"] for s in steps)
    assert all(6 * s["queries"] - 1 <= s["pairs"] <= 6 * s["queries"] for s in steps)
    assert all(0.1 <= s["beta_mean"] <= 0.15 for s in steps) and steps[0]["beta_std"] > 0
    held = m["heldout"]
    assert held["before"]["implicit_accuracy"] == pytest.approx(0.5, abs=0.05)
    assert held["after"]["implicit_accuracy"] > 0.7
    # before -> after on the same held-out pairs, clustered by query, per-pair outcomes kept
    d = held["stats"]["comparisons"]["heldout_pairs"]["before \u2192 after"]["implicit_accuracy"]
    assert d["n"] == held["after"]["pairs"] and d["variance"] == "clusters"
    assert d["diff"] == pytest.approx(
        held["after"]["implicit_accuracy"] - held["before"]["implicit_accuracy"], abs=1e-9
    )
    assert d["low"] <= d["diff"] <= d["high"] and 0 <= d["p"] <= d["p_holm"] <= 1
    assert os.path.getsize(out.path("heldout_items.parquet")) > 0
    assert os.path.getsize(out.path("beta_hist.png")) > 1000
    # the vision tower is bit-identical after training; the projector and the LLM moved
    before = load_file(os.path.join(policy_dir, "model.safetensors"))
    after = load_file(out.path("policy", "model.safetensors"))
    tower = [k for k in before if "visual." in k and ".merger." not in k]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert any(not torch.equal(before[k], after[k]) for k in before if ".merger." in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if ".layers." in k)
    assert job.main(argv) == 0  # finished: a re-run does nothing


def test_train_dpo_refuses_reference_logps_of_other_encoding(tmp_path, policy_dir):
    """ref-logps took 10 frames, train-dpo would take 8: refused before any training."""
    rows = make_pairs(n_queries=2, k=2)
    write_ref_logps_stage(tmp_path, rows, policy_dir, max_frames=10)
    argv = [f"run_dir={tmp_path}", f"policy={policy_dir}", "max_frames=8"]
    with pytest.raises(ConfigError) as err:  # a user error: `mmrlhf` prints it, exit 2
        job.main(argv)
    message = str(err.value)
    assert "\n" not in message and "max_frames 8 (train-dpo) vs 10 (ref-logps)" in message
    assert "max_response_tokens" not in message  # only what differs is named
    assert StageDir(str(tmp_path), "train-dpo").read_manifest() is None  # nothing started
