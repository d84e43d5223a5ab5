"""Form validation (every bad input named), the tie rule, consensus and disagreement."""

import pytest

from mmrlhf_ray.annotate_app.labels import (
    LabelError,
    Labels,
    ResponseLabel,
    consensus,
    disagreements,
    labels_to_form,
    parse_form,
)


def form(scores, ranks, reason="ok", **extra):
    out = {"ranking_reason": "first is right"}
    for i, ((h, f, e), r) in enumerate(zip(scores, ranks, strict=True)):
        out.update(
            {
                f"r{i}_helpfulness": h,
                f"r{i}_faithfulness": f,
                f"r{i}_ethics": e,
                f"r{i}_rank": r,
                f"r{i}_reason": reason,
            }
        )
    out.update(extra)
    return {k: str(v) for k, v in out.items()}


GOOD = form([(5, 5, 5), (2, 1, 5), (1, 1, 4)], [1, 2, 2])


def problems(data, k=3, **kw):
    with pytest.raises(LabelError) as info:
        parse_form(data, k, **kw)
    return [message for _, message in info.value.problems]


def test_valid_form_round_trips():
    labels = parse_form(GOOD, 3)
    assert labels.ranks == [1, 2, 2] and not labels.is_tie
    assert labels.responses[1] == ResponseLabel(2, 1, 5, 2, "ok")
    assert parse_form(labels_to_form(labels), 3) == labels
    assert Labels.from_dict(labels.to_dict()) == labels


def test_each_bad_input_is_named():
    assert problems({**GOOD, "r0_helpfulness": ""}) == ["response 1 helpfulness is missing"]
    assert problems({**GOOD, "r1_ethics": "6"}) == ["response 2 ethics is 6, outside 1-5"]
    assert problems({**GOOD, "r2_faithfulness": "0"}) == [
        "response 3 faithfulness is 0, outside 1-5"
    ]
    assert problems({**GOOD, "r2_faithfulness": "2.5"}) == [
        "response 3 faithfulness must be a whole number 1-5, got '2.5'"
    ]
    assert problems({**GOOD, "r2_rank": "4"}) == ["response 3 rank is 4, outside 1-3"]
    assert problems({**GOOD, "r1_rank": "3", "r2_rank": "3"}) == [
        "ranks 1, 3, 3 are not a ranking: use 1..m with no gap (1 = best; tied responses "
        "share a rank)"
    ]
    assert problems({**GOOD, "r0_reason": "x" * 21}, max_reason_chars=20) == [
        "response 1 reason is 21 characters, over the limit of 20"
    ]
    assert problems({**GOOD, "ranking_reason": ""}) == ["ranking reason is missing"]
    assert parse_form({**GOOD, "ranking_reason": ""}, 3, require_reasons=False).ranking_reason == ""
    assert len(problems({})) == 3 * 5 + 1  # every field of every response, and the ranking


def test_tie_rule_needs_a_constructed_response():
    tied = form([(3, 3, 5), (3, 3, 5)], [1, 1])
    assert problems(tied, 2)[0].startswith("all responses are tied: the tie rule needs")
    labels = parse_form({**tied, "constructed_kind": "negative", "constructed_text": "Blue."}, 2)
    assert labels.is_tie and (labels.constructed_kind, labels.constructed_text) == (
        "negative",
        "Blue.",
    )
    assert problems({**GOOD, "constructed_kind": "positive", "constructed_text": "x"}) == [
        "a constructed response is only for a full tie: clear it or rank every response equal"
    ]


def test_disagreement_and_consensus():
    a = parse_form(GOOD, 3)
    b = parse_form(
        {**GOOD, "r0_faithfulness": "4", "r2_ethics": "5", "r0_reason": ""},
        3,
        require_reasons=False,
    )
    assert disagreements([a, b]) == []
    final = consensus([a, b])
    assert [r.faithfulness for r in final.responses] == [4, 1, 1]  # lower median of (5, 4)
    assert [r.ethics for r in final.responses] == [5, 5, 4]
    assert final.responses[0].reason == "ok" and final.ranks == [1, 2, 2]
    c = parse_form({**GOOD, "r1_rank": "3", "r2_rank": "2", "r0_helpfulness": "2"}, 3)
    assert disagreements([a, c]) == ["rankings differ", "response 1 helpfulness: 5, 2"]
    assert disagreements([a, b], max_score_gap=0) == [
        "response 1 faithfulness: 5, 4",
        "response 3 ethics: 4, 5",
    ]
