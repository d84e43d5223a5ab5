"""`mmrlhf train-reward` through Ray Train + DeepSpeed, and `evaluate reward-bench`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.core.stages import get_stage
from mmrlhf_ray.data.media import encode_png, row_images
from mmrlhf_ray.data.schemas import to_table


def write_pairs(run: Path, rows: list[dict]) -> None:
    stage = StageDir(str(run), "pairs")
    stage.begin({"test": len(rows)})
    stage.write_part("part-0", to_table(rows, "pair"))
    stage.finish(len(rows), len(rows), 0)


def official_file(tmp: Path, rows: list[dict]) -> Path:
    """An mm_reward_bench.jsonl (+ images under category folders) from toy pair rows,
    with one malformed line and one line whose image file is missing."""
    lines = []
    for row in rows:
        cat, qid = row["category"], row["query_id"]
        images = row_images(row, max_frames=4)
        if cat == "video":
            rel = f"video/{qid}"
            for i, img in enumerate(images):
                (tmp / rel).mkdir(parents=True, exist_ok=True)
                (tmp / rel / f"{i}.png").write_bytes(encode_png(img))
        else:
            rel = f"{cat}/{qid}.png"
            (tmp / cat).mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(encode_png(images[0]))
        lines.append(
            json.dumps(
                {
                    "id": qid,
                    ("video" if cat == "video" else "image"): rel,
                    "prompt": row["question"],
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                    "chosen_reason": row["chosen_critique"],
                    "rejected_reason": row["rejected_critique"],
                }
            )
        )
    lines.append('{"id": "broken", "prompt": ')
    lines.append(
        json.dumps(
            {
                "id": "q-missing",
                "image": "short/missing.png",
                "prompt": "q",
                "chosen": "a",
                "rejected": "b",
            }
        )
    )
    path = tmp / "mm_reward_bench.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.ray
def test_train_reward_job_then_reward_bench(ray_session, tiny_models, toy_rows, tmp_path):
    from jobs import evaluate_reward_bench, train_reward

    run = tmp_path / "run"
    rows = [dict(r) for r in toy_rows[:24]]
    rows[5]["image"] = b"garbage"  # quarantined, named
    write_pairs(run, rows)
    argv = [
        f"run_dir={run}",
        f"backbone={tiny_models['policy']}",
        "epochs=0",
        "train.max_steps=3",
        "train.checkpoint_every=2",
        "train.micro_batch_size=2",
        "heldout_fraction=0.3",
        "eval_mode=none",
    ]
    assert train_reward.main(argv) == 0
    stage = StageDir(str(run), "train-reward")
    manifest = stage.read_manifest()
    assert manifest["counts"] == {"in": 24, "out": 23, "quarantined": 1}
    assert manifest["steps"] == 3
    assert stage.read(quarantine=True).to_pylist()[0]["field"] == "image"
    split = stage.read().to_pydict()
    assert len(split["pair_id"]) == 23 and set(split["split"]) == {"train", "heldout"}
    model_dir = run / "train-reward" / "model"
    assert (model_dir / "reward_head.safetensors").exists()
    assert (model_dir / "model.safetensors").exists()
    metrics = (run / "train-reward" / "metrics.csv").read_text().strip().splitlines()
    assert len(metrics) == 1 + 3  # header + one row per step
    assert train_reward.main(argv) == 0  # finished: a no-op
    assert stage.read_manifest()["attempts"] == 1

    # an official-format file: ACC / ACC+ per category, the file written back
    bench = official_file(tmp_path / "bench", toy_rows[24:30] + toy_rows[:6])
    out_file = tmp_path / "scored.jsonl"
    assert (
        evaluate_reward_bench.main(
            [
                f"run_dir={run}",
                f"input={bench}",
                f"image_root={bench.parent}",
                "mode=given",
                f"output={out_file}",
            ]
        )
        == 0
    )
    ev = StageDir(str(run), "evaluate/reward-bench").read_manifest()
    # judged at the model's own settings: train-reward's critique length and frames
    assert ev["settings"]["max_new_tokens"] == 40 and ev["settings"]["max_frames"] == 4
    assert ev["settings"]["source"]["max_new_tokens"] == "reward_config.json"
    assert ev["counts"] == {"in": 14, "out": 12, "quarantined": 2}
    assert set(ev["table"]) >= {"overall"} and ev["table"]["overall"]["pairs"] == 12
    scored = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert len(scored) == 12
    assert all(len(s["rewards"]) == 2 and len(s["critic"]) == 2 for s in scored)
    assert scored[0]["critic"][0] == scored[0]["chosen_reason"]  # mode=given
    fields = sorted(
        r["field"]
        for r in StageDir(str(run), "evaluate/reward-bench").read(quarantine=True).to_pylist()
    )
    assert fields == ["image", "line"]

    # the file written back carries rewards: ACC/ACC+ from them alone, no model
    again = tmp_path / "again"
    assert (
        evaluate_reward_bench.main(
            [f"run_dir={again}", f"input={out_file}", "use_existing_rewards=true"]
        )
        == 0
    )
    assert StageDir(str(again), "evaluate/reward-bench").read_manifest()["table"] == ev["table"]

    # what `mmrlhf evaluate` embeds: the run's own held-out pairs, exported + scored
    held = sum(1 for s in split["split"] if s == "heldout")
    stage = get_stage("evaluate-reward-bench")
    result = stage.run(stage.config(["mode=none"], run_dir=str(run)))
    assert result["table"]["overall"]["pairs"] == held
    assert Path(result["output"]).exists()


@pytest.mark.slow
@pytest.mark.ray
def test_train_reward_zero3_saves_a_consolidated_model(
    ray_session, tiny_models, toy_rows, tmp_path
):
    from safetensors.torch import load_file

    from jobs import train_reward
    from mmrlhf_ray.reward.model import load_reward_model, new_reward_model

    run = tmp_path / "run"
    write_pairs(run, [dict(r) for r in toy_rows[:12]])
    argv = [
        f"run_dir={run}",
        f"backbone={tiny_models['policy']}",
        "epochs=0",
        "train.max_steps=2",
        "train.checkpoint_every=2",
        "train.micro_batch_size=2",
        "train.zero_stage=3",
        "heldout_fraction=0.2",
        "eval_mode=given",
    ]
    assert train_reward.main(argv) == 0
    model_dir = run / "train-reward" / "model"
    head = load_file(str(model_dir / "reward_head.safetensors"))
    assert head["dense.weight"].shape == (128, 128)  # gathered, not a ZeRO-3 shard
    fresh = new_reward_model(tiny_models["policy"], seed=0)
    assert not bool((head["out_proj.weight"] == fresh.head.out_proj.weight).all())  # trained
    model = load_reward_model(model_dir)
    assert len(model.score([{"question": "q", "response": "r", "critique": "c"}])) == 1
