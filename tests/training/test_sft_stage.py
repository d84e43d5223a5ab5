"""The sft stage end to end on a tiny toy world (real Ray Train + DeepSpeed, 2 workers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrlhf_ray.core.stage import StageDir

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_sft_stage_trains_quarantines_and_is_idempotent(ray_session, tmp_path, capsys):
    from jobs.build_models import main as build_models
    from jobs.sft import main as sft
    from jobs.toyworld import main as toyworld

    run_dir = str(tmp_path / "run")
    assert (
        toyworld([f"run_dir={run_dir}", "pool_size=48", "benchmark_size=10", "rows_per_shard=48"])
        == 0
    )
    assert build_models([f"run_dir={run_dir}", "corpus_size=500"]) == 0
    # one pool row without a reference answer must be quarantined, not dropped
    pool = StageDir(run_dir, "toyworld")
    table = pool.read()
    refs = table.column("reference_answer").to_pylist()
    refs[3] = None
    import pyarrow as pa

    broken = table.set_column(
        table.schema.get_field_index("reference_answer"),
        "reference_answer",
        pa.array(refs, pa.string()),
    )
    for name in pool.part_names():
        (Path(pool.data_dir) / f"{name}.parquet").unlink()
    pool.write_part("pool-00000", broken)

    argv = [
        f"run_dir={run_dir}",
        "max_rows=40",
        "benchmark_size=5",
        "max_new_tokens=8",
        "train.max_steps=6",
        "train.checkpoint_every=3",
        "train.micro_batch_size=4",
        "train.warmup_steps=1",
    ]
    assert sft(argv) == 0
    stage = StageDir(run_dir, "sft")
    manifest = stage.read_manifest()
    counts = manifest["counts"]
    # 48 read = 39 trained + 1 quarantined + 8 unselected (past max_rows)
    assert (counts["in"], counts["out"], counts["quarantined"]) == (48, 39, 1)
    assert counts.get("unselected") == 8
    assert stage.count_rows() == 39 and stage.count_rows(quarantine=True) == 1
    assert stage.read(quarantine=True).column("field").to_pylist() == ["reference_answer"]
    assert manifest["steps"] == 6 and manifest["loss_last"] < manifest["loss_first"]
    assert Path(stage.path("loss.png")).stat().st_size > 1000
    bench = json.loads(Path(stage.path("benchmark.json")).read_text())
    assert bench["random"]["n_total"] == bench["sft"]["n_total"] == 5
    assert (Path(stage.path("policy")) / "model.safetensors").exists()
    assert sft(argv) == 0
    assert "already done" in capsys.readouterr().out
