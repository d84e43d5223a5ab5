"""The Ray Train + DeepSpeed harness, for real: 2 CPU workers, ZeRO-2/3, kill + resume."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from safetensors.torch import load_file

from harness.trainer import TrainTask, run_training
from mmrlhf_ray.models import sft_loss
from mmrlhf_ray.training import TrainConfig
from mmrlhf_ray.training.checkpoint import read_metrics
from mmrlhf_ray.training.faults import CrashOnce
from mmrlhf_ray.training.sft import (
    collate_sft,
    encode_sft_example,
    modality_key,
    prepare_sft_rows,
)
from mmrlhf_ray.training.tracking import TrackingConfig, resolve_tracking, start_tracking
from tests.training.helpers import (
    mlflow_history,
    mlflow_runs,
    tensorboard_scalars,
    wandb_history,
    wandb_offline_runs,
)

BACKENDS = ["tensorboard", "mlflow"] + (["wandb"] if importlib.util.find_spec("wandb") else [])

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def sft_rows():
    from mmrlhf_ray.toyworld import generate_pool

    rows, bad = prepare_sft_rows(generate_pool(48, seed=5), source="test")
    assert not bad
    return rows


def _task(tiny_models, rows, loss_fn=sft_loss) -> TrainTask:
    return TrainTask(
        model_path=tiny_models["policy"],
        rows=rows,
        encode=encode_sft_example,
        collate=collate_sft,
        loss_fn=loss_fn,
        group_key=modality_key,
    )


def _cfg(**kw) -> TrainConfig:
    base = dict(
        num_workers=2,
        micro_batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        max_steps=10,
        checkpoint_every=5,
        report_every=5,
        max_failures=1,
    )
    return TrainConfig(**{**base, **kw})


def _assert_vision_tower_unchanged(before_dir: str, after_dir: str) -> None:
    before = load_file(f"{before_dir}/model.safetensors")
    after = load_file(f"{after_dir}/model.safetensors")
    assert before.keys() == after.keys()
    tower = [k for k in before if re.search(r"(^|\.)visual\.", k) and ".merger." not in k]
    rest = [k for k in before if k not in tower]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert sum(not torch.equal(before[k], after[k]) for k in rest) > 0.9 * len(rest)


def _assert_rank0_logged_the_csv(tracking, rows: list[dict]) -> None:
    """What TensorBoard / MLflow / W&B hold equals metrics.csv, logged by rank 0 alone:
    another rank would log every step a second time (and open its own W&B run)."""
    scalars = tensorboard_scalars(tracking.tensorboard_dir)  # the resume purged steps > 5
    for key in ("loss", "grad_norm", "lr", "tokens_per_s", "examples_per_s"):
        logged = scalars[f"train/{key}"]
        assert [s for s, _ in logged] == list(range(1, 11)), key
        assert [v for _, v in logged] == pytest.approx([r[key] for r in rows], rel=1e-6)  # f32
    history = mlflow_history(tracking.mlflow_uri, tracking.mlflow_run_id, "train/loss")
    steps = [s for s, _, _ in history]
    assert steps[:5] == [1, 2, 3, 4, 5]  # once each before the crash; 6-7 may be logged again
    last = {s: v for s, v, _ in history}  # the resumed attempt logs after the crashed one
    assert [last[s] for s in range(1, 11)] == [r["loss"] for r in rows]  # exact: repr floats
    assert len(mlflow_runs(tracking.mlflow_uri)) == 1
    if "wandb" in tracking.backends:  # one offline run per attempt of rank 0
        runs = wandb_offline_runs(tracking.wandb_dir, tracking.run_key)
        assert len(runs) == 2, runs
        crashed, resumed = (wandb_history(d) for d in runs)
        # the killed attempt's run holds what its W&B service wrote before the kill: a prefix
        # of the steps, each once (an offline run killed with its worker loses its buffer)
        for key in ("loss", "grad_norm", "lr", "tokens_per_s"):
            before = crashed.get(f"train/{key}", [])
            assert [s for s, _ in before] == list(range(1, len(before) + 1)), key
            assert [v for _, v in before] == [r[key] for r in rows[: len(before)]], key
            after = resumed[f"train/{key}"]  # the resumed attempt: steps 6-10, once each
            assert [s for s, _ in after] == list(range(6, 11)), key
            assert [v for _, v in after] == [r[key] for r in rows[5:]], key  # JSON: exact


def _loss_falls(metrics: list[dict]) -> tuple[float, float]:
    first = sum(m["loss"] for m in metrics[:3]) / 3
    last = sum(m["loss"] for m in metrics[-3:]) / 3
    return first, last


def test_zero2_killed_worker_resumes_loss_falls_vision_frozen(
    ray_session, tiny_models, sft_rows, tmp_path
):
    """2 workers, ZeRO-2: rank 1 dies at step 7, the run resumes from step 5 and finishes.
    Rank 0 alone logs each step's row to TensorBoard and MLflow (and W&B, if installed)."""
    marker = tmp_path / "crashed.txt"
    # rank 1 dies at its 7th loss call = step 7 (grad_accum 1); last checkpoint: step 5
    loss = CrashOnce(sft_loss, at_call=7, marker=str(marker), rank=1)
    tracking = start_tracking(
        resolve_tracking(TrackingConfig(report_to=BACKENDS), str(tmp_path), "sft", "kill")
    )
    result = run_training(
        _task(tiny_models, sft_rows, loss),
        _cfg(zero_stage=2),
        name="kill",
        storage_path=str(tmp_path / "ray"),
        output_dir=str(tmp_path / "policy"),
        metrics_csv=str(tmp_path / "metrics.csv"),
        tracking=tracking,
    )
    assert marker.exists()  # the worker really died
    assert result.steps == 10
    steps = [int(m["step"]) for m in result.metrics]
    assert steps == list(range(1, 11))  # every step once: 6 (lost with the worker) redone
    assert [int(m["resumed_from"]) for m in result.metrics] == [0] * 5 + [5] * 5
    assert read_metrics(tmp_path / "metrics.csv") == result.metrics
    first, last = _loss_falls(result.metrics)
    assert last < 0.75 * first, (first, last)
    _assert_vision_tower_unchanged(tiny_models["policy"], result.hf_dir)
    _assert_rank0_logged_the_csv(tracking, result.metrics)
    from mmrlhf_ray.models import load_policy

    _, processor = load_policy(result.hf_dir)  # the HF checkpoint loads by path
    assert processor.tokenizer.pad_token == "<|endoftext|>"


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(ray_session, tiny_models, sft_rows, tmp_path):
    """Resume restores model AND optimizer state: same final weights as a run never killed."""
    plain = run_training(
        _task(tiny_models, sft_rows),
        _cfg(),
        name="plain",
        storage_path=str(tmp_path / "ray"),
        output_dir=str(tmp_path / "a"),
    )
    loss = CrashOnce(sft_loss, at_call=8, marker=str(tmp_path / "m"), rank=0)
    killed = run_training(
        _task(tiny_models, sft_rows, loss),
        _cfg(),
        name="killed",
        storage_path=str(tmp_path / "ray"),
        output_dir=str(tmp_path / "b"),
    )
    assert [m["loss"] for m in killed.metrics] == pytest.approx(
        [m["loss"] for m in plain.metrics], rel=1e-4
    )
    a = load_file(f"{plain.hf_dir}/model.safetensors")
    b = load_file(f"{killed.hf_dir}/model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_zero3_two_workers_loss_falls_vision_frozen(ray_session, tiny_models, sft_rows, tmp_path):
    result = run_training(
        _task(tiny_models, sft_rows),
        _cfg(zero_stage=3),
        name="z3",
        storage_path=str(tmp_path / "ray"),
        output_dir=str(tmp_path / "policy"),
    )
    assert result.steps == 10
    first, last = _loss_falls(result.metrics)
    assert last < 0.75 * first, (first, last)
    _assert_vision_tower_unchanged(tiny_models["policy"], result.hf_dir)  # gathered weights


@pytest.mark.slow
def test_rerun_same_name_continues_from_storage(ray_session, tiny_models, sft_rows, tmp_path):
    kw = dict(name="again", storage_path=str(tmp_path / "ray"), output_dir=str(tmp_path / "p"))
    first = run_training(_task(tiny_models, sft_rows), _cfg(max_steps=5), **kw)
    assert first.steps == 5
    second = run_training(_task(tiny_models, sft_rows), _cfg(max_steps=8, grad_accum=1), **kw)
    assert second.steps == 8
    assert [int(m["resumed_from"]) for m in second.metrics] == [0] * 5 + [5] * 3
