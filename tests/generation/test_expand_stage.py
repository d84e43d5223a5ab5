"""The expand stage (Table 7) and critique generation, on real tiny models."""

from __future__ import annotations

import pytest

from jobs.expand import merge, run
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.generation.config import ExpandConfig, ModelSpec
from mmrlhf_ray.generation.expansion import critique_request

NEG = "Incorrect: the circle is blue, not red."
POS = "Correct and faithful to the image."


def _record(qid: str, reasons: list, category: str = "short") -> dict:
    responses = [
        {
            "response_id": f"{qid}/m/{i}",
            "model": "m",
            "text": f"answer {i}",
            "rank": i + 1,
            "helpfulness": 3,
            "faithfulness": 3,
            "ethics": 5,
            "score_reason": r,
            "critique": None,
            "constructed": None,
        }
        for i, r in enumerate(reasons)
    ]
    return {
        "query_id": qid,
        "question": "What colour is the circle?",
        "category": category,
        "responses": responses,
        "is_tie": False,
    }


def _write_annotate(run_dir: str, records: list[dict]) -> None:
    stage = StageDir(run_dir, "annotate")
    stage.begin({"test": True})
    stage.write_part("part-0", to_table(records, "record"))
    stage.finish(len(records), len(records), 0)


def test_merge_checks_and_fallback_policy():
    records = [_record("a", [NEG, POS, None])]
    texts = {
        "a#0": "The response is correct, accurate and complete.",  # contradicts NEG
        "a#1": "The response is correct: it is accurate and faithful to the image.",
    }
    audit = merge(records, texts, fallback="original")
    assert [a["status"] for a in audit] == ["contradicts", "ok"]
    resp = records[0]["responses"]
    assert resp[0]["critique"] == NEG  # fell back to the annotator's reason
    assert resp[1]["critique"] == texts["a#1"]
    assert resp[2]["critique"] is None  # nothing to expand
    kept = [_record("a", [NEG, POS, None])]
    merge(kept, texts, fallback="keep")
    assert kept[0]["responses"][0]["critique"] == texts["a#0"]  # kept, but counted as flagged
    failed = [_record("b", [NEG])]
    assert merge(failed, {"b#0": None}, "keep")[0]["status"] == "failed"
    assert failed[0]["responses"][0]["critique"] == NEG


@pytest.mark.ray
def test_expand_stage_with_junk_expander(ray_session, text_model, tmp_path):
    """A random tiny expander writes junk: every expansion is flagged and falls back."""
    run_dir = str(tmp_path / "run")
    records = [_record(f"r{i}", [NEG, POS if i % 2 else None]) for i in range(3)]
    records.append(_record("r9", [POS], category="nonsense"))
    _write_annotate(run_dir, records)
    spec = ModelSpec(
        name="exp",
        kind="transformers",
        path=text_model,
        n=1,
        temperature=0.0,
        max_tokens=12,
        batch_size=2,
    )
    cfg = ExpandConfig(run_dir=run_dir, expander=spec, fallback="original", chunk_size=2)
    manifest = run(cfg)
    assert manifest["counts"] == {"in": 4, "out": 3, "quarantined": 1}
    counts = manifest["expansion"]
    assert counts["expanded"] == 4  # 3 NEG reasons + 1 POS (r1)
    assert counts["fell_back"] == 4 and counts.get("ok", 0) == 0
    out = {r["query_id"]: r for r in StageDir(run_dir, "expand").read().to_pylist()}
    assert out["r0"]["responses"][0]["critique"] == NEG
    assert out["r1"]["responses"][1]["critique"] == POS
    assert out["r0"]["responses"][1]["critique"] is None
    q = StageDir(run_dir, "expand").read(quarantine=True).to_pylist()
    assert [(x["locator"], x["field"]) for x in q] == [("r9", "category")]


@pytest.mark.ray
def test_critique_generation_actor(ray_session, text_model):
    """The Generator as a plain Ray actor: greedy critiques with CRITIQUE_PROMPT."""
    from actors.generator import Generator

    spec = ModelSpec(
        name="rm", kind="transformers", path=text_model, n=1, max_tokens=8, hf_batch_size=8
    )
    actor = ray_session.remote(num_cpus=1)(Generator).remote(spec)
    reqs = [
        critique_request("What colour?", "Red.", key="0"),
        critique_request("How many?", "Three.", key="1"),
    ]
    critiques = [s[0].text for s in ray_session.get(actor.generate.remote(reqs, True))]
    assert len(critiques) == 2 and all(isinstance(c, str) for c in critiques)
    again = [s[0].text for s in ray_session.get(actor.generate.remote(reqs, True))]
    assert again == critiques  # greedy: deterministic
    sample = ray_session.get(actor.generate.remote([reqs[0]], True))[0][0]
    assert "[LMM Response]: Red.\n[Evaluation]:<|im_end|>\n<|im_start|>assistant\n" in sample.prompt
    assert sample.text == critiques[0]
    # both items decoded in one left-padded batch: the same tokens as alone
    alone = ray_session.get(actor.generate.remote([reqs[1]], True))
    assert alone[0][0].text == critiques[1]
    ray_session.kill(actor)
