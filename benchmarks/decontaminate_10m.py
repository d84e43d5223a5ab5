"""Decontamination's cost beside the rest of curation, at pool scale (issue 23, item 4).

Writes a synthetic pool as the curate stage has it after embedding: embeddings parts
(sample_id, category, image_hash, phash, 512-d float16 vectors; the layout of
``benchmarks/curate_10m.py`` plus the two hashes) and pool parts with the questions
(a quarter of them long enough to hold 13-grams). An evaluation reference of
``--eval`` items (vectors from the same latent directions, hashes, questions) is
screened against it. Each measurement runs in a fresh child process with the page cache
of our own files evicted (cold), alternating:

* ``base``: ``cluster_and_select`` (k-means on a sample, streamed assignment, 4:5:1
  sampling), i.e. what ``mmrlhf curate`` does after embedding;
* ``decon``: the same plus decontamination (``PoolScreen.screen_parts``: exact hashes,
  pHash bands, 13-grams over the pool questions; CLIP cosine inside the assignment pass).

It also times the per-image cost the embedder pays for the perceptual hash (decoded
64 px and 512 px images). Writes its figures to docs/BENCHMARKS.md ("## Curation").

    nice -n 10 .venv/bin/python -m benchmarks.decontaminate_10m --rows 2000000 --eval 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.curate_10m import evict
from mmrlhf_ray.curation.embeddings import embeddings_table, write_embeddings

ROOT = Path(__file__).resolve().parents[1]

MIX = {"long": 0.11, "short": 0.77, "mcq": 0.04, "safety": 0.04, "video": 0.04}
WORDS = np.array(
    "what which where how many colour shape image picture left right top bottom large small "
    "circle square triangle star object person car tree sky describe detail scene red blue "
    "green yellow near behind above below count visible text sign written main".split()
)


def _questions(rng: np.random.Generator, n: int) -> list[str]:
    """Three quarters short templated questions, one quarter 20-40 random words."""
    short = ["What colour is the square?", "How many shapes are there?", "Describe the image."]
    out = [short[i % 3] for i in range(n)]
    for i in np.nonzero(rng.random(n) < 0.25)[0]:
        out[i] = " ".join(WORDS[rng.integers(0, len(WORDS), rng.integers(20, 41))])
    return out


def generate(out: Path, rows: int, dim: int, parts: int, seed: int) -> np.ndarray:
    """Embeddings parts + pool parts; returns the 200 latent directions (for the eval side)."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((200, dim), dtype=np.float32)
    bank = rng.standard_normal((1 << 17, dim), dtype=np.float32) * 0.5
    names, probs = np.array(list(MIX), dtype=object), np.array(list(MIX.values()))
    (out / "emb").mkdir(parents=True, exist_ok=True)
    (out / "pool").mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(np.diff(np.linspace(0, rows, parts + 1).astype(np.int64))):
        emb, pool = out / "emb" / f"part-{i:05d}.parquet", out / "pool" / f"part-{i:05d}.parquet"
        if not emb.exists():
            x = latent[rng.integers(0, len(latent), n)]
            x += bank[rng.integers(0, len(bank), n)] * rng.uniform(0.5, 1.5)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            ids = [f"syn-{j:09d}" for j in range(start, start + n)]
            hashes = [os.urandom(20).hex() for _ in range(n)]
            phash = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64).tolist()
            cats = names[rng.choice(len(names), n, p=probs)].tolist()
            write_embeddings(embeddings_table(ids, cats, x, hashes, phash), str(emb))
            table = pa.table({"sample_id": ids, "question": _questions(rng, n)})
            pq.write_table(table, str(pool))
        start += n
        print(f"\rgenerate: part {i + 1}/{parts}", end="", flush=True)
    print()
    return latent


