"""The tracking section (pure): choices, defaults, what a step logs; beta statistics."""

from __future__ import annotations

import os

import pytest
import torch

from mmrlhf_ray.core.config import ConfigError, load_config
from mmrlhf_ray.dpo.config import DpoConfig
from mmrlhf_ray.dpo.losses import dynamic_beta
from mmrlhf_ray.dpo.metrics import beta_statistics
from mmrlhf_ray.training.tracking import TrackingConfig, resolve_tracking, step_scalars


def test_every_training_stage_has_the_section_and_bad_choices_name_the_key():
    from mmrlhf_ray.reward.config import TrainRewardConfig
    from mmrlhf_ray.training.config import SftConfig

    for cls in (SftConfig, TrainRewardConfig, DpoConfig):
        assert cls().tracking.report_to == ["tensorboard"]
    cfg = load_config(DpoConfig, None, ["tracking.report_to=[tensorboard,mlflow]"])
    assert cfg.tracking.report_to == ["tensorboard", "mlflow"]
    with pytest.raises(ConfigError, match=r"tracking.report_to: 'comet' is not one of"):
        load_config(DpoConfig, None, ["tracking.report_to=[comet]"])
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        load_config(DpoConfig, None, ["tracking.report_to=[none,wandb]"])


def test_defaults_resolve_under_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    target = resolve_tracking(TrackingConfig(), str(tmp_path), "train-dpo", "abc")
    assert target.tensorboard_dir == os.path.join(tmp_path, "train-dpo", "tensorboard")
    assert target.mlflow_uri == (tmp_path / "mlruns").as_uri()
    assert (target.wandb_mode, target.run_key) == ("offline", "train-dpo-abc")
    assert target.run_name == f"{tmp_path.name}/train-dpo"
    monkeypatch.setenv("WANDB_API_KEY", "k")  # a key configured: online
    assert resolve_tracking(TrackingConfig(), str(tmp_path), "sft", "x").wandb_mode == "online"
    none = resolve_tracking(TrackingConfig(report_to=["none"]), str(tmp_path), "sft", "x")
    assert none.backends == ()


def test_a_step_logs_every_numeric_column_but_the_step():
    row = {"step": 3, "loss": 0.5, "lr": 1e-4, "resumed_from": 0, "flag": True, "name": "x"}
    assert step_scalars(row) == {
        "train/loss": 0.5,
        "train/lr": 1e-4,
        "train/resumed_from": 0.0,
        "train/flag": 1.0,
    }


def test_beta_statistics_by_hand():
    """beta(delta) = 0.1 (1 + 0.5 (1 - e^{-0.5 delta})); the upper bound 0.15 is within 1% of
    the range 0.05 (beta >= 0.1495) once 1 - e^{-0.5 delta} >= 0.99, i.e. delta >= 9.21."""
    delta = torch.tensor([0.0, 2.0, 9.0, 9.3, 40.0])
    beta = dynamic_beta(delta, 0.1, 0.5, 0.5)
    stats = beta_statistics(beta, torch.tensor([0.0, 2.0, 9.0, 9.3, float("nan")]), 0.1, 0.5)
    assert stats["beta_upper_share"] == pytest.approx(2 / 5)  # 9.3 and 40
    assert stats["delta_mean"] == pytest.approx((0 + 2 + 9 + 9.3) / 4)  # NaN margins left out
    fixed = beta_statistics(torch.full((3,), 0.1), torch.zeros(3), 0.1, 0.0)
    assert fixed["beta_upper_share"] == 1.0  # w = 0: no range, every pair at its bound


def test_a_missing_tracking_library_is_refused_before_any_worker(tmp_path, monkeypatch):
    import importlib.util

    from mmrlhf_ray.training import tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name)
    )
    target = resolve_tracking(TrackingConfig(report_to=["wandb"]), str(tmp_path), "sft", "x")
    with pytest.raises(ConfigError, match=r"wandb is not installed \(pip install wandb"):
        tracking.start_tracking(target)
