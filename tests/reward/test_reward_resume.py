"""Kill a Ray Train worker mid-run: the reward-model training resumes from its last
checkpoint through the shared harness and finishes with every step logged once."""

from __future__ import annotations

import functools
import os
import sys
import time

import pytest


def dying_loss(model, batch, weights, marker: str, die_at_call: int):
    """The reward loss, except that rank 0's process exits at call ``die_at_call``, once."""
    import ray.train

    from mmrlhf_ray.reward.data import reward_loss_fn

    rank = ray.train.get_context().get_world_rank()
    counter = f"{marker}.calls{rank}"
    calls = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    with open(counter, "w") as f:
        f.write(str(calls))
    if rank == 0 and calls == die_at_call and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("killed")
        time.sleep(10)  # let the controller register the last reported checkpoint
        os._exit(1)  # the worker process dies like a preempted node
    return reward_loss_fn(model, batch, weights)


@pytest.mark.slow
@pytest.mark.ray
def test_killed_worker_resumes_from_checkpoint(
    ray_session, tiny_models, toy_rows, tmp_path, short_prompt
):
    from ray import cloudpickle

    from harness.trainer import TrainTask, run_training
    from mmrlhf_ray.reward.data import build_reward_model, collate_reward_pairs, encode_pair_row
    from mmrlhf_ray.reward.items import RewardMeta
    from mmrlhf_ray.reward.losses import RewardLossWeights
    from mmrlhf_ray.reward.model import load_reward_model, save_reward_model
    from mmrlhf_ray.training.checkpoint import read_metrics
    from mmrlhf_ray.training.config import TrainConfig

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = str(tmp_path / "killed")
    meta = RewardMeta(hidden_size=128, prompt_template=short_prompt, max_length=256)
    task = TrainTask(
        model_path=tiny_models["policy"],
        rows=toy_rows[:16],
        encode=functools.partial(encode_pair_row, source="expanded"),
        collate=functools.partial(collate_reward_pairs, meta=meta),
        loss_fn=functools.partial(
            dying_loss, weights=RewardLossWeights(), marker=marker, die_at_call=5
        ),
        build_model=functools.partial(build_reward_model, meta=meta, seed=0),
        save_model=save_reward_model,
    )
    cfg = TrainConfig(
        num_workers=2,
        max_steps=6,
        checkpoint_every=2,
        micro_batch_size=2,
        warmup_steps=1,
        lr=1e-3,
        max_failures=2,
    )
    result = run_training(
        task,
        cfg,
        name="rm-kill",
        storage_path=str(tmp_path / "ray"),
        output_dir=str(tmp_path / "model"),
    )
    assert os.path.exists(marker)  # a worker really died
    assert result.steps == 6
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # each step once
    assert max(int(r["resumed_from"]) for r in rows) in (2, 4)  # resumed from a checkpoint
    model = load_reward_model(result.hf_dir)
    assert model.meta.prompt_template == short_prompt
    assert len(model.score([{"question": "q", "response": "r", "critique": "c"}])) == 1