def reference(args: argparse.Namespace):
    """``--eval`` synthetic evaluation items as a Reference (no images needed)."""
    from mmrlhf_ray.curation.decontaminate import (
        DecontaminateConfig,
        EvalItem,
        Reference,
        ngram_keys,
        set_question_index,
    )

    rng = np.random.default_rng(99)
    latent = np.load(Path(args.dir) / "latent.npy")
    v = latent[rng.integers(0, len(latent), args.eval)]
    v += rng.standard_normal(v.shape).astype(np.float32) * 0.5
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    items = [EvalItem("eval", f"e{i}", q) for i, q in enumerate(_questions(rng, args.eval))]
    cfg = DecontaminateConfig(mode="drop")
    ngrams: dict[int, int] = {}
    for i, it in enumerate(items):
        for key in ngram_keys(it.question, cfg.ngram):
            ngrams.setdefault(key, i)
    idx = np.arange(args.eval)
    digests = {os.urandom(20).hex(): i for i in range(args.eval)}
    phash = rng.integers(-(2**63), 2**63 - 1, args.eval, dtype=np.int64).view(np.uint64)
    ref = Reference(items, digests, phash, idx, v.astype(np.float32), idx, ngrams)
    set_question_index(ref, cfg.ngram)
    return cfg, ref


def child(args: argparse.Namespace) -> None:
    import faiss  # noqa: F401  (fixed costs first)
    import torch  # noqa: F401

    from mmrlhf_ray.curation.config import ClusterConfig
    from mmrlhf_ray.curation.pipeline import cluster_and_select
    from mmrlhf_ray.curation.screening import PoolScreen

    emb = sorted(str(p) for p in (Path(args.dir) / "emb").glob("part-*.parquet"))
    pool = sorted(str(p) for p in (Path(args.dir) / "pool").glob("part-*.parquet"))
    cluster = ClusterConfig(k=100, sample_size=100_000, niter=20, threads=2)
    start = time.perf_counter()
    screen = None
    if args.child == "decon":
        cfg, ref = reference(args)
        screen = PoolScreen(cfg, ref, ["eval"])
        screen.screen_parts(emb, pool)
    pre = time.perf_counter() - start
    fixed = {"safety": 5000, "video": 5000}
    curated = cluster_and_select(emb, cluster, 100_000, {"long": 4, "short": 5, "mcq": 1},
                                 fixed, seed=0, screen=screen)  # fmt: skip
    wall = time.perf_counter() - start
    res = {
        "wall_s": round(wall, 2),
        "screen_pre_s": round(pre, 2),
        "timings": {k: round(v, 2) for k, v in curated.timings.items()},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "selected": int(len(curated.selection.indices)),
    }
    if screen is not None:
        res["screen"] = screen.timings
        res["matched_rows"] = int(len(screen.matches.row_set()))
    print(json.dumps(res))


def phash_cost() -> dict[str, float]:
    """Microseconds per decoded image for the perceptual hash the embedder now computes."""
    from PIL import Image

    from mmrlhf_ray.curation.decontaminate import perceptual_hash

    rng = np.random.default_rng(0)
    out = {}
    for side, n in ((64, 400), (512, 100)):
        imgs = [
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)
        ]
        t = time.perf_counter()
        for im in imgs:
            perceptual_hash(im)
        out[f"{side}px"] = round((time.perf_counter() - t) / n * 1e6, 1)
    return out


