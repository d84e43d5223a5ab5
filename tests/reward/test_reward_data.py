"""Pairs -> reward-model items: critique source, quarantine, query-level split."""

import pytest

from mmrlhf_ray.reward.data import pairs_from_rows, pick_critique, split_pairs


def test_toy_pairs_are_graded_and_complete(toy_rows):
    assert len(toy_rows) == 30  # 10 queries x C(3, 2)
    assert all(r["chosen_rank"] < r["rejected_rank"] for r in toy_rows)
    assert {r["category"] for r in toy_rows} <= {"long", "short", "mcq", "safety", "video"}


def test_critique_source_selection():
    row = {
        "pair_id": "p",
        "chosen_reason": "short",
        "chosen_critique": "long one",
        "rejected_reason": "bad",
        "rejected_critique": None,
    }
    assert pick_critique(row, "chosen", "expanded") == "long one"
    assert pick_critique(row, "chosen", "human") == "short"
    assert pick_critique(row, "rejected", "auto") == "bad"  # falls back to the reason
    assert pick_critique(row, "chosen", "none") is None
    with pytest.raises(ValueError, match="pair p: rejected_critique: missing"):
        pick_critique(row, "rejected", "expanded")


def test_bad_rows_are_quarantined_with_the_field(toy_rows):
    rows = [dict(r) for r in toy_rows[:6]]
    rows[0]["image"] = b"not an image"
    rows[1]["chosen"] = ""
    rows[2]["chosen_critique"] = None
    good, bad = pairs_from_rows(rows, "expanded")
    assert len(good) + len(bad) == 6
    fields = {b["locator"]: b["field"] for b in bad}
    assert fields == {
        rows[0]["pair_id"]: "image",
        rows[1]["pair_id"]: "chosen",
        rows[2]["pair_id"]: "chosen_critique",
    }
    assert all(b["reason"] for b in bad)


def test_split_is_by_query_and_deterministic(toy_rows):
    good, _ = pairs_from_rows(toy_rows, "auto")
    train, held = split_pairs(good, 0.3, seed=0)
    assert len(train) + len(held) == len(good) and held and train
    assert not {p.query_id for p in train} & {p.query_id for p in held}
    again = split_pairs(good, 0.3, seed=0)[1]
    assert [p.pair_id for p in again] == [p.pair_id for p in held]
    video = next(p for p in good if p.category == "video")
    assert len(video.chosen.images) == 4  # frames of the toy video


def test_ties_are_flagged_pairs_and_equal_ranks(toy_rows):
    rows = [dict(r) for r in toy_rows[:3]]
    rows[0]["is_tie"] = True  # flagged (a carried equal-rank pair, the release's is_tie)
    rows[1]["rejected_rank"] = rows[1]["chosen_rank"]  # equal ranks: a tie as well
    good, _ = pairs_from_rows(rows, "auto")
    assert [p.is_tie for p in good] == [True, True, False]


def test_tie_term_changes_the_loss_only_on_tie_pairs():
    import torch

    from mmrlhf_ray.reward.losses import RewardLossWeights, reward_loss

    rc, rr = torch.tensor([1.0, 0.3, -0.5]), torch.tensor([0.0, 0.8, -1.0])
    nll = torch.tensor(0.0)
    on, off = RewardLossWeights(tie=0.5, center=0.0), RewardLossWeights(tie=0.0, center=0.0)
    none = torch.tensor([False, False, False])
    assert reward_loss(rc, rr, none, nll, on)[0] == reward_loss(rc, rr, none, nll, off)[0]
    tie = torch.tensor([False, True, False])
    with_tie, parts = reward_loss(rc, rr, tie, nll, on)
    without, _ = reward_loss(rc, rr, tie, nll, off)
    # l_Tie of d = -0.5: -(0.5 log s(-0.5) + 0.5 log s(0.5)); the pair leaves Eq. 3
    d = torch.tensor(-0.5)
    hand = -(0.5 * torch.nn.functional.logsigmoid(d) + 0.5 * torch.nn.functional.logsigmoid(-d))
    assert float(with_tie - without) == pytest.approx(0.5 * float(hand), rel=1e-6)
    assert parts["tie"] == pytest.approx(float(hand), rel=1e-6)
    bt = -torch.nn.functional.logsigmoid(torch.tensor([1.0, 0.5])).mean()
    assert float(without) == pytest.approx(float(bt), rel=1e-6)
