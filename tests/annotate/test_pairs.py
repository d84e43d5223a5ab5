"""Pair expansion: exact counts, ties, constructed responses, ids, margins, the stage."""

from __future__ import annotations

import pytest

from mmrlhf_ray.annotate.pairs import PairsConfig, expand_record, expand_records, oracle_score
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table


def _resp(i, rank, h=3, f=3, e=5, constructed=None, text=None):
    return {
        "response_id": f"r{i}",
        "model": f"m{i}",
        "text": text or f"answer {i}",
        "helpfulness": h,
        "faithfulness": f,
        "ethics": e,
        "rank": rank,
        "score_reason": f"reason {i}",
        "critique": f"critique {i}",
        "constructed": constructed,
    }


def _record(qid, responses, is_tie=False):
    return {
        "query_id": qid,
        "question": "What colour is the circle?",
        "category": "short",
        "image_path": "short/x.png",
        "responses": responses,
        "is_tie": is_tie,
    }


def test_four_distinct_ranks_give_six_pairs_best_first():
    record = _record("q", [_resp(0, 3), _resp(1, 1), _resp(2, 4), _resp(3, 2)])
    pairs, stats = expand_record(record)
    assert stats.pairs == 6 and len(pairs) == 6 and stats.tied_pairs_skipped == 0
    assert all(p["chosen_rank"] < p["rejected_rank"] for p in pairs)
    assert {(p["chosen_id"], p["rejected_id"]) for p in pairs} == {
        ("r1", "r0"),
        ("r0", "r2"),
        ("r3", "r0"),
        ("r1", "r2"),
        ("r1", "r3"),
        ("r3", "r2"),
    }
    first = pairs[0]
    assert first["pair_id"] == "q::r1>r0" and first["chosen_reason"] == "reason 1"
    assert first["rejected_critique"] == "critique 0" and first["margin"] is None
    assert first["image_path"] == "short/x.png" and first["is_tie"] is False
    to_table(pairs, "pair")


def test_ties_give_fewer_pairs_and_are_counted():
    # ranks 1, 2, 2, 3: C(4,2)=6 minus the one equal-rank pair = 5
    pairs, stats = expand_record(_record("q", [_resp(0, 1), _resp(1, 2), _resp(2, 2), _resp(3, 3)]))
    assert stats.pairs == 5 and stats.tied_pairs_skipped == 1
    # all tied: no pairs at all, counted
    pairs, stats = expand_record(_record("q", [_resp(i, 1) for i in range(3)], is_tie=True))
    assert pairs == [] and stats.tied_pairs_skipped == 3 and stats.records_without_pairs == 1


def test_constructed_negative_pairs_with_every_tied_response():
    responses = [_resp(i, 1, h=5, f=5) for i in range(3)]
    responses.append(_resp(3, None, h=2, f=1, constructed="negative", text="It is blue."))
    pairs, stats = expand_record(_record("q", responses, is_tie=True))
    assert stats.pairs == 3 and stats.tie_pairs == 3 and stats.tied_pairs_skipped == 3
    # pairs with a constructed response are preferences, not ties
    assert {p["rejected_id"] for p in pairs} == {"r3"} and not any(p["is_tie"] for p in pairs)
    # the same record under tie_rule=skip: the constructed response is ignored, no pairs
    pairs, stats = expand_record(_record("q", responses, is_tie=True), tie_rule="skip")
    assert pairs == [] and stats.constructed_skipped == 1 and stats.records_without_pairs == 1


def test_constructed_positive_with_rank_beats_poor_ties():
    responses = [_resp(i, 2, h=1, f=1) for i in range(2)] + [
        _resp(2, 1, h=5, f=5, constructed="positive")
    ]
    pairs, stats = expand_record(_record("q", responses, is_tie=True))
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("r2", "r0"), ("r2", "r1")]


def test_best_vs_worst_and_oracle_margin():
    record = _record("q", [_resp(0, 1, h=5, f=5, e=5), _resp(1, 2), _resp(2, 3, h=1, f=2, e=3)])
    pairs, _ = expand_record(record, mode="best-vs-worst", margin="oracle")
    assert len(pairs) == 1 and pairs[0]["pair_id"] == "q::r0>r2"
    assert (
        pairs[0]["margin"] == pytest.approx((15 - 6) / 3) and pairs[0]["margin_source"] == "oracle"
    )
    assert oracle_score({"helpfulness": None, "faithfulness": 1, "ethics": 1}) is None


