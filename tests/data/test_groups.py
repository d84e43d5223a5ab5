"""Pairs grouped per query (mmrlhf_ray/data/groups.py): dedupe, indices, quarantine, split."""

import math

from mmrlhf_ray.data.groups import count_pairs, group_pairs, split_groups
from tests.dpo.helpers import make_pairs


def test_groups_dedupe_responses_and_index_pairs():
    rows = make_pairs(n_queries=3, k=4)
    groups, quarantine = group_pairs(rows)
    assert quarantine == []
    assert [g.query_id for g in groups] == ["q0", "q1", "q2"]
    assert [len(g.responses) for g in groups] == [4, 4, 4]  # 4 forwards, not 12
    assert count_pairs(groups) == len(rows) == 18
    g = groups[1]
    by_id = {p.pair_id: p for p in g.pairs}
    p = by_id["q1-1-3"]
    assert g.response_ids[p.chosen] == "q1-r1" and g.response_ids[p.rejected] == "q1-r3"
    assert p.margin == 2.0


def test_missing_ids_fall_back_to_text_hash():
    rows = make_pairs(n_queries=1, k=3)
    for r in rows:
        r["chosen_id"] = r["rejected_id"] = None
    groups, quarantine = group_pairs(rows)
    assert quarantine == [] and len(groups[0].responses) == 3


def test_bad_pairs_are_quarantined_with_field_and_counts_add_up():
    rows = make_pairs(n_queries=2, k=3)  # 6 pairs
    rows[0]["question"] = ""  # invalid row
    rows[2]["rejected"] = "a different text under the id q0-r2"  # id conflict (q0-0-2 came first)
    rows[3]["margin"] = None  # no margin, MM-DPO needs one
    rows[4]["rejected_id"] = rows[4]["chosen_id"]  # self-pair
    groups, quarantine = group_pairs(rows, source="score", need_margin=True)
    fields = {q["locator"]: q["field"] for q in quarantine}
    assert fields == {
        "pair_id=q0-0-1": "question",
        "pair_id=q0-1-2": "rejected_id",
        "pair_id=q1-0-1": "margin",
        "pair_id=q1-0-2": "rejected_id",
    }
    assert all(q["source"] == "score" and q["reason"].startswith("pair ") for q in quarantine)
    assert count_pairs(groups) + len(quarantine) == len(rows)


def test_reference_logps_checked_per_response():
    rows = make_pairs(n_queries=1, k=3)
    for r in rows:
        r["ref_chosen_logp"] = -float(r["chosen_rank"])
        r["ref_rejected_logp"] = -float(r["rejected_rank"])
    rows[2]["ref_rejected_logp"] = -7.5  # disagrees with -3.0 given for q0-r2 before
    groups, quarantine = group_pairs(rows, need_ref=True)
    assert [q["field"] for q in quarantine] == ["rejected_id"]
    assert groups[0].ref_logps == [-1.0, -2.0, -3.0]
    rows = make_pairs(n_queries=1, k=2)
    groups, quarantine = group_pairs(rows, need_ref=True)
    assert quarantine[0]["field"] == "ref_chosen_logp" and not groups


def test_split_is_deterministic_and_disjoint():
    groups, _ = group_pairs(make_pairs(n_queries=40, k=2))
    train, held = split_groups(groups, 0.25, seed=0)
    assert len(train) + len(held) == 40 and 3 <= len(held) <= 18
    assert not {g.query_id for g in train} & {g.query_id for g in held}
    again = split_groups(list(reversed(groups)), 0.25, seed=0)[1]
    assert sorted(g.query_id for g in again) == sorted(g.query_id for g in held)
    assert math.isclose(len(split_groups(groups, 0.0, 0)[1]), 0)
