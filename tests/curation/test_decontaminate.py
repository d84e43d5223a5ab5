"""Decontamination of the curation pool against evaluation sets (issue 23, item 4).

Pure parts against brute force and hand-made cases; then `mmrlhf curate` itself (no Ray:
every shard is embedded beforehand, so the job goes straight to screening, clustering
and sampling) on a clean shapes-world pool with planted contaminants: an exact copy, a
resized and re-encoded copy, a near-duplicate embedding and a reworded question sharing
a 13-gram. Each is found by exactly its signals and no other pool row is.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.curation.decontaminate import (
    ClipScreen,
    DecontaminateConfig,
    EvalItem,
    Matches,
    build_reference,
    hamming_matches,
    ngram_keys,
    perceptual_hash,
    screen_questions,
)
from tests.curation.helpers import shapes_pool, write_pool_stage

REPO = Path(__file__).resolve().parents[2]
LONG_Q = (
    "Please look at the picture very carefully and then tell me which colour the large "
    "circle in the upper left corner has"
)
REWORDED_Q = (
    "Hey! Look at the picture very carefully and then tell me which colour the LARGE "
    "circle in the upper-left corner has, thanks."
)


def test_hamming_matches_equal_brute_force():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 2**63, 40, dtype=np.int64).view(np.uint64) * np.uint64(2) + np.uint64(1)
    pool = rng.integers(0, 2**63, 3000, dtype=np.int64).view(np.uint64)
    for j, flips in enumerate(range(8)):  # copies of ref j with 0..7 bits flipped
        bits = rng.choice(64, flips, replace=False)
        pool[100 * j] = ref[j] ^ np.uint64(sum(1 << int(b) for b in bits))
    p, r, d = hamming_matches(pool, ref, 4)
    dist = np.bitwise_count(pool[:, None] ^ ref[None, :])
    want = set(zip(*np.nonzero(dist <= 4), strict=True))
    got = set(zip(p.tolist(), r.tolist(), strict=True))
    assert got == {(int(a), int(b)) for a, b in want}
    assert {(0, 0), (100, 1), (200, 2), (300, 3), (400, 4)} <= got  # 0-4 flips found
    assert d.tolist() == [int(dist[a, b]) for a, b in zip(p, r, strict=True)]


def test_ngrams_are_normalised_and_need_a_whole_13_gram():
    assert ngram_keys(LONG_Q, 13) & ngram_keys(REWORDED_Q, 13)  # shares 13+ tokens
    twelve = " ".join(LONG_Q.split()[:12]) + " zebra"  # 12 shared tokens, then it differs
    assert not ngram_keys(twelve, 13) & ngram_keys(LONG_Q, 13)
    assert ngram_keys("What color is the triangle?", 13) == set()  # under 13 tokens
    # the vectorised screen the stage runs finds the same, and only that
    cfg = DecontaminateConfig()
    ref = build_reference([EvalItem("s", "e0", REWORDED_Q)], cfg, embed=None)
    out = Matches()
    questions = ["What color is the triangle?", twelve, None, LONG_Q, LONG_Q.upper() + "!!"]
    screen_questions(100, questions, ref, cfg, out)
    assert out.flat() == [(103, 0, "ngram", 1.0), (104, 0, "ngram", 1.0)]


def test_ivf_probed_clip_search_equals_exhaustive_on_clustered_vectors():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 16)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pool = centres[rng.integers(0, 8, 2000)] + 0.3 * rng.standard_normal((2000, 16))
    pool = (pool / np.linalg.norm(pool, axis=1, keepdims=True)).astype(np.float32)
    evals = pool[[5, 50, 500]] + 0.01 * rng.standard_normal((3, 16)).astype(np.float32)
    ref = build_reference([], DecontaminateConfig(), embed=None)
    ref.vectors, ref.vector_items = evals.astype(np.float32), np.array([0, 1, 2])
    labels = np.argmax(pool @ centres.T, axis=1)
    found = {}
    for probes in (0, 2):
        screen = ClipScreen(ref, 0.95, center=False, probes=probes)
        screen.prepare(pool, centres)
        for s in range(0, 2000, 512):  # chunks, as the assignment hands them out
            screen.visit(s, pool[s : s + 512], labels[s : s + 512])
        out = Matches()
        screen.add_to(out)
        found[probes] = {(r, i) for r, i, _, _ in out.flat()}
    assert found[0] == found[2] and {(5, 0), (50, 1), (500, 2)} <= found[0]


def test_reference_of_text_only_items_has_no_vectors():
    cfg = DecontaminateConfig()
    ref = build_reference([EvalItem("s", "a", LONG_Q)], cfg, embed=None)
    assert (
        ref.vectors.shape[0] == 0 and len(ref.phashes) == 0 and len(ref.gram_hashes) == 22 - 13 + 1
    )


# ---- the stage ---------------------------------------------------------------------
def _image(row: dict) -> Image.Image:
    data = row["image"] if row.get("image") is not None else row["video_frames"][0]
    return Image.open(io.BytesIO(data)).convert("RGB")


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90)
    return buf.getvalue()


def _far(rows: list[dict], images: list[Image.Image], bits: int = 10) -> list[dict]:
    """The rows whose image is more than ``bits`` from every one of ``images`` (pHash)."""
    ref = np.array([perceptual_hash(im) for im in images], np.int64).view(np.uint64)
    keep = []
    for r in rows:
        h = np.array([perceptual_hash(_image(r))], np.int64).view(np.uint64)
        if np.bitwise_count(h ^ ref).min() > bits:
            keep.append(r)
    return keep


def _embed_everything(run_dir: Path, overrides: list[str]) -> None:
    """Embed every pool shard (what the Ray actors would write) and mark them current."""
    from mmrlhf_ray.core.config import load_config
    from mmrlhf_ray.curation.config import CurateConfig
    from mmrlhf_ray.curation.embed import embed_rows
    from mmrlhf_ray.curation.pipeline import ShardCollector, embedding_fingerprint, reset_if_stale
    from mmrlhf_ray.models.clip import load_clip

    cfg = load_config(CurateConfig, REPO / "configs" / "curate.yaml", overrides)
    src, out = StageDir(str(run_dir), "toyworld"), StageDir(str(run_dir), "curate")
    reset_if_stale(out, embedding_fingerprint(cfg.embed, cfg.long_threshold, src.fingerprint()))
    model, preprocess = load_clip(seed=0)
    for shard in src.part_names():
        rows = pq.read_table(src.path("data", f"{shard}.parquet")).to_pylist()
        collector = ShardCollector(out, {shard: len(rows)})
        collector.add(pa.table(embed_rows(rows, model, preprocess, shard=shard)))
        assert collector.written == [shard]


def _plant_embedding(run_dir: Path, sample_id: str, image: Image.Image) -> None:
    """Overwrite one pool row's stored vector with ``image``'s embedding + a little noise."""
    import torch

    from mmrlhf_ray.curation.embeddings import embeddings_table, write_embeddings
    from mmrlhf_ray.models.clip import embed_images, load_clip

    model, preprocess = load_clip(seed=0)
    vec = embed_images(model, torch.stack([preprocess(image)]))[0]
    vec = vec + np.random.default_rng(1).normal(0, 1e-5, vec.shape).astype(np.float32)
    for path in Path(run_dir, "curate", "embeddings").glob("*.parquet"):
        t = pq.read_table(path).to_pydict()
        if sample_id in t["sample_id"]:
            vecs = np.frombuffer(b"".join(t["embedding"]), np.float16).reshape(
                len(t["embedding"]), -1
            )
            vecs = vecs.astype(np.float32)
            vecs[t["sample_id"].index(sample_id)] = vec / np.linalg.norm(vec)
            table = embeddings_table(
                t["sample_id"], t["category"], vecs, t["image_hash"], t["phash"]
            )
            write_embeddings(table, str(path))
            return
    raise AssertionError(f"{sample_id} not embedded")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("decontam")
    media = run_dir / "eval-media"
    media.mkdir()
    fresh = [r for r in shapes_pool(40, seed=7) if r.get("image") is not None][:2]
    raw = [r for r in shapes_pool(160, seed=0) if r.get("image") is not None]
    bench_src, copy_src, resize_src = raw[0], raw[1], raw[2]
    planted_imgs = [_image(r) for r in (bench_src, copy_src, resize_src, *fresh)]
    pool = [bench_src, copy_src, resize_src] + _far(raw[3:], planted_imgs)
    clip_row, ngram_row = pool[3], pool[4]  # far from every evaluation image
    ngram_row["question"] = LONG_Q
    resized = Image.open(io.BytesIO(_png(_image(resize_src).resize((96, 96)), "JPEG")))
    items = [
        ("copy", _image(copy_src), "Is this a copy?"),
        ("resized", resized.convert("RGB"), "Is this resized?"),
        ("near-embedding", _image(fresh[0]), "What is it?"),
        ("reworded", _image(fresh[1]), REWORDED_Q),
    ]
    lines = []
    for name, img, question in items:
        (media / f"{name}.png").write_bytes(_png(img))
        lines.append({"qid": name, "text": question, "img": f"{name}.png"})
    (run_dir / "evalset.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    write_pool_stage(str(run_dir), pool, rows_per_shard=40)
    bench = StageDir(str(run_dir), "toyworld/benchmark")
    bench.begin({"test": True})
    from mmrlhf_ray.data.schemas import to_table

    bench.write_part("bench-00000", to_table([dict(bench_src, sample_id="bench-0")], "pool"))
    bench.finish(1, 1, 0)
    overrides = [
        f"run_dir={run_dir}",
        "image_size=20",
        "safety_count=5",
        "video_count=5",
        "cluster.k=4",
        f"cluster.sample_size={len(pool)}",
        "decontaminate.clip_center=true",
        "decontaminate.clip_threshold=0.999",
        "decontaminate.sets=[{name: planted, path: "
        f"{run_dir / 'evalset.jsonl'}, format: jsonl, image_root: {media}, id_field: qid, "
        "question_field: text, image_field: img}]",
    ]
    _embed_everything(run_dir, overrides)
    _plant_embedding(run_dir, clip_row["sample_id"], _image(fresh[0]))
    ids = {
        "bench": bench_src["sample_id"],
        "copy": copy_src["sample_id"],
        "resized": resize_src["sample_id"],
        "clip": clip_row["sample_id"],
        "ngram": ngram_row["sample_id"],
    }
    return {"run_dir": run_dir, "overrides": overrides, "ids": ids, "n": len(pool)}


def _signals(run_dir: Path) -> dict[tuple[str, str], set[str]]:
    text = (run_dir / "curate" / "report" / "decontamination.csv").read_text().splitlines()
    got: dict[tuple[str, str], set[str]] = {}
    for line in text[1:]:
        sample_id, eval_set, _eval_id, signal, _score = line.split(",")
        got.setdefault((eval_set, sample_id), set()).add(signal)
    return got


def test_planted_contaminants_found_exactly_and_dropped(planted):
    from jobs.curate import main

    run_dir, ids = planted["run_dir"], planted["ids"]
    assert main(planted["overrides"] + ["decontaminate.mode=drop"]) == 0
    image = {"exact", "phash", "clip"}  # a pixel copy: same hash, pHash 0, cosine ~1
    assert _signals(run_dir) == {
        ("shapes-benchmark", ids["bench"]): image,
        ("planted", ids["copy"]): image,
        ("planted", ids["resized"]): {"phash"},
        ("planted", ids["clip"]): {"clip"},
        ("planted", ids["ngram"]): {"ngram"},
    }
    out = StageDir(str(run_dir), "curate")
    manifest = out.read_manifest()
    sets = manifest["decontamination"]["sets"]
    assert sets["planted"]["pool_ids"] == sorted(
        [ids["copy"], ids["resized"], ids["clip"], ids["ngram"]]
    )
    assert sets["planted"]["eval_ids"] == ["copy", "near-embedding", "resized", "reworded"]
    assert sets["planted"]["by_signal"] == {"exact": 1, "phash": 2, "clip": 2, "ngram": 1}
    assert sets["shapes-benchmark"]["pool_ids"] == [ids["bench"]]
    assert manifest["decontamination"]["rows_removed"] == 5
    counts = manifest["counts"]
    assert (
        counts["in"] == planted["n"] == counts["out"] + counts["unselected"] + counts["quarantined"]
    )
    removed = {q["locator"] for q in out.read(quarantine=True).to_pylist()}
    assert removed == set(ids.values())
    assert not removed & set(out.read().column("sample_id").to_pylist())


def test_report_mode_keeps_rows_and_counts_selected_matches(planted):
    from jobs.curate import main

    run_dir = planted["run_dir"]
    assert main(planted["overrides"] + ["decontaminate.mode=report"]) == 0
    out = StageDir(str(run_dir), "curate")
    manifest = out.read_manifest()
    assert manifest["decontamination"]["rows_removed"] == 0
    assert manifest["counts"]["quarantined"] == 0  # the earlier drop's rows are not kept
    selected = set(out.read().column("sample_id").to_pylist())
    for entry in manifest["decontamination"]["sets"].values():
        assert entry["selected_matched"] == len(selected & set(entry["pool_ids"]))
    assert len(_signals(run_dir)) == 5
    md = (run_dir / "curate" / "report" / "decontamination.md").read_text()
    assert "| planted | 4 | 4 | 1 | 2 | 2 | 1 |" in md
