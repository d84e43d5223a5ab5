"""`mmrlhf curate` end to end on a shapes-world pool, on a real local Ray (Ray Data actors).

One run (module fixture) curates 800 rows in 4 shards. Shard 0 was embedded before (as
if by an earlier, interrupted run), so the job embeds only shards 1-3, with 2 embedding
actors, one of which is killed on its first batch; the tests check what the stage wrote.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.curation.categorize import CATEGORY_CODES
from mmrlhf_ray.curation.pipeline import EMBEDDINGS_DIR
from tests.curation.helpers import inject_bad_rows, shapes_pool, write_pool_stage

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]
N, K = 800, 8
WANT = {"long": 80, "short": 100, "mcq": 20, "safety": 20, "video": 20}  # 4:5:1 of 200


def overrides(run_dir: Path, seed: int = 0) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"seed={seed}",
        "image_size=200",
        "safety_count=20",
        "video_count=20",
        f"cluster.k={K}",
        "cluster.sample_size=400",
        "embed.batch_size=50",
        "embed.max_pixels=40000",
        "map_points=500",
    ]


@pytest.fixture(scope="module")
def curated(ray_session, tmp_path_factory):
    from jobs.curate import main

    run_dir = tmp_path_factory.mktemp("curate_run")
    rows = shapes_pool(N, seed=0)
    bad = inject_bad_rows(rows)
    write_pool_stage(str(run_dir), rows, rows_per_shard=200)
    out = StageDir(str(run_dir), "curate")
    embed_shard_locally(run_dir, out, "pool-00000", rows[:200])
    marker = run_dir / "kill-one-actor"
    marker.write_text("the first actor to see a batch exits once")
    assert main(overrides(run_dir) + [f"embed.fail_marker={marker}"]) == 0
    return {"run_dir": run_dir, "rows": rows, "bad": bad, "marker": marker, "out": out}


def embed_shard_locally(run_dir: Path, out: StageDir, shard: str, rows: list[dict]) -> None:
    """What an earlier run left behind: one shard's embeddings + quarantine parts."""
    import pyarrow as pa

    from mmrlhf_ray.core.config import load_config
    from mmrlhf_ray.curation.config import CurateConfig
    from mmrlhf_ray.curation.embed import embed_rows
    from mmrlhf_ray.curation.pipeline import (
        ShardCollector,
        embedding_fingerprint,
        reset_if_stale,
    )
    from mmrlhf_ray.models.clip import load_clip

    cfg = load_config(CurateConfig, REPO / "configs" / "curate.yaml", overrides(run_dir))
    src = StageDir(str(run_dir), "toyworld")
    reset_if_stale(out, embedding_fingerprint(cfg.embed, cfg.long_threshold, src.fingerprint()))

    model, preprocess = load_clip(seed=0)
    cols = embed_rows(rows, model, preprocess, max_pixels=40000, shard=shard)
    collector = ShardCollector(out, {shard: len(rows)})
    collector.add(pa.table(cols))
    assert collector.written == [shard]


def embeddings(out: StageDir):
    return pq.read_table(out.path(EMBEDDINGS_DIR)).to_pydict()


def test_counts_add_up_and_bad_rows_are_quarantined(curated):
    out, bad = curated["out"], curated["bad"]
    manifest = out.read_manifest()
    counts = manifest["counts"]
    assert counts["in"] == N
    assert counts["in"] == counts["out"] + counts.get("unselected", 0) + counts["quarantined"]
    quarantine = out.read(quarantine=True).to_pylist()
    assert {q["locator"]: q["field"] for q in quarantine} == bad
    assert counts["quarantined"] == len(bad) == 6
    assert all(q["reason"] for q in quarantine)
    assert all(q["locator"] in q["raw"] and "bytes>" in q["raw"] for q in quarantine)
    huge = next(q for q in quarantine if "exceeds" in q["reason"])
    assert huge["field"] == "image" and "300x300" in huge["reason"]


def test_killed_actor_is_retried_with_exactly_once_output(curated):
    assert not curated["marker"].exists()  # an actor really took it and exited
    assert curated["out"].read_manifest()["shards_embedded"] == 3  # shard 0 was done
    ids = embeddings(curated["out"])["sample_id"]
    good = {r["sample_id"] for r in curated["rows"]} - set(curated["bad"])
    assert len(ids) == len(set(ids)) == len(good) and set(ids) == good
    assert sorted(p.stem for p in Path(curated["out"].path(EMBEDDINGS_DIR)).glob("*.parquet")) == [
        f"pool-{i:05d}" for i in range(4)
    ]


