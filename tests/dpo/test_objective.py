"""The grouped objective: every Table 4 loss option, the online-reference fallback, configs."""

import math
from pathlib import Path

import pytest
import torch

from mmrlhf_ray.core.config import load_config
from mmrlhf_ray.data.groups import group_pairs
from mmrlhf_ray.dpo.batching import collate_groups, encode_group
from mmrlhf_ray.dpo.config import LOSS_KINDS, DpoConfig, LossConfig, RefLogpsConfig
from mmrlhf_ray.dpo.forward import grouped_logps
from mmrlhf_ray.dpo.metrics import plot_beta_histogram, preference_accuracy
from mmrlhf_ray.dpo.objective import LossState, preference_loss
from mmrlhf_ray.dpo.train_task import DpoLoss, collate_queries, encode_query
from mmrlhf_ray.models import load_policy
from tests.dpo.helpers import make_pairs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policy_batch(policy_dir):
    model, processor = load_policy(policy_dir)
    groups, _ = group_pairs(make_pairs(n_queries=2, k=3))
    batch = collate_groups(
        [encode_group(processor, g) for g in groups], processor.tokenizer.pad_token_id
    )
    return model, processor, groups, batch


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_every_loss_kind_trains_from_one_grouped_forward(policy_batch, kind):
    model, _, _, batch = policy_batch
    with torch.no_grad():
        ref = grouped_logps(model, batch)[0] - 0.5 * torch.arange(batch.n_rows)  # ref != policy
    logps, n_tok = grouped_logps(model, batch)
    cfg = LossConfig(kind=kind, sft_weight=0.25)
    loss, beta, m = preference_loss(
        cfg, logps, n_tok, batch, None if kind == "simpo" else ref, LossState()
    )
    assert math.isfinite(float(loss)) and beta.shape == (6,)
    assert m["pairs"] == 6 and m["queries"] == 2 and m["responses"] == 6
    model.zero_grad()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    if kind == "mm_dpo":  # margins 1 and 2 -> beta strictly inside (beta_ori, 1.5 beta_ori)
        assert 0.1 < float(beta.min()) < float(beta.max()) < 0.15
    if kind in ("dpo", "mpo"):
        assert torch.all(beta == 0.1)


def test_missing_reference_is_an_error_not_a_guess(policy_batch):
    model, _, _, batch = policy_batch
    logps, n_tok = grouped_logps(model, batch)
    with pytest.raises(ValueError, match="reference log-probs"):
        preference_loss(LossConfig(kind="dpo"), logps, n_tok, batch, batch.ref_logps, LossState())


def test_online_reference_fallback_equals_precomputed(policy_batch, policy_dir, capfd):
    model, processor, groups, _ = policy_batch
    with torch.no_grad():
        ref = grouped_logps(
            model,
            collate_groups(
                [encode_group(processor, g) for g in groups], processor.tokenizer.pad_token_id
            ),
        )[0]
    offset = 0
    for g in groups:  # precomputed = the values the ref-logps stage would store
        g.ref_logps = ref[offset : offset + len(g.responses)].tolist()
        offset += len(g.responses)
    batch = collate_queries([encode_query(g, processor) for g in groups], processor)
    pure = LossConfig(sft_weight=0.0)  # the preference term alone: log 2 at policy == reference
    pre_loss, pre = DpoLoss(pure)(model, batch)
    online_loss, online = DpoLoss(pure, online_reference=policy_dir)(model, batch)
    assert "ONLINE reference" in capfd.readouterr().err
    assert pre_loss.item() == pytest.approx(math.log(2), abs=1e-4)
    assert online_loss.item() == pytest.approx(pre_loss.item(), abs=1e-4)
    assert online["online_reference"] == 1.0 and pre["online_reference"] == 0.0
    correct, total = preference_accuracy(ref + torch.linspace(0, 1, 6), ref, batch["grouped"])
    assert total == 6 and 0 <= correct <= 6


def test_beta_histogram_png(tmp_path):
    path = plot_beta_histogram(
        [0.1, 0.12, 0.15], [0.0, 1.0, float("nan")], str(tmp_path / "b.png"), 0.1, 0.5
    )
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "name,cls",
    [("ref-logps", RefLogpsConfig), ("train-dpo", DpoConfig), ("train-dpo.gpu", DpoConfig)],
)
def test_configs_load_and_start_with_their_command(name, cls):
    path = ROOT / "configs" / f"{name}.yaml"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("mmrlhf " in first or "jobs/" in first)
    cfg = load_config(cls, path)
    if name == "train-dpo.gpu":
        assert cfg.train.zero_stage == 3 and cfg.train.use_gpu and cfg.loss.beta_ori == 0.1
        assert (cfg.loss.w, cfg.loss.k) == (0.5, 0.5) and cfg.train.freeze_vision


def test_bad_config_values_name_the_key():
    with pytest.raises(ValueError, match="kind.*is not one of"):
        LossConfig(kind="orpo")
    with pytest.raises(Exception, match="loss.nope"):
        load_config(DpoConfig, None, ["loss.nope=1"])
