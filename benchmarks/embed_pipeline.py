"""Embedding throughput: the Ray Data actor pipeline of `mmrlhf curate` vs a plain loop.

Same images (a shapes-world pool written as a ``toyworld`` stage), same model, same
total threads, one run side by side:

* **plain**: one process, ``torch.set_num_threads(T)``, reads the shards and calls
  ``embed_rows`` (decode, categorise, preprocess, embed) batch by batch;
* **ray**: the stage's real embedding step (``jobs.curate.embed_pending``): Ray Data
  reads the shards, ``map_batches(ClipEmbedder, ActorPoolStrategy(size=T))`` with one
  thread per actor, and the driver writes the embeddings parts.

Both report end-to-end wall time (model load included) and steady-state images/s
(after the first batch is out, from every actor, i.e. without the fixed start-up).
Rounds alternate plain / Ray so both sides see the same load on a shared machine.
Target (issue 3): Ray >= 0.9x plain at 2 actors.

    .venv/bin/python -m benchmarks.embed_pipeline --images 128 --rounds 3 --model ViT-B-32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def build_pool(run_dir: str, n: int, per_shard: int) -> list[dict]:
    from mmrlhf_ray.core.stage import StageDir
    from mmrlhf_ray.data.schemas import to_table
    from mmrlhf_ray.toyworld import generate_pool

    rows = generate_pool(n, seed=0)
    stage = StageDir(run_dir, "toyworld")
    stage.begin({"bench": n})
    for i in range(0, n, per_shard):
        stage.write_part(f"pool-{i // per_shard:05d}", to_table(rows[i : i + per_shard], "pool"))
    stage.finish(n, n, 0)
    return rows


def run_plain(run_dir: str, model_name: str, threads: int, batch: int) -> dict:
    """Single process: read shards, embed batch by batch with ``threads`` torch threads."""
    import pyarrow.parquet as pq
    import torch

    from mmrlhf_ray.core.stage import StageDir
    from mmrlhf_ray.curation.embed import embed_rows
    from mmrlhf_ray.models.clip import load_clip

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model, preprocess = load_clip(model_name, seed=0)
    first, done = None, 0
    for path in StageDir(run_dir, "toyworld").part_paths():
        rows = pq.read_table(path).to_pylist()
        for i in range(0, len(rows), batch):
            out = embed_rows(rows[i : i + batch], model, preprocess)
            done += len(out["sample_id"])
            if first is None:
                first = (time.perf_counter(), done)
    end = time.perf_counter()
    return {
        "wall_s": end - start,
        "images": done,
        "steady_images_per_s": (done - first[1]) / (end - first[0]),
    }


def run_ray(run_dir: str, model_name: str, actors: int, batch: int, stage: str) -> dict:
    """The stage's embedding step on a local Ray with ``actors`` one-thread actors.

    Writes into a fresh stage directory ``stage`` (each round embeds everything anew).
    """
    import pyarrow.parquet as pq

    from jobs.curate import embed_pending
    from mmrlhf_ray.core.config import load_config
    from mmrlhf_ray.core.stage import StageDir
    from mmrlhf_ray.curation.config import CurateConfig
    from mmrlhf_ray.curation.pipeline import ShardCollector

    cfg = load_config(
        CurateConfig,
        None,
        [
            f"run_dir={run_dir}",
            f"embed.model_name={model_name}",
            f"embed.pool_size={actors}",
            "embed.threads=1",
            f"embed.batch_size={batch}",
        ],
    )
    src = StageDir(run_dir, "toyworld")
    expected = {
        s: pq.ParquetFile(src.path("data", f"{s}.parquet")).metadata.num_rows
        for s in src.part_names()
    }
    stamps = []
    original = ShardCollector.add

    def timed_add(self, batch_table):  # record when each output batch reaches the driver
        stamps.append((time.perf_counter(), batch_table.num_rows))
        return original(self, batch_table)

    ShardCollector.add = timed_add
    try:
        start = time.perf_counter()
        embed_pending(cfg, StageDir(run_dir, stage), src, expected)
        end = time.perf_counter()
    finally:
        ShardCollector.add = original
    done = sum(n for _, n in stamps)
    # Steady state starts once every actor has delivered its first block (each warmed up).
    warm = min(actors, len(stamps)) - 1
    before = sum(n for _, n in stamps[: warm + 1])
    return {
        "wall_s": end - start,
        "images": done,
        "steady_images_per_s": (done - before) / (end - stamps[warm][0]),
    }


def summarise(rounds: list[dict]) -> dict:
    """Median steady-state throughput per side and the median of per-round ratios."""
    import statistics

    ratios = [r["ray"]["steady_images_per_s"] / r["plain"]["steady_images_per_s"] for r in rounds]
    return {
        "plain_median": statistics.median(r["plain"]["steady_images_per_s"] for r in rounds),
        "ray_median": statistics.median(r["ray"]["steady_images_per_s"] for r in rounds),
        "ratio_median": statistics.median(ratios),
        "ratios": ratios,
    }


def write_doc(result: dict, command: str) -> None:
    from mmrlhf_ray.curation.report import update_benchmarks_section

    summary = result["summary"]
    lines = [
        f"### Embedding pipeline: Ray Data actors vs a plain loop (`{command}`)",
        "",
        f"{result['images']} shapes-world images per side per round (64 px, resized by the "
        f"model's transform to its input size), open_clip `{result['model']}` with random "
        f"weights, {result['threads']} threads in total on each side, {len(result['rounds'])} "
        "rounds alternating plain / Ray so both see the same (shared, busy) machine.",
        "",
        "| round | load avg | plain wall s | plain img/s | Ray wall s | Ray img/s | Ray / plain |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, (r, ratio) in enumerate(zip(result["rounds"], summary["ratios"], strict=True)):
        p, y = r["plain"], r["ray"]
        lines.append(
            f"| {i + 1} | {r['load']:.1f} | {p['wall_s']:.1f} | "
            f"{p['steady_images_per_s']:.2f} | {y['wall_s']:.1f} | "
            f"{y['steady_images_per_s']:.2f} | {ratio:.2f}x |"
        )
    lines += [
        "",
        f"- **Ray / plain steady-state images/s, median of rounds: {summary['ratio_median']:.2f}x** "
        "(target >= 0.9x). img/s is counted after every actor (or the loop) delivered its "
        "first batch; wall includes model loading (Ray's actors also start processes and "
        "import torch: a fixed cost of tens of seconds here, amortised over a real pool).",
        "- Why Ray came out faster here (our reading, not separately measured): the plain "
        "loop runs 2 intra-op torch threads that meet at a barrier after every op, so on "
        "oversubscribed cores the slower thread stalls both, while 2 single-thread actors "
        "work on independent batches and degrade gracefully (ENVIRONMENT.md saw the same "
        "with faiss OpenMP threads). On an idle machine expect the two to be close; the "
        "Ray side also runs light read tasks (0.5 CPU each) and the driver, which the "
        "plain loop does inline.",
        "- GPU projection (assumptions, not measured here: ViT-B-32 at 224 px in fp16 runs "
        "~2,000-3,000 images/s on one A100/H100-class GPU for the model alone; JPEG decode + "
        "resize costs ~2-3 ms per image per CPU core, so each GPU actor needs ~6-8 decoding "
        "cores, i.e. `num_cpus: 4` per actor plus Ray Data read tasks on the rest): 8 GPU "
        "actors embed 10M images in about 10M / (8 x 2,000) s = ~10 minutes, bounded by "
        "decoding and storage reads rather than the model. Actors share nothing, so "
        "throughput scales with the number of GPUs until storage bandwidth limits it "
        "(10M images of ~100 KB = 1 TB to read).",
    ]
    update_benchmarks_section(ROOT / "docs" / "BENCHMARKS.md", "embed_pipeline", "\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--per-shard", type=int, default=16)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip model (random weights)")
    ap.add_argument("--threads", type=int, default=2, help="total threads = actors")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="alternating plain / Ray rounds")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    run_dir = tempfile.mkdtemp(prefix="embed_bench_")
    build_pool(run_dir, args.images, args.per_shard)
    import ray

    ray.init(
        num_cpus=args.threads + 1,
        _node_ip_address="127.0.0.1",
        object_store_memory=1 << 29,
        include_dashboard=False,
        log_to_driver=False,
    )
    rounds = []
    try:
        for i in range(args.rounds):
            load = os.getloadavg()[0]
            plain = run_plain(run_dir, args.model, args.threads, args.batch)
            ray_result = run_ray(run_dir, args.model, args.threads, args.batch, f"curate-r{i}")
            rounds.append({"load": load, "plain": plain, "ray": ray_result})
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        ray.shutdown()
    result = {
        "images": args.images,
        "model": args.model,
        "threads": args.threads,
        "rounds": rounds,
        "summary": summarise(rounds),
    }
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        write_doc(result, "python -m benchmarks.embed_pipeline " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