def test_selection_meets_the_ratio_exactly(curated):
    selected = curated["out"].read()
    got = Counter(selected.column("category").to_pylist())
    assert dict(got) == WANT  # 4:5:1 of 200 image queries, within 0 rows; fixed domains
    truth = {r["sample_id"]: json.loads(r["ground_truth"])["category"] for r in curated["rows"]}
    ids, cats = selected.column("sample_id").to_pylist(), selected.column("category").to_pylist()
    assert all(truth[s] == c for s, c in zip(ids, cats, strict=True))
    pool_cols = set(curated["rows"][0]) | {"cluster_id", "category"}
    assert pool_cols <= set(selected.column_names)
    assert (
        selected.column("image").null_count + selected.column("video_frames").null_count
        == selected.num_rows
    )  # each row has its media


def test_uniform_across_clusters_within_each_category(curated):
    out = curated["out"]
    centres = np.load(out.path("centroids.npy"))
    emb = embeddings(out)
    vecs = np.frombuffer(b"".join(emb["embedding"]), np.float16).reshape(len(emb["sample_id"]), -1)
    cluster_of = dict(
        zip(emb["sample_id"], np.argmax(vecs.astype(np.float32) @ centres.T, 1), strict=True)
    )
    category_of = dict(zip(emb["sample_id"], emb["category"], strict=True))
    selected = out.read(columns=["sample_id", "cluster_id"]).to_pylist()
    assert all(cluster_of[r["sample_id"]] == r["cluster_id"] for r in selected)
    chosen = {r["sample_id"] for r in selected}
    for cat in CATEGORY_CODES:
        ids = [s for s, c in category_of.items() if c == cat]
        avail = np.bincount([cluster_of[s] for s in ids], minlength=K)
        taken = np.bincount([cluster_of[s] for s in ids if s in chosen], minlength=K)
        open_ = taken < avail  # clusters that still had rows left
        assert open_.any(), cat
        assert taken[open_].max() - taken[open_].min() <= 1, (cat, taken, avail)
        assert (taken[~open_] <= taken[open_].max()).all(), (cat, taken, avail)


def test_report_has_table_1_and_a_cluster_map(curated):
    out = curated["out"]
    table = Path(out.path("report", "composition.md")).read_text()
    assert "| Image Long | 82 |" in table or "| Image Long |" in table
    rows = {
        r.split(",")[0]: r.split(",")
        for r in Path(out.path("report", "composition.csv")).read_text().splitlines()[1:]
    }
    assert int(rows["Image MCQ"][3]) == 20 and int(rows["Total"][3]) == 240
    assert int(rows["Total"][1]) == N - 6 and int(rows["Quarantined"][1]) == 6
    with Image.open(out.path("report", "cluster_map.png")) as img:
        assert img.size[0] > 300 and img.format == "PNG"
    assert out.read_manifest()["map_method"] in ("PCA", "UMAP")


def test_rerun_is_idempotent(curated, capsys):
    from jobs.curate import main

    run_dir, out = curated["run_dir"], curated["out"]
    before = sorted(out.read(columns=["sample_id"]).column("sample_id").to_pylist())
    assert main(overrides(run_dir)) == 0  # a different config (no marker): runs again
    assert out.read_manifest()["shards_embedded"] == 0  # every shard already embedded
    assert sorted(out.read(columns=["sample_id"]).column("sample_id").to_pylist()) == before
    capsys.readouterr()
    assert main(overrides(run_dir)) == 0
    assert "already done" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_after_a_lost_shard_embeds_only_that_shard(curated):
    from jobs.curate import main

    run_dir, out = curated["run_dir"], curated["out"]
    before = sorted(out.read(columns=["sample_id"]).column("sample_id").to_pylist())
    Path(out.path(EMBEDDINGS_DIR, "pool-00002.parquet")).unlink()
    manifest = out.read_manifest()
    manifest["status"] = "running"  # as if the process died
    out.write_manifest(manifest)
    assert main(overrides(run_dir)) == 0
    assert out.read_manifest()["shards_embedded"] == 1
    assert sorted(out.read(columns=["sample_id"]).column("sample_id").to_pylist()) == before
    assert out.read_manifest()["counts"]["quarantined"] == 6


def test_another_seed_selects_other_rows_with_the_same_mix(curated):
    from jobs.curate import main

    run_dir, out = curated["run_dir"], curated["out"]
    before = set(out.read(columns=["sample_id"]).column("sample_id").to_pylist())
    assert main(overrides(run_dir, seed=1)) == 0
    after = out.read(columns=["sample_id", "category"])
    assert set(after.column("sample_id").to_pylist()) != before
    assert dict(Counter(after.column("category").to_pylist())) == WANT