def run_child(mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, f"--child={mode}", f"--dir={args.dir}", f"--eval={args.eval}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_doc(r: dict, command: str) -> None:
    from mmrlhf_ray.curation.report import update_benchmarks_section

    base = min(x["wall_s"] for x in r["base"])
    decon = min(x["wall_s"] for x in r["decon"])
    scale = 10_000_000 / r["rows"]
    d0 = r["decon"][0]
    lines = [
        f"### Decontamination at pool scale (`{command}`)",
        "",
        f"{r['rows']:,} rows x 512-d float16 embeddings + hashes + questions "
        f"({r['gb_on_disk']:.2f} GB), {r['eval']:,} evaluation items, 2-core shared VM "
        f"(load average {r['load']:.1f} at the start), page cache evicted before each run, "
        f"runs alternating base / decontaminated, best of {len(r['base'])} each.",
        "",
        "| run | wall s (each) | sample | train | assign | select (first run) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in ("base", "decon"):
        t = r[name][0]["timings"]
        walls = ", ".join(str(x["wall_s"]) for x in r[name])
        lines.append(
            f"| {name} | {walls} | {t['sample']} | {t['train']} | {t['assign']} | {t['select']} |"
        )
    own = [x["screen_pre_s"] + x["screen"].get("clip_search_cpu", 0) / 2 for x in r["decon"]]
    lines += [
        "",
        f"- **Decontamination's own work: {min(own):.1f} s (best run; hashes + n-grams + "
        f"CLIP thread time / 2 threads) beside {base:.1f} s of cluster + assign + sample: "
        f"{min(own) / base:.2f}x of it**; best walls {decon:.1f} s vs {base:.1f} s "
        f"({decon / base:.2f}x; the shared host's load moves walls by more than that). Of it: hashes "
        f"and 13-grams over the pool parts {d0['screen']['hashes_ngrams']} s (read of "
        f"image_hash/phash + questions, Arrow tokenising + numpy rolling hashes), CLIP search "
        f"inside the assignment {d0['screen'].get('clip_search_cpu', 0)} s of thread time "
        "(each row against the evaluation vectors listed under its own k-means centre, "
        f"4 probes of 100: ~{r['eval'] * 4 // 100} of {r['eval']:,}; no second read of the vectors).",
        f"- At 10M rows (linear extrapolation x{scale:.0f}: everything streams per part; not "
        "measured at 10M, which does not fit the 10-minute budget on this host): about "
        f"{base * scale:.0f} s base and {min(own) * scale:.0f} s of decontamination work.",
        f"- The embedder also computes each image's pHash: {r['phash_us']['64px']} µs at 64 px, "
        f"{r['phash_us']['512px']} µs at 512 px per image on one core (timed under the same "
        "load; 0.58 ms at 512 px at a quieter moment), i.e. about "
        f"{r['phash_us']['512px'] * 10 / 3600:.1f} core-hours per 10M images, spread over "
        "the embedding actors' decode cores, beside ~2-3 ms per image of JPEG decode: a real "
        "share of the decode budget, not a rounding error.",
        "- Against the whole stage: embedding 10M images is the dominant cost (about 10 min on "
        "8 GPUs, projected in the embedding section above), so decontamination is the "
        "fraction above of the part after embedding and smaller still of the stage.",
        "- The CLIP search is N x M x probes / k x d: linear in the evaluation items "
        f"({r['eval']:,} here); `clip_probes=0` (exact, every row against every vector) costs "
        "k / probes = 25x more.",
        f"- Matched rows on this synthetic pool: {d0['matched_rows']} (random hashes, random "
        "long questions, evaluation vectors drawn around the pool's latent directions with "
        "noise): the figure is a cost, not a contamination rate.",
        "- Two rounds only, on a host shared with other engineers' jobs (walls of the same run "
        "vary 1.4-2.3x between rounds): read the component times, not the walls.",
    ]
    update_benchmarks_section(ROOT / "docs" / "BENCHMARKS.md", "decontaminate", "\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--eval", type=int, default=2000)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default="/work/bench_tmp/decontam")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--child", choices=["base", "decon"])
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    out = Path(args.dir)
    t = time.perf_counter()
    latent = generate(out, args.rows, 512, args.parts, seed=0)
    np.save(out / "latent.npy", latent)
    print(f"generated in {time.perf_counter() - t:.0f} s")
    files = list(out.glob("*/part-*.parquet"))
    result = {
        "rows": args.rows,
        "eval": args.eval,
        "load": os.getloadavg()[0],
        "base": [],
        "decon": [],
    }
    result["gb_on_disk"] = sum(p.stat().st_size for p in files) / 1e9
    try:
        for _ in range(args.rounds):
            for mode in ("base", "decon"):
                evict(files)
                result[mode].append(run_child(mode, args))
                print(mode, result[mode][-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(out)
    result["phash_us"] = phash_cost()
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        write_doc(result, "python -m benchmarks.decontaminate_10m " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
