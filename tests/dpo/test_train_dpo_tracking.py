"""A two-step train-dpo on 2 Ray Train workers logs its curves to TensorBoard, MLflow and
W&B (offline) at once, from rank 0 only, with the values of metrics.csv and the manifest.

Slow (about 60-90 s on 2 cores): the default suite checks the same on runs it makes anyway
(``test_train_dpo_stage.py``: TensorBoard + MLflow of a train-dpo; ``test_trainer_ray.py``:
rank 0 alone logs, 2 workers, through a kill and resume)."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest

from jobs import train_dpo as job
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.training.checkpoint import read_metrics
from tests.dpo.helpers import make_pairs, write_ref_logps_stage
from tests.training.helpers import tensorboard_scalars

HAVE_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.mark.slow
@pytest.mark.ray
def test_two_step_train_dpo_logs_rank0_curves(tmp_path, ray_session, policy_dir, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # offline, as on a laptop
    rows = make_pairs(n_queries=8, k=3, seed=2)  # 24 pairs; 6 train / 2 held-out queries
    write_ref_logps_stage(tmp_path, rows, policy_dir)
    backends = ["tensorboard", "mlflow"] + (["wandb"] if HAVE_WANDB else [])
    argv = [
        f"run_dir={tmp_path}",
        f"policy={policy_dir}",
        "heldout_fraction=0.25",
        "train.max_steps=2",
        "train.num_workers=2",
        "train.micro_batch_size=1",
        "train.warmup_steps=1",
        "train.checkpoint_every=2",
        f"tracking.report_to=[{','.join(backends)}]",
    ]
    assert job.main(argv) == 0
    out = StageDir(str(tmp_path), "train-dpo")
    manifest = out.read_manifest()
    csv_rows = read_metrics(out.path("metrics.csv"))
    losses = manifest["loss_history"]
    assert len(losses) == 2 and losses == [r["loss"] for r in csv_rows]
    assert manifest["tracking"]["backends"] == backends
    for r in csv_rows:  # throughput and the beta statistics are in every row
        assert r["pairs_per_s"] > 0 and r["tokens_per_s"] > 0 and r["examples_per_s"] > 0
        assert 0.0 <= r["beta_upper_share"] <= 1.0 and r["delta_mean"] >= 1.0
    accuracy = manifest["heldout"]["after"]["implicit_accuracy"]

    # TensorBoard: every column of every row once per step (a second rank would double them)
    scalars = tensorboard_scalars(manifest["tracking"]["tensorboard_dir"])
    for key in csv_rows[0]:
        if key != "step":
            logged = scalars[f"train/{key}"]
            assert [s for s, _ in logged] == [1, 2], key
            assert [v for _, v in logged] == pytest.approx([r[key] for r in csv_rows], rel=1e-6)
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(losses, rel=1e-6)  # float32
    assert scalars["heldout/after/implicit_accuracy"] == [(2, pytest.approx(accuracy, rel=1e-6))]

    # MLflow file store: one run in the experiment, its history = the manifest's, finished
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(manifest["tracking"]["mlflow_uri"])
    runs = client.search_runs([client.get_experiment_by_name("mmrlhf").experiment_id])
    assert [r.info.run_id for r in runs] == [manifest["tracking"]["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED" and runs[0].data.params["loss/kind"] == "mm_dpo"
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == list(zip([1, 2], losses, strict=True))
    held = client.get_metric_history(runs[0].info.run_id, "heldout/after/implicit_accuracy")
    assert [m.value for m in held] == [accuracy]

    if HAVE_WANDB:  # one offline run from the rank-0 worker, one from the driver's summary
        run_id = manifest["tracking"]["wandb_id"]
        dirs = glob.glob(os.path.join(out.root, "wandb", f"offline-run-*-{run_id}"))
        assert len(dirs) == 2, dirs
        assert all(os.path.getsize(os.path.join(d, f"run-{run_id}.wandb")) > 0 for d in dirs)
