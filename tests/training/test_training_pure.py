"""Pure training pieces: data order, DeepSpeed config, LR schedule, freezing, SFT data."""

from __future__ import annotations

import itertools

import pytest

from mmrlhf_ray.training import TrainConfig, deepspeed_config, freeze_vision, lr_factor
from mmrlhf_ray.training.checkpoint import append_metrics, read_metrics, truncate_metrics
from mmrlhf_ray.training.data import micro_batches, rank_indices
from mmrlhf_ray.training.sft import modality_key, prepare_sft_rows


def test_ranks_get_disjoint_equal_shards_and_resume_is_exact():
    n, mb, world = 23, 3, 2
    shards = [
        rank_indices(n, seed=1, epoch=0, rank=r, world_size=world, micro_batch_size=mb)
        for r in range(world)
    ]
    assert len(shards[0]) == len(shards[1]) == 11  # 22 usable, 1 sits this epoch out
    assert not set(shards[0]) & set(shards[1])
    full = list(itertools.islice(micro_batches(n, mb, 1, 0, world), 12))
    resumed = list(itertools.islice(micro_batches(n, mb, 1, 0, world, start=5), 7))
    assert resumed == full[5:]  # resuming at micro-batch 5 replays nothing, skips nothing
    assert full[:4] != list(itertools.islice(micro_batches(n, mb, 2, 0, world), 4))  # seeded


def test_groups_keep_every_step_single_modality_across_ranks():
    groups = ["image"] * 13 + ["video"] * 6
    streams = [
        list(itertools.islice(micro_batches(19, 2, 0, r, 2, groups=groups), 20)) for r in range(2)
    ]
    for a, b in zip(*streams, strict=True):
        kinds = {groups[i] for i in a + b}
        assert len(kinds) == 1 and len(a) == len(b) >= 1


def test_deepspeed_config_zero_stages_and_batch_arithmetic():
    cfg = TrainConfig(zero_stage=3, micro_batch_size=4, grad_accum=2)
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == 16 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_allow_untested_optimizer"]
    assert ds["bf16"]["enabled"] is False
    assert deepspeed_config(TrainConfig(), 1, gpu=True)["bf16"]["enabled"] is True
    with pytest.raises(ValueError, match="zero_stage.*is not one of 2, 3"):
        TrainConfig(zero_stage=1)


def test_lr_schedule_warmup_then_cosine_to_a_tenth():
    cfg = TrainConfig(warmup_steps=4, max_steps=14, schedule="cosine")
    assert [lr_factor(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, cfg) == pytest.approx(1.0)
    assert lr_factor(9, cfg) == pytest.approx(0.55)  # half way: 0.1 + 0.9 * 0.5
    assert lr_factor(14, cfg) == pytest.approx(0.1)


def test_freeze_vision_keeps_projector_trainable(tiny_models):
    from mmrlhf_ray.models import load_policy

    model, _ = load_policy(tiny_models["policy"])
    visual = model.model.visual
    merger = sum(p.numel() for p in visual.merger.parameters())
    tower = sum(p.numel() for p in visual.parameters()) - merger
    total = sum(p.numel() for p in model.parameters())
    counts = freeze_vision(model)
    assert counts == {"frozen": tower, "trainable": total - tower}
    assert all(p.requires_grad for p in visual.merger.parameters())
    counts = freeze_vision(model, freeze_projector=True)
    assert counts["frozen"] == tower + merger


def test_metrics_csv_truncates_redone_steps(tmp_path):
    path = tmp_path / "m.csv"
    for step in range(1, 6):
        append_metrics(path, {"step": step, "loss": 1.0 / step})
    truncate_metrics(path, 3)
    append_metrics(path, {"step": 4, "loss": 0.3})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]


def test_prepare_sft_rows_quarantines_bad_rows_naming_the_field():
    from mmrlhf_ray.toyworld import generate_pool

    rows = generate_pool(6, seed=3)
    rows[1] = {**rows[1], "reference_answer": ""}
    rows[2] = {**rows[2], "image": b"not a png", "video_frames": None}
    good, bad = prepare_sft_rows(rows, source="toyworld")
    assert len(good) + len(bad) == 6 and len(bad) == 2
    assert [b["field"] for b in bad] == ["reference_answer", "image"]
    assert bad[0]["locator"] == rows[1]["sample_id"]
    assert {modality_key(g) for g in good} <= {"image1", "video"}
