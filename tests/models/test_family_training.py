"""Two-step train-dpo and train-reward on Ray Train + DeepSpeed for each family, from
precomputed reference log-probs (a zero-step policy gives h = 0 on every pair)."""

from __future__ import annotations

import csv

import pytest
import torch

from jobs import train_dpo, train_reward
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.dpo.reference import fill_pairs, reference_logps
from mmrlhf_ray.models.families import get_family, load_model
from mmrlhf_ray.models.settings import EncodingSettings
from tests.dpo.helpers import make_pairs

# Qwen2-VL trains in tests/dpo and tests/reward. Ray Train + DeepSpeed start-up dominates
# each run (~25 s of ~35-50 s on 2 cores: the controller and the worker process import
# torch, transformers and DeepSpeed; 2 steps take ~5 s); every family's pair of runs is in
# the default suite (~3 min more in all; the whole suite stays ~21 min on a fresh clone).
FAMILIES = ["llava-onevision", "qwen2.5-vl", "internvl", "smolvlm"]
REWARD_FAMILIES = FAMILIES


def _stage(run, name, rows, **extra):
    out = StageDir(str(run), name)
    out.begin({"test": True})
    out.write_part("part-00000", to_table(rows, "pair"))
    out.finish(len(rows), len(rows), 0, **extra)


def _tower_keys(policy: str, name: str) -> set[str]:
    model, _ = load_model(policy)
    family = get_family(name)
    projector = {id(p) for p in family.projector_parameters(model)}
    ids = {id(p) for m in family.vision_modules(model) for p in m.parameters()} - projector
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.ray
@pytest.mark.parametrize("name", FAMILIES)
def test_two_step_train_dpo_per_family(name, family_models, ray_session, tmp_path):
    policy = family_models(name)["policy"]
    rows = make_pairs(n_queries=4, k=3, seed=1, video_every=4)
    model, processor = load_model(policy)
    groups, _ = group_pairs(rows)
    done, quarantine = fill_pairs(rows, reference_logps(model, processor, groups))
    assert not quarantine and len(done) == 12
    _stage(tmp_path, "ref-logps", done, encoding=EncodingSettings.of(policy, 256, 4).to_dict())
    argv = [
        f"run_dir={tmp_path}",
        f"policy={policy}",
        "heldout_fraction=0.0",
        "train.max_steps=2",
        "train.micro_batch_size=2",
        "train.num_workers=1",
        "train.warmup_steps=0",
        "train.lr=0.01",
        "train.checkpoint_every=100",
    ]
    assert train_dpo.main(argv) == 0
    with open(tmp_path / "train-dpo" / "metrics.csv") as f:
        steps = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    assert [s["step"] for s in steps] == [1.0, 2.0]
    assert steps[0]["pref_loss"] == pytest.approx(0.6931, abs=1e-4)  # h = 0: policy == ref
    before = dict(load_model(policy)[0].named_parameters())
    after = dict(load_model(tmp_path / "train-dpo" / "policy")[0].named_parameters())
    tower = _tower_keys(policy, name)
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in tower)


@pytest.mark.ray
@pytest.mark.parametrize("name", REWARD_FAMILIES)
def test_two_step_train_reward_per_family(name, family_models, ray_session, tmp_path):
    from mmrlhf_ray.reward.model import load_reward_model
    from mmrlhf_ray.reward.toy import toy_pairs

    backbone = family_models(name)["policy"]
    _stage(tmp_path, "pairs", toy_pairs(4, seed=0))
    argv = [
        f"run_dir={tmp_path}",
        f"backbone={backbone}",
        "epochs=0",
        "train.max_steps=2",
        "train.checkpoint_every=100",
        "train.micro_batch_size=2",
        "train.num_workers=1",
        "train.freeze_vision=true",  # App. G.1, as the GPU profile trains the 7B reward model
        "heldout_fraction=0.25",
        "eval_mode=none",
    ]
    assert train_reward.main(argv) == 0
    with open(tmp_path / "train-reward" / "metrics.csv") as f:
        steps = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    assert [s["step"] for s in steps] == [1.0, 2.0]
    assert all(0 < s["loss"] < 100 for s in steps)
    before = dict(load_model(backbone)[0].named_parameters())
    after = dict(load_model(tmp_path / "train-reward" / "model")[0].named_parameters())
    tower = _tower_keys(backbone, name)
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in tower)
    model = load_reward_model(tmp_path / "train-reward" / "model")
    item = toy_pairs(1, seed=3)[0]
    scored = model.score_with_critique(
        [{"question": item["question"], "response": item["chosen"], "images": []}],
        mode="generate",
        max_new_tokens=4,
    )
    assert len(scored) == 1 and isinstance(scored[0][0], float)
