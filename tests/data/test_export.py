"""`mmrlhf export`: the pairs with margins and betas as a Hugging Face dataset, in TRL's
format (DPOTrainer takes a step on it) and as the official files (import gives them back)."""

from __future__ import annotations

import json
import math
import os

import pyarrow as pa
import pytest

from jobs import export as job
from jobs import import_release
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.export import margins_of_data_line, pairs_from_hf, pairs_from_trl
from mmrlhf_ray.data.schemas import to_table
from tests.dpo.helpers import make_pairs


def _stage(run_dir, name: str, table: pa.Table) -> None:
    out = StageDir(str(run_dir), name)
    out.begin({"made": "by the test"})
    out.write_part("part-0", table)
    out.finish(table.num_rows, table.num_rows, 0)


def _records(rows: list[dict]) -> list[dict]:
    """One record per query, its responses in rank order (ids as the pairs name them)."""
    texts: dict[str, dict[str, tuple[str, int]]] = {}
    for r in rows:
        seen = texts.setdefault(r["query_id"], {})
        seen[r["chosen_id"]] = (r["chosen"], r["chosen_rank"])
        seen[r["rejected_id"]] = (r["rejected"], r["rejected_rank"])
    first = {r["query_id"]: r for r in rows}
    return [
        {
            "query_id": q,
            "question": first[q]["question"],
            "image": first[q]["image"],
            "category": "short",
            "responses": [
                {"response_id": rid, "model": "m", "text": t, "rank": rank, "helpfulness": 3}
                for rid, (t, rank) in sorted(resp.items(), key=lambda kv: kv[1][1])
            ],
        }
        for q, resp in texts.items()
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run with scored pairs (one image unreadable), train-dpo's betas and records."""
    run = tmp_path_factory.mktemp("export-run")
    rows = make_pairs(n_queries=3, k=3, seed=4)  # 9 pairs, margins = rank gaps
    rows[-1] = {**rows[-1], "image": b"not an image", "query_id": "broken"}
    _stage(run, "score", to_table(rows, "pair"))
    betas = {r["pair_id"]: 0.1 + 0.01 * i for i, r in enumerate(rows[:-1])}
    _stage(run, "train-dpo", pa.table({"pair_id": list(betas), "beta": list(betas.values())}))
    _stage(run, "annotate", to_table(_records(rows[:-1]), "record"))
    manifest = job.run(job.ExportConfig(run_dir=str(run)))
    return run, rows, betas, manifest


def test_export_counts_and_quarantines_the_unreadable_image(exported):
    _, rows, betas, manifest = exported
    assert manifest["counts"] == {"in": 9, "out": 8, "quarantined": 1}
    assert manifest["with_margin"] == 8 and manifest["with_beta"] == 8
    bad = StageDir(os.path.dirname(manifest["outputs"]["hf"])[: -len("/export")], "export")
    assert bad.read(quarantine=True).to_pylist()[0]["locator"] == rows[-1]["pair_id"]


def test_hf_dataset_loads_with_images_margins_and_betas(exported):
    from datasets import load_from_disk

    _, rows, betas, manifest = exported
    dataset = load_from_disk(manifest["outputs"]["hf"])
    assert len(dataset) == 8 and dataset.features["image"].__class__.__name__ == "Image"
    first = dataset[0]
    assert first["image"].size == (64, 64)  # decoded to PIL by the Image feature
    back = {r["pair_id"]: r for r in pairs_from_hf(dataset)}
    for r in rows[:-1]:
        got = back[r["pair_id"]]
        assert (got["chosen"], got["rejected"], got["image"]) == (
            r["chosen"],
            r["rejected"],
            r["image"],
        )
        assert got["margin"] == r["margin"]  # rank gaps: exact in float32
        assert got["beta"] == pytest.approx(betas[r["pair_id"]], rel=1e-7)  # float32


def test_trl_format_round_trips(exported):
    from datasets import load_from_disk

    _, rows, _, manifest = exported
    back = pairs_from_trl(load_from_disk(manifest["outputs"]["trl"]))
    assert [(b["question"], b["images"], b["chosen"], b["rejected"]) for b in back] == [
        (r["question"], [r["image"]], r["chosen"], r["rejected"]) for r in rows[:-1]
    ]


def test_official_files_import_back_with_the_same_pairs_and_margins(exported, tmp_path):
    _, rows, _, manifest = exported
    outputs = manifest["outputs"]
    argv = [
        f"run_dir={tmp_path}",
        f"dpo_pairs_jsonl={outputs['dpo_pairs']}",
        f"data_jsonl={outputs['data']}",
        f"media_root={outputs['media_root']}",
    ]
    assert import_release.main(argv) == 0
    pairs = StageDir(str(tmp_path), "import/pairs").read().to_pylist()

    def key(r):
        with open(r["image_path"], "rb") if r.get("image_path") else open(os.devnull, "rb") as f:
            image = r.get("image") or f.read()
        return (r["query_id"], r["question"], r["chosen"], r["rejected"], r["margin"], image)

    assert sorted(map(key, pairs)) == sorted(map(key, rows[:-1]))
    assert {p["category"] for p in pairs} == {"short"} and {p["margin_source"] for p in pairs} == {
        "release"
    }
    records = StageDir(str(tmp_path), "import/records").read().to_pylist()
    assert len(records) == 3 and all(len(r["responses"]) == 3 for r in records)
    with open(outputs["data"]) as f:
        margins = sorted(m for line in f for m in margins_of_data_line(json.loads(line)))
    assert margins == sorted((r["chosen"], r["rejected"], r["margin"]) for r in rows[:-1])


@pytest.mark.filterwarnings("ignore")
def test_trl_dpo_trainer_takes_a_step_on_the_export(exported, tiny_models, tmp_path):
    """TRL 1.16's DPOTrainer reads the ``trl`` export as it is; at step 0 the policy is its
    own reference, so every pair's loss is log 2."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoProcessor
    from trl import DPOConfig, DPOTrainer

    from mmrlhf_ray.models import load_policy

    torch.manual_seed(0)
    model, _ = load_policy(tiny_models["policy"])
    args = DPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-5,
        bf16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=load_from_disk(exported[3]["outputs"]["trl"]),
        processing_class=AutoProcessor.from_pretrained(tiny_models["policy"]),
    )
    trainer.train()
    assert trainer.state.global_step == 1
    loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    assert loss == pytest.approx(math.log(2), abs=1e-3)
