"""The loss table (dpo/loss_specs.py): the one place a loss kind is described.

Pure tensors, no model: each kind's loss on hand-computed values through the objective,
the SFT term once per distinct chosen response, the per-pair report, and the GUIDE's
table kept equal to the code's.
"""

import math
import re
from pathlib import Path

import pytest
import torch

from mmrlhf_ray.data.groups import PairRef, QueryGroup
from mmrlhf_ray.dpo.batching import PairIndex
from mmrlhf_ray.dpo.config import LOSS_KINDS, LossConfig
from mmrlhf_ray.dpo.loss_specs import LOSS_SPECS, guide_rows, loss_spec
from mmrlhf_ray.dpo.objective import LossState, preference_loss
from mmrlhf_ray.dpo.report import pair_table

ROOT = Path(__file__).resolve().parents[2]


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def four_ranked():
    """One query, responses 0..3 ranked 1..4, all 6 pairs (chosen = the better)."""
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    index = PairIndex(
        row_query=torch.zeros(4, dtype=torch.long),
        chosen_idx=torch.tensor([a for a, _ in pairs]),
        rejected_idx=torch.tensor([b for _, b in pairs]),
        margins=torch.tensor([float(b - a) for a, b in pairs]),
        ref_logps=torch.full((4,), float("nan")),
        query_ids=["q"],
    )
    policy = torch.tensor([-4.0, -6.0, -9.0, -12.0], dtype=torch.float64)
    ref = torch.tensor([-5.0, -6.0, -8.0, -10.0], dtype=torch.float64)
    tokens = torch.tensor([2, 3, 3, 4])
    return index, pairs, policy, ref, tokens


def test_the_config_choices_are_the_table_rows():
    assert LOSS_KINDS == tuple(LOSS_SPECS) and LOSS_KINDS[:2] == ("mm_dpo", "dpo")
    assert [k for k in LOSS_KINDS if LossConfig(kind=k).needs_margin] == ["mm_dpo"]
    assert not LossConfig(kind="mm_dpo", w=0.0).needs_margin
    assert [k for k in LOSS_KINDS if not LossConfig(kind=k).needs_reference] == ["simpo"]
    with pytest.raises(ValueError, match="'orpo' is not one of mm_dpo, dpo"):
        loss_spec("orpo")


def test_guide_table_is_the_code_table():
    text = (ROOT / "docs" / "GUIDE.md").read_text()
    block = re.search(r"<!-- loss-table:start -->\n(.*?)\n<!-- loss-table:end -->", text, re.S)
    assert block, "docs/GUIDE.md lost its loss-table markers"
    lines = [[c.strip() for c in ln.strip("|").split("|")] for ln in block.group(1).splitlines()]
    header, rows = lines[0], [r for r in lines[2:]]
    want = guide_rows()
    assert header == list(want[0])
    assert [dict(zip(header, [c.strip("`") for c in r], strict=True)) for r in rows] == want


def test_mia_dpo_loss_hand_values_and_sft_once_per_chosen_response():
    index, pairs, policy, ref, tokens = four_ranked()
    cfg = LossConfig(kind="mia_dpo", sft_weight=0.5)
    loss, beta, m = preference_loss(cfg, policy, tokens, index, ref, LossState())
    # h per pair = (pi-ref)_w - (pi-ref)_l with pi-ref = [1, 0, -1, -2]:
    # (0,1) 1, (0,2) 2, (0,3) 3, (1,2) 1, (1,3) 2, (2,3) 1
    dpo = [-math.log(_sig(0.1 * h)) for h in (1, 2, 3, 1, 2, 1)]
    # SFT: each distinct chosen response once (rows 0, 1, 2; row 0 is chosen 3 times):
    # -logp / tokens = 4/2, 6/3, 9/3 -> mean 7/3
    sft = (2.0 + 2.0 + 3.0) / 3
    # beta is a float32 tensor (0.1 to 6e-8 relative): compare at that precision
    assert float(loss) == pytest.approx(sum(dpo) / 6 + 0.5 * sft, rel=1e-7)
    assert m["sft_nll"] == pytest.approx(sft, rel=1e-12)
    assert torch.all(beta == 0.1)
    # the same numbers as plain dpo: MIA-DPO's own part is its pairs, its loss is DPO's
    plain, _, _ = preference_loss(
        LossConfig(kind="dpo", sft_weight=0.5), policy, tokens, index, ref, LossState()
    )
    assert float(plain) == float(loss)


def test_sft_term_counts_each_response_once_not_per_pair():
    index, _, policy, ref, tokens = four_ranked()
    loss0, _, _ = preference_loss(
        LossConfig(kind="dpo", sft_weight=0.0), policy, tokens, index, ref, LossState()
    )
    loss1, _, _ = preference_loss(
        LossConfig(kind="dpo", sft_weight=1.0), policy, tokens, index, ref, LossState()
    )
    # per pair the SFT mean would be (3*2 + 2*2 + 1*3) / 6 = 13/6; once per response 7/3
    assert float(loss1 - loss0) == pytest.approx(7.0 / 3.0, rel=1e-12)


def test_mm_dpo_beta_is_one_function_for_the_loss_and_the_report():
    index, pairs, policy, ref, tokens = four_ranked()
    cfg = LossConfig(kind="mm_dpo", sft_weight=0.0)
    _, beta, _ = preference_loss(cfg, policy, tokens, index, ref, LossState())
    hand = [0.1 * (1 + 0.5 * (1 - math.exp(-0.5 * (b - a)))) for a, b in pairs]
    assert beta.tolist() == pytest.approx(hand, rel=1e-6)
    group = QueryGroup(
        "q", "?", {}, pairs=[PairRef(f"p{a}{b}", a, b, float(b - a)) for a, b in pairs]
    )
    table = pair_table([group], [], cfg).to_pylist()
    assert [r["beta"] for r in table] == pytest.approx(beta.tolist(), rel=1e-6)
    assert {r["split"] for r in table} == {"train"}


@pytest.mark.parametrize(
    "kind,want", [("dpo", 0.1), ("mia_dpo", 0.1), ("simpo", 2.0), ("ipo", 0.1), ("mpo", 0.1)]
)
def test_report_beta_of_fixed_beta_kinds(kind, want):
    group = QueryGroup("q", "?", {}, pairs=[PairRef("p", 0, 1, None)])
    (row,) = pair_table([], [group], LossConfig(kind=kind)).to_pylist()
    assert row["beta"] == pytest.approx(want) and row["split"] == "heldout"


@pytest.mark.parametrize("kind", ["beta_dpo", "implicit_reward"])
def test_report_never_claims_beta_ori_for_a_beta_made_in_training(kind):
    group = QueryGroup("q", "?", {}, pairs=[PairRef("p", 0, 1, 1.0)])
    (row,) = pair_table([group], [], LossConfig(kind=kind)).to_pylist()
    assert math.isnan(row["beta"]) and "policy" in row["beta_rule"]