def test_pair_ids_are_deterministic_and_unique():
    records = [_record(f"q{k}", [_resp(i, i + 1) for i in range(4)]) for k in range(3)]
    a, stats = expand_records(records)
    b, _ = expand_records(records)
    assert [p["pair_id"] for p in a] == [p["pair_id"] for p in b]
    assert len({p["pair_id"] for p in a}) == 18 == stats.pairs and stats.records == 3


def test_config_refuses_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        PairsConfig(mode="hardest")


def _finished_stage(run, stage, records):
    sd = StageDir(run, stage)
    sd.begin({"test": stage})
    sd.write_part("part-00000", to_table(records, "record"))
    sd.finish(len(records), len(records), 0)
    return sd


def test_pairs_stage_counts_quarantine_and_resume(tmp_path, capsys):
    from jobs.pairs import main

    run = str(tmp_path / "run")
    good = [_record(f"q{k}", [_resp(i, i + 1) for i in range(4)]) for k in range(3)]
    tied = _record("qt", [_resp(i, 1) for i in range(2)], is_tie=True)
    broken = _record("qb", [_resp(0, 1), _resp(1, 2)])
    broken["category"] = "poetry"  # not a category: quarantined, counted
    _finished_stage(run, "annotate", [*good, tied, broken])
    args = [f"run_dir={run}", "records_per_part=2", "margin=oracle"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 records (1 quarantined) -> 18 pairs" in out and "1 records gave no pair" in out
    pairs = StageDir(run, "pairs")
    assert pairs.count_rows() == 18 and pairs.count_rows(quarantine=True) == 1
    assert pairs.read_manifest()["counts"] == {"in": 5, "out": 4, "quarantined": 1}
    assert set(pairs.read().column("margin_source").to_pylist()) == {"oracle"}
    assert main(args) == 0 and "already done" in capsys.readouterr().out
    # crash after the first part: the rerun writes only the missing parts
    names = pairs.part_names()
    kept = tmp_path / "run/pairs/data" / f"{names[0]}.parquet"
    before = kept.stat().st_mtime_ns
    for name in names[1:]:
        pairs.fs.delete_file(f"{pairs.data_dir}/{name}.parquet")
    pairs.write_manifest(dict(pairs.read_manifest(), status="running"))
    assert main(args) == 0
    assert pairs.count_rows() == 18 and kept.stat().st_mtime_ns == before
    # expand, once finished, is preferred over annotate
    _finished_stage(run, "expand", good[:1])
    assert main([f"run_dir={run}"]) == 0
    assert pairs.count_rows() == 6 and list(pairs.read_manifest()["inputs"]) == ["expand"]


def test_partial_tie_rule_four_responses_two_tied():
    # ranks 1, 1, 2, 3 (r0 and r1 equally good) + a constructed negative of the tie (r4)
    responses = [_resp(0, 1), _resp(1, 1), _resp(2, 2), _resp(3, 3)]
    responses.append(_resp(4, None, constructed="negative", text="an injected error"))
    pairs, stats = expand_record(_record("q", responses))  # tie_rule=paper (default)
    got = {(p["chosen_id"], p["rejected_id"]) for p in pairs}
    # 5 pairs of differing rank among the originals + the negative below each tied response
    originals = {("r0", "r2"), ("r0", "r3"), ("r1", "r2"), ("r1", "r3"), ("r2", "r3")}
    assert got == originals | {("r0", "r4"), ("r1", "r4")}
    assert stats.pairs == 7 and stats.tie_pairs == 2 and stats.tied_pairs_skipped == 1
    # the rule before, kept by name: the negative below every original response
    pairs, stats = expand_record(_record("q", responses), tie_rule="constructed")
    got = {(p["chosen_id"], p["rejected_id"]) for p in pairs}
    assert got == originals | {(f"r{i}", "r4") for i in range(4)} and stats.pairs == 9
    # a constructed positive resolves the worst tied group: ranks 1, 2, 3, 3
    responses = [_resp(0, 1), _resp(1, 2), _resp(2, 3), _resp(3, 3)]
    responses.append(_resp(4, None, constructed="positive", text="the corrected answer"))
    pairs, _ = expand_record(_record("q", responses))
    assert {(p["chosen_id"], p["rejected_id"]) for p in pairs if "r4" in p["pair_id"]} == {
        ("r4", "r2"),
        ("r4", "r3"),
    }


def test_equal_rank_pairs_carried_as_ties_when_asked():
    record = _record("q", [_resp(0, 1), _resp(1, 2), _resp(2, 2), _resp(3, 3)])
    pairs, stats = expand_record(record, ties="carry")
    ties = [p for p in pairs if p["is_tie"]]
    assert len(pairs) == 6 and [(p["chosen_id"], p["rejected_id"]) for p in ties] == [("r1", "r2")]
    assert stats.tied_pairs_carried == 1 and stats.tied_pairs_skipped == 0
    to_table(pairs, "pair")
    # the preference losses refuse a tie by name; the reward model trains it with l_Tie
    from mmrlhf_ray.data.groups import group_pairs

    groups, bad = group_pairs(pairs)
    assert sum(len(g.pairs) for g in groups) == 5 and [q["field"] for q in bad] == ["is_tie"]


def test_mia_dpo_pairs_grid_collage():
    import io

    import numpy as np
    from PIL import Image

    from mmrlhf_ray.annotate.mia_dpo import CELLS, mia_pairs, target_cell
    from mmrlhf_ray.data.media import encode_png

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    records = []
    for k, c in enumerate(colours):
        rec = _record(f"q{k}", [_resp(0, 2, text=f"worse {k}"), _resp(1, 1, text=f"best {k}")])
        rec["image_path"] = None
        rec["image"] = encode_png(Image.new("RGB", (8, 8), c))
        records.append(rec)
    video = _record("qv", [_resp(0, 1)])
    video["image_path"], video["video_frames"] = None, [records[0]["image"]]
    pairs, without = mia_pairs([*records, video], 3)
    assert len(pairs) == 5 and without == 1  # the video record gives none, counted
    p = pairs[0]
    cell = target_cell("q0")
    assert p["query_id"] == "q0#mia" and p["chosen"] == "best 0" and p["rejected"] == "best 1"
    assert p["question"].startswith(
        f"This picture is a 2 x 2 grid of images. Look only at the {CELLS[cell]}"
    )
    img = np.asarray(Image.open(io.BytesIO(p["image"])).convert("RGB"))
    assert img.shape == (16, 16, 3)
    y, x = (cell // 2) * 8 + 4, (cell % 2) * 8 + 4
    assert tuple(img[y, x]) == colours[0]  # the target sits in the named cell
    others = {tuple(img[(c // 2) * 8 + 4, (c % 2) * 8 + 4]) for c in range(4) if c != cell}
    assert others == set(colours[1:4])  # the next three image records are the distractors
    to_table(pairs, "pair")
    with pytest.raises(ValueError, match="mia_distractors"):
        PairsConfig(mia_distractors=4)


def test_pairs_stage_writes_mia_dpo_pairs_beside_the_others(tmp_path, capsys):
    from PIL import Image

    from jobs.pairs import main
    from mmrlhf_ray.data.media import encode_png

    run = str(tmp_path / "run")
    records = []
    for k in range(3):
        rec = _record(f"q{k}", [_resp(i, i + 1, text=f"answer {k}.{i}") for i in range(3)])
        rec["image_path"], rec["image"] = None, encode_png(Image.new("RGB", (8, 8), (k, 0, 0)))
        records.append(rec)
    _finished_stage(run, "annotate", records)
    assert main([f"run_dir={run}", "mia_distractors=1"]) == 0
    assert "3 MIA-DPO pairs" in capsys.readouterr().out
    rows = StageDir(run, "pairs").read().to_pylist()
    mia = [r for r in rows if r["query_id"].endswith("#mia")]
    assert len(rows) == 3 * 3 + 3 and len(mia) == 3  # C(3,2) per record + one collage each
    assert {r["rejected"] for r in mia} == {"answer 0.0", "answer 1.0", "answer 2.0"}
    assert StageDir(run, "pairs").read_manifest()["stats"]["mia_pairs"] == 3
