"""Embedding throughput: the Ray Data actor pipeline of `mmrlhf curate` vs a plain loop.

Same images (a shapes-world pool written as a ``toyworld`` stage), same model, same
total threads, one run side by side:

* **plain**: one process, ``torch.set_num_threads(T)``, reads the shards and calls
  ``embed_rows`` (decode, categorise, preprocess, embed) batch by batch;
* **ray**: the stage's real embedding step (``jobs.curate.embed_pending``): Ray Data
  reads the shards, ``map_batches(ClipEmbedder, ActorPoolStrategy(size=T))`` with one
  thread per actor, and the driver writes the embeddings parts.

Both report end-to-end wall time (model load included) and steady-state images/s
(after the first batch is out, from every actor, i.e. without the fixed start-up). Target (issue 3):
ray >= 0.9x plain at 2 actors.

    .venv/bin/python benchmarks/embed_pipeline.py --images 512 --model ViT-B-32
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
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def build_pool(run_dir: str, n: int, per_shard: int) -> list[dict]:
    from mmrlhf_ray.schemas import to_table
    from mmrlhf_ray.stage import StageDir
    from mmrlhf_ray.toyworld import generate_pool

    rows = generate_pool(n, seed=0)
    stage = StageDir(run_dir, "toyworld")
    stage.begin({"bench": n})
    for i in range(0, n, per_shard):
        stage.write_part(f"pool-{i // per_shard:05d}", to_table(rows[i:i + per_shard], "pool"))
    stage.finish(n, n, 0)
    return rows


def run_plain(run_dir: str, model_name: str, threads: int, batch: int) -> dict:
    """Single process: read shards, embed batch by batch with ``threads`` torch threads."""
    import pyarrow.parquet as pq
    import torch

    from mmrlhf_ray.curation.embed import embed_rows
    from mmrlhf_ray.models.clip import load_clip
    from mmrlhf_ray.stage import StageDir

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model, preprocess = load_clip(model_name, seed=0)
    first, done = None, 0
    for path in StageDir(run_dir, "toyworld").part_paths():
        rows = pq.read_table(path).to_pylist()
        for i in range(0, len(rows), batch):
            out = embed_rows(rows[i:i + batch], model, preprocess)
            done += len(out["sample_id"])
            if first is None:
                first = (time.perf_counter(), done)
    end = time.perf_counter()
    return {"wall_s": end - start, "images": done,
            "steady_images_per_s": (done - first[1]) / (end - first[0])}


def run_ray(run_dir: str, model_name: str, actors: int, batch: int) -> dict:
    """The stage's embedding step on a local Ray with ``actors`` one-thread actors."""
    import pyarrow.parquet as pq
    import ray

    from jobs.curate import embed_pending
    from mmrlhf_ray.config import load_config
    from mmrlhf_ray.curation.config import CurateConfig
    from mmrlhf_ray.curation.pipeline import ShardCollector
    from mmrlhf_ray.stage import StageDir

    ray.init(num_cpus=actors + 1, _node_ip_address="127.0.0.1", object_store_memory=1 << 29,
             include_dashboard=False, log_to_driver=False)
    cfg = load_config(CurateConfig, None, [f"run_dir={run_dir}", f"embed.model_name={model_name}",
                                           f"embed.pool_size={actors}", "embed.threads=1",
                                           f"embed.batch_size={batch}"])
    src = StageDir(run_dir, "toyworld")
    expected = {s: pq.ParquetFile(src.path("data", f"{s}.parquet")).metadata.num_rows
                for s in src.part_names()}
    stamps = []
    original = ShardCollector.add

    def timed_add(self, batch_table):  # record when each output batch reaches the driver
        stamps.append((time.perf_counter(), batch_table.num_rows))
        return original(self, batch_table)

    ShardCollector.add = timed_add
    try:
        start = time.perf_counter()
        embed_pending(cfg, StageDir(run_dir, "curate"), src, expected)
        end = time.perf_counter()
    finally:
        ShardCollector.add = original
        ray.shutdown()
    done = sum(n for _, n in stamps)
    # Steady state starts once every actor has delivered its first block (each warmed up).
    warm = min(actors, len(stamps)) - 1
    before = sum(n for _, n in stamps[:warm + 1])
    return {"wall_s": end - start, "images": done,
            "steady_images_per_s": (done - before) / (end - stamps[warm][0])}


def write_doc(result: dict, command: str) -> None:
    from mmrlhf_ray.curation.report import update_benchmarks_section

    p, r = result["plain"], result["ray"]
    ratio = r["steady_images_per_s"] / p["steady_images_per_s"]
    lines = [
        f"### Embedding pipeline: Ray Data actors vs a plain loop (`{command}`)",
        "",
        f"{result['images']} shapes-world images (64 px, upscaled by the model's transform), "
        f"open_clip `{result['model']}` with random weights, {result['threads']} threads in "
        f"total on each side, 2-core shared VM (load average {result['load']:.1f} at start).",
        "",
        "| pipeline | wall s (incl. model load) | steady images/s |",
        "|---|---:|---:|",
        f"| plain loop, 1 process x {result['threads']} threads | {p['wall_s']:.1f} | "
        f"{p['steady_images_per_s']:.1f} |",
        f"| Ray Data, {result['threads']} actors x 1 thread | {r['wall_s']:.1f} | "
        f"{r['steady_images_per_s']:.1f} |",
        "",
        f"- **Ray / plain steady-state throughput: {ratio:.2f}x** (target >= 0.9x). "
        f"End to end: {p['wall_s'] / r['wall_s']:.2f}x (Ray's start-up, about "
        f"{r['wall_s'] - result['images'] / r['steady_images_per_s']:.0f} s here, is a "
        "fixed cost: actor processes import torch and load the model).",
        "- GPU projection (assumptions: ViT-B-32 at 224 px, fp16, ~2,000-3,000 images/s "
        "per A100/H100-class GPU for the model alone; JPEG decode + resize ~300-500 "
        "images/s per CPU core, so ~8 decoding cores per GPU actor (`num_cpus: 4` + Ray Data "
        "read tasks) keep it fed): 8 GPUs embed 10M images in roughly 10M / (8 x 2,000) "
        "= ~10 minutes, bound by decoding and storage reads rather than the model; "
        "the actor pool scales linearly because actors share nothing but the read tasks.",
    ]
    update_benchmarks_section(ROOT / "docs" / "BENCHMARKS.md", "embed_pipeline", "\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip model (random weights)")
    ap.add_argument("--threads", type=int, default=2, help="total threads = actors")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    run_dir = tempfile.mkdtemp(prefix="embed_bench_")
    build_pool(run_dir, args.images, args.per_shard)
    load = os.getloadavg()[0]
    plain = run_plain(run_dir, args.model, args.threads, args.batch)
    ray_result = run_ray(run_dir, args.model, args.threads, args.batch)
    result = {"images": args.images, "model": args.model, "threads": args.threads,
              "load": load, "plain": plain, "ray": ray_result}
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        write_doc(result, "python benchmarks/embed_pipeline.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
