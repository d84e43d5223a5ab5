"""The annotate stage on a small generated table from the shapes world (real oracle)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mmrlhf_ray.annotate.records import group_generated
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.release import record_to_data_line
from mmrlhf_ray.data.schemas import POOL_SCHEMA
from mmrlhf_ray.generation.config import ModelSpec
from mmrlhf_ray.generation.requests import GENERATE_SCHEMA, Sample, generation_rows
from mmrlhf_ray.toyworld.queries import make_row
from mmrlhf_ray.toyworld.responses import simulated_responses

MODELS = ("sim-strong", "sim-weak")
N_QUERIES, N_SAMPLES = 6, 2


def _pool(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        row = make_row("pool", 0, i, category="video" if i == 0 else None, size=32, frames=2)
        row["category"] = json.loads(row["ground_truth"])["category"]
        rows.append(row)
    return rows


def _generated(pool: list[dict]) -> list[dict]:
    out = []
    for row in pool:
        for model in MODELS:
            spec = ModelSpec(name=model, kind="simulated", n=N_SAMPLES)
            texts = simulated_responses(row, model, n=N_SAMPLES, seed=0)
            samples = [Sample(text=t, token_ids=[0] * 3, finish_reason="stop") for t in texts]
            out.extend(generation_rows(row, spec, "simulated", samples))
    return out


def _stage(run: str, name: str, table: pa.Table, config: dict) -> None:
    sd = StageDir(run, name)
    sd.begin(config)
    sd.write_part("part-00000", table)
    sd.finish(table.num_rows, table.num_rows, 0)


@pytest.fixture()
def run(tmp_path):
    """A run with finished `curate` (pool rows with pixels) and `generate` stages.

    The generated table has 6 x 2 models x 2 samples = 24 good rows, plus one empty
    generation and 2 rows of a query whose ground truth is broken: 27 rows.
    """
    run = str(tmp_path / "run")
    pool = _pool(N_QUERIES)
    schema = POOL_SCHEMA.append(pa.field("category", pa.string()))
    _stage(run, "curate", pa.Table.from_pylist(pool, schema=schema), {"curate": 1})
    rows = _generated(pool)
    rows.append(dict(rows[0], response_id="empty", sample_index=9, text="", is_empty=True))
    broken = dict(pool[1], sample_id="broken", ground_truth="{not json")
    rows += [
        dict(r, response_id=f"broken/{i}", sample_id="broken", ground_truth=broken["ground_truth"])
        for i, r in enumerate(_generated([pool[1]])[:2])
    ]
    _stage(
        run,
        "generate",
        pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA),
        {"input_stage": "curate"},
    )
    return run


def test_group_generated_orders_and_flags():
    rows = [
        {"sample_id": "a", "question": "q", "model": "m2", "sample_index": 0, "text": "x"},
        {"sample_id": "a", "question": "q", "model": "m1", "sample_index": 1, "text": "y"},
        {"sample_id": "a", "question": "q", "model": "m1", "sample_index": 0, "text": " "},
        {"sample_id": None, "question": "q", "model": "m1", "sample_index": 0, "text": "z"},
    ]
    groups, problems = group_generated(rows)
    assert [r["text"] for r in groups["a"].responses] == ["y", "x"]
    assert [p["field"] for p in problems] == ["text", "sample_id"]
    assert "row 2" in problems[0]["locator"]


def test_annotate_oracle_counts_media_resume(run, capsys):
    from jobs.annotate import main

    args = [f"run_dir={run}", "queries_per_part=3", "export_tasks=true"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "27 generated rows = 24 annotated + 3 quarantined; 6 records" in out
    ann = StageDir(run, "annotate")
    assert ann.read_manifest()["counts"] == {"in": 27, "out": 24, "quarantined": 3}
    quarantine = ann.read(quarantine=True).to_pylist()
    assert sorted(q["field"] for q in quarantine) == ["ground_truth", "ground_truth", "text"]
    records = ann.read().to_pylist()
    assert len(records) == 6 and len(ann.part_names()) == 3  # 7 queries incl. broken: 3 + 3 + 1
    for rec in records:
        originals = [r for r in rec["responses"] if not r["constructed"]]
        assert len(originals) == len(MODELS) * N_SAMPLES
        totals = {
            r["rank"]: r["helpfulness"] + r["faithfulness"] + r["ethics"] for r in rec["responses"]
        }
        ranks = sorted(totals)
        assert ranks == list(range(1, len(ranks) + 1))  # dense ranking
        assert all(totals[a] > totals[b] for a, b in zip(ranks, ranks[1:], strict=False))
        assert rec["image"] is not None or len(rec["video_frames"]) == 2  # media joined
    video = next(r for r in records if r["category"] == "video")
    assert video["video_frames"] and video["image"] is None
    tasks = ann.fs.open_input_stream(ann.path("tasks.jsonl")).read().decode().splitlines()
    assert len(tasks) == 7 and json.loads(tasks[0])["final_ranking"] is None
    # finished: does nothing; crashed after part 0: redoes only part 1
    assert main(args) == 0 and "already done" in capsys.readouterr().out
    ann.fs.delete_file(f"{ann.data_dir}/part-00001.parquet")
    ann.write_manifest(dict(ann.read_manifest(), status="running"))
    assert main(args) == 0
    assert "27 generated rows = 24 annotated + 3 quarantined" in capsys.readouterr().out
    assert ann.read().to_pylist() == records


def test_annotate_human_labels_in_official_format(run, tmp_path, capsys):
    from jobs.annotate import main

    assert main([f"run_dir={run}"]) == 0
    oracle_records = StageDir(run, "annotate").read().to_pylist()
    lines = [json.dumps(record_to_data_line(r)) for r in oracle_records]
    lines.append(json.dumps(dict(json.loads(lines[0]), id="bad", final_ranking=[1])))
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(lines) + "\n")
    assert main([f"run_dir={run}", "source=human", f"labels_jsonl={labels}"]) == 0
    assert "7 label lines = 6 annotated + 1 quarantined" in capsys.readouterr().out
    assert any(r["constructed"] for rec in oracle_records for r in rec["responses"])
    human = StageDir(run, "annotate").read().to_pylist()
    by_id = {r["query_id"]: r for r in oracle_records}
    for rec in human:
        want = by_id[rec["query_id"]]
        for key in ("rank", "model", "constructed", "helpfulness", "score_reason"):
            assert [r[key] for r in rec["responses"]] == [r[key] for r in want["responses"]]
        assert rec["image"] == want["image"] and rec["ground_truth"] == want["ground_truth"]


def test_pairs_from_annotated_records(run, capsys):
    from jobs.annotate import main as annotate
    from jobs.pairs import main as pairs

    assert annotate([f"run_dir={run}"]) == 0
    records = StageDir(run, "annotate").read().to_pylist()
    # hand count: pairs of responses with differing rank, over all records
    expected = sum(
        1
        for rec in records
        for i, a in enumerate(rec["responses"])
        for b in rec["responses"][i + 1 :]
        if a["rank"] != b["rank"]
    )
    assert pairs([f"run_dir={run}", "margin=oracle"]) == 0
    table = StageDir(run, "pairs").read().to_pylist()
    assert len(table) == expected > 0
    assert all(p["chosen_rank"] < p["rejected_rank"] and p["margin"] > 0 for p in table)
    assert all(p["chosen_reason"] for p in table)
