"""A user's raw pool (JSON lines + image files on disk) -> `mmrlhf import pool_jsonl=...`
-> `mmrlhf curate input_stage=import/pool`: the GPU profile's path, run small on Ray."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mmrlhf_ray.core.stage import StageDir
from tests.curation.helpers import shapes_pool

pytestmark = pytest.mark.ray


def write_pool_files(root, rows: list[dict]) -> str:
    """The pool as a user brings it: one JSON line per query, media as files."""
    lines = []
    for row in rows:
        line = {
            "id": row["sample_id"],
            "question": row["question"],
            "answer": row.get("reference_answer"),
            "category_hint": row.get("category_hint"),
        }
        if row.get("video_frames"):
            folder = root / "media" / "video" / row["sample_id"]
            folder.mkdir(parents=True)
            for i, frame in enumerate(row["video_frames"]):
                (folder / f"{i:03d}.png").write_bytes(frame)
            line["video"] = f"video/{row['sample_id']}"
        else:
            (root / "media" / "img").mkdir(parents=True, exist_ok=True)
            (root / "media" / "img" / f"{row['sample_id']}.png").write_bytes(row["image"])
            line["image"] = f"img/{row['sample_id']}.png"
        lines.append(json.dumps(line))
    lines.append('{"id": "broken", "question": "no media"}')
    path = root / "pool.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_curate_reads_an_imported_pool(ray_session, tmp_path):
    from jobs.curate import main as curate
    from jobs.import_release import main as import_release

    rows = shapes_pool(240, seed=3)
    pool = write_pool_files(tmp_path, rows)
    run = tmp_path / "run"
    args = [
        f"run_dir={run}",
        f"pool_jsonl={pool}",
        f"media_root={tmp_path / 'media'}",
        "rows_per_part=100",
    ]
    assert import_release(args) == 0
    imported = StageDir(str(run), "import/pool")
    assert imported.read_manifest()["counts"] == {"in": 241, "out": 240, "quarantined": 1}
    assert imported.read(quarantine=True).column("field").to_pylist() == ["image"]

    assert (
        curate(
            [
                f"run_dir={run}",
                "input_stage=import/pool",
                "image_size=60",
                "safety_count=6",
                "video_count=6",
                "cluster.k=4",
                "cluster.sample_size=200",
                "embed.batch_size=40",
                "map_points=100",
            ]
        )
        == 0
    )
    manifest = StageDir(str(run), "curate").read_manifest()
    counts = manifest["counts"]
    assert counts["in"] == 240 == counts["out"] + counts["quarantined"] + counts["unselected"]
    picked = StageDir(str(run), "curate").read().to_pylist()
    assert len(picked) == counts["out"] == 60 + 6 + 6
    assert Counter(r["category"] for r in picked) == {
        "long": 24,
        "short": 30,
        "mcq": 6,
        "safety": 6,
        "video": 6,
    }
    assert all(r["image_path"] or r["video_path"] for r in picked)
