"""Grouped MM-DPO under ZeRO-3 on 2 Ray Train workers, with a worker killed mid-run (slow)."""

import pytest

from harness.trainer import run_training
from jobs.train_dpo import dpo_task
from mmrlhf_ray.dpo.config import DpoConfig, LossConfig
from mmrlhf_ray.training.config import TrainConfig
from mmrlhf_ray.training.faults import CrashOnce
from tests.dpo.helpers import make_pairs, write_ref_logps_stage


@pytest.mark.slow
@pytest.mark.ray
def test_zero3_two_workers_killed_worker_resumes(tmp_path, ray_session, policy_dir):
    rows = make_pairs(n_queries=10, k=4, seed=2)
    write_ref_logps_stage(tmp_path, rows, policy_dir)
    cfg = DpoConfig(
        run_dir=str(tmp_path),
        policy=policy_dir,
        heldout_fraction=0.0,
        loss=LossConfig(sft_weight=0.0),  # log 2 at step 0: policy == reference
        train=TrainConfig(
            num_workers=2,
            zero_stage=3,
            lr=2e-3,
            warmup_steps=1,
            micro_batch_size=2,
            max_steps=4,
            checkpoint_every=2,
        ),
    )
    task = dpo_task(cfg, policy_dir, "ref-logps", need_margin=True, need_ref=True, online=False)
    marker = tmp_path / "crashed.txt"
    task.loss_fn = CrashOnce(task.loss_fn, at_call=3, marker=str(marker), rank=1)
    result = run_training(
        task,
        cfg.train,
        name="dpo-z3",
        storage_path=str(tmp_path / "ray"),
        output_dir=str(tmp_path / "policy"),
        metrics_csv=str(tmp_path / "m.csv"),
    )
    assert marker.exists() and result.steps == 4
    assert [int(m["step"]) for m in result.metrics] == [1, 2, 3, 4]
    assert [int(m["resumed_from"]) for m in result.metrics] == [0, 0, 2, 2]
    assert result.metrics[0]["loss"] == pytest.approx(0.6931, abs=2e-3)
    assert result.metrics[-1]["loss"] < result.metrics[0]["loss"]
    # queries per worker micro-batch, averaged over ranks (an epoch's tail may give 1)
    assert all(m["queries"] in (1.0, 2.0) for m in result.metrics)
    assert all(m["responses"] == 4 * m["queries"] for m in result.metrics)
