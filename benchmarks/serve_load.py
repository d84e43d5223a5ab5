"""Reward service under load: dynamic batching vs batch size 1, and vs the offline limit.

One run, side by side on one Serve HTTP proxy: the same critique reward model (the tiny
Qwen2-VL of ``mmrlhf_ray.models`` with a fresh scoring head, critique of
``--critique-tokens`` greedy tokens then one scoring forward) deployed twice, as
``/batched`` (``@serve.batch`` up to ``--batch`` items) and ``/b1`` (batch size 1),
each one replica with 1 CPU and 1 torch thread. Closed-loop clients (1, 8, 64 threads,
one ``POST /v1/score`` item per request with a 64x64 PNG) load each arm for
``--seconds`` per level, in ``--rounds`` alternating windows (so the shared box's load
drifts hit both arms alike); in-flight requests are drained at the end of a window, so
req/s = completed / wall time. Then the limit: the
same model's offline batched forward (``RewardScorer.score`` on pre-decoded batches of
``--batch``, 1 torch thread, no HTTP) in items/s.

    .venv/bin/python -m benchmarks.serve_load            # writes docs/BENCHMARKS.md "## Serving"
    .venv/bin/python -m benchmarks.serve_load --seconds 5 --no-write
    .venv/bin/python -m benchmarks.serve_load --critique-backend vllm   # its own subsection

Targets (issue 6): >= 4x throughput from batching at 64 clients; batched serving >=
0.8x of the offline batched forward.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COLOURS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (240, 200, 0)]
ANSWERS = ["A red circle at the top left.", "Two blue squares.", "There is no triangle.", "B"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_reward_model(out: str) -> str:
    from mmrlhf_ray.models import build_all
    from mmrlhf_ray.reward.model import build_tiny_reward_model

    paths = build_all(f"{out}/tiny", seed=0)
    return build_tiny_reward_model(paths["policy"], f"{out}/rm", seed=0)


def payloads(n: int = 16) -> list[dict]:
    """``n`` distinct single-item /v1/score bodies (question, 64x64 PNG, response)."""
    from PIL import Image

    from mmrlhf_ray.data.media import encode_png

    out = []
    for i in range(n):
        img = Image.new("RGB", (64, 64), COLOURS[i % 4])
        item = {
            "question": f"What colour is shape {i}? Answer briefly.",
            "image": base64.b64encode(encode_png(img)).decode(),
            "response": ANSWERS[i % 4],
        }
        out.append({"items": [item]})
    return out


def run_window(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """``clients`` closed-loop threads for ``seconds``, then drain: latencies and wall."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        session, i = requests.Session(), k
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = session.post(f"{url}/v1/score", json=bodies[i % len(bodies)], timeout=600)
            dt = time.perf_counter() - t0
            with lock:
                (latencies.append(dt) if r.status_code == 200 else errors.append(r.text[:200]))
            i += clients

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "errors": len(errors), "wall": time.perf_counter() - start}


def summarize(clients: int, windows: list[dict], items: int, batches: int) -> dict:
    """req/s = completed / wall over all windows of one arm; p50/p99 over all requests."""
    lat = sorted(x for w in windows for x in w["latencies"])
    wall = sum(w["wall"] for w in windows)
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": sum(w["errors"] for w in windows),
        "wall_s": round(wall, 2),
        "rps": len(lat) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "mean_batch": items / max(1, batches),
    }


def run_level(
    urls: dict[str, str], bodies: list[dict], clients: int, seconds: float, rounds: int
) -> dict[str, dict]:
    """Both arms at ``clients``, alternating ``rounds`` windows of ``seconds / rounds`` each,
    so a change in the shared box's load hits both arms alike."""
    windows: dict[str, list] = {name: [] for name in urls}
    start = {name: requests.get(f"{u}/healthz", timeout=30).json() for name, u in urls.items()}
    for _ in range(rounds):
        for name, url in urls.items():
            windows[name].append(run_window(url, bodies, clients, seconds / rounds))
    out = {}
    for name, url in urls.items():
        end = requests.get(f"{url}/healthz", timeout=30).json()
        items = end["items_scored"] - start[name]["items_scored"]
        out[name] = summarize(
            clients, windows[name], items, end["batches"] - start[name]["batches"]
        )
    return out


def offline(
    model_path: str,
    bodies: list[dict],
    batch: int,
    tokens: int,
    seconds: float,
    backend: str = "transformers",
) -> dict:
    """Items/s of the scorer's batched forward (1 thread, no HTTP), in a Ray task of its
    own (a vLLM critic pins its process's threads)."""
    import torch

    from mmrlhf_ray.service.config import ServeLimits
    from mmrlhf_ray.service.server import load_scorer, resolve_score_request
    from mmrlhf_ray.service.wire import ScoreRequest

    torch.set_num_threads(1)
    critic = None
    if backend == "vllm":
        from actors.critic import VllmCritic

        critic = VllmCritic(model_path, tokens)
    scorer = load_scorer(
        model_path, max_batch_size=batch, critique_max_new_tokens=tokens, critic=critic
    )
    items = [
        resolve_score_request(ScoreRequest.model_validate(b), ServeLimits())[0] for b in bodies
    ]
    out = {}
    for size in sorted({1, 8, batch}):
        batch_items = (items * (size // len(items) + 1))[:size]
        scorer.score(batch_items)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            scorer.score(batch_items)
            n += size
        out[size] = n / (time.perf_counter() - t0)
    return out


def start_apps(model_path: str, batch: int, tokens: int, backend: str) -> dict[str, str]:
    from mmrlhf_ray.service.config import ServeRewardConfig
    from serve.app import start

    port, urls = free_port(), {}
    for name, size in (("b1", 1), ("batched", batch)):
        cfg = ServeRewardConfig(
            model_path=model_path,
            port=port,
            app_name=f"bench-{name}",
            route_prefix=f"/{name}",
            max_batch_size=size,
            critique_max_new_tokens=tokens,
            critique_backend=backend,
            access_log=False,
        )
        urls[name] = start(cfg)
    return urls


def write_subsection(title: str, text: str) -> None:
    """Replace (or add) ``### <title>`` inside the ``## Serving`` section of docs/BENCHMARKS.md."""
    path = REPO / "docs" / "BENCHMARKS.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if "\n## Serving" not in "\n" + doc:
        doc = doc.rstrip() + "\n\n## Serving\n\nThe reward model as an HTTP service (issue 6).\n"
    start = ("\n" + doc).find("\n## Serving")
    end = doc.find("\n## ", start + 1)
    end = len(doc) if end < 0 else end
    section = doc[start:end]
    block = f"### {title}\n\n{text.strip()}\n"
    a = section.find(f"### {title}")
    if a < 0:
        section = section.rstrip() + "\n\n" + block
    else:
        b = section.find("\n### ", a + 1)
        section = section[:a] + block + ("" if b < 0 else section[b:])
    path.write_text(doc[:start] + section.rstrip() + "\n" + doc[end:])


def report(args, levels: dict, off: dict) -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "`.venv/bin/python -m benchmarks.serve_load"
        + (f" --seconds {args.seconds:g}" if args.seconds != 30 else "")
        + (" --critique-backend vllm" if args.critique_backend == "vllm" else "")
        + "`",
        "",
        f"Model: tiny Qwen2-VL critique reward model (hidden 128, 4 layers, fresh scoring head), "
        f"critique of {args.critique_tokens} greedy tokens ({args.critique_backend}) then one "
        f"scoring forward (transformers); one "
        f"replica, 1 CPU, 1 torch thread; 64x64 PNG per item; 2-core shared box, load "
        f"average at the end {load}.",
        "",
        "| clients | batch-1 req/s | p50 ms | p99 ms | batched req/s | p50 ms | p99 ms | mean batch | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in args.clients:
        a, b = levels[("b1", c)], levels[("batched", c)]
        lines.append(
            f"| {c} | {a['rps']:.2f} | {a['p50_ms']:.0f} | {a['p99_ms']:.0f} | {b['rps']:.2f} | "
            f"{b['p50_ms']:.0f} | {b['p99_ms']:.0f} | {b['mean_batch']:.1f} | "
            f"{b['rps'] / a['rps']:.1f}x |"
        )
    top = max(args.clients)
    speedup = levels[("batched", top)]["rps"] / levels[("b1", top)]["rps"]
    best = max(off, key=off.get)  # the limit: the best offline batch size
    vs_offline = levels[("batched", top)]["rps"] / off[best]
    lines += [
        "",
        "Offline forward (same model, no HTTP, 1 thread; mean of before and after the served "
        "runs): "
        + ", ".join(f"batch {k} {v:.2f} items/s" for k, v in sorted(off.items()))
        + f". The model's own best batching gain, the ceiling of the served one, is "
        f"{off[best] / off[1]:.1f}x (batch {best}).",
        "",
        f"- batching at {top} clients: **{speedup:.1f}x** batch-1 throughput (target >= 4x: "
        f"{'met' if speedup >= 4 else 'NOT met'})",
        f"- batched serving at {top} clients = **{vs_offline:.2f}x** the best offline batched "
        f"forward (target >= 0.8x: {'met' if vs_offline >= 0.8 else 'NOT met'})",
        f"- errors: {sum(v['errors'] for v in levels.values())}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="load per level and arm")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=2, help="alternating windows per level")
    parser.add_argument("--batch", type=int, default=32, help="max batch size of /batched")
    parser.add_argument(
        "--critique-tokens", type=int, default=32, help="as configs/serve-reward.yaml"
    )
    parser.add_argument(
        "--critique-backend",
        choices=["transformers", "vllm"],
        default="transformers",
        help="who writes the critiques",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from ray import serve

    from harness.runtime import init_ray

    init_ray(num_cpus=4)
    model = build_reward_model(tempfile.mkdtemp(prefix="servebench-"))
    bodies = payloads()
    import ray

    urls = start_apps(model, args.batch, args.critique_tokens, args.critique_backend)
    offline_task = ray.remote(num_cpus=1)(offline)
    limit = (
        model,
        bodies,
        args.batch,
        args.critique_tokens,
        args.seconds / 2,
        args.critique_backend,
    )
    levels = {}
    for url in urls.values():  # warm-up: first forwards allocate
        run_window(url, bodies, 2, 2.0)
    # the limit, measured before and after the served runs (the box is shared: average)
    before = ray.get(offline_task.remote(*limit))
    for c in args.clients:
        for name, result in run_level(urls, bodies, c, args.seconds, args.rounds).items():
            levels[(name, c)] = result
            print(name, json.dumps(result), flush=True)
    for name in urls:
        serve.delete(f"bench-{name}")
    after = ray.get(offline_task.remote(*limit))
    off = {k: (before[k] + after[k]) / 2 for k in before}
    print("offline before", before, "after", after, flush=True)
    text = report(args, levels, off)
    print(text)
    if not args.no_write:
        title = "Load: dynamic batching vs batch 1"
        write_subsection(title + (", vLLM critic" if args.critique_backend == "vllm" else ""), text)


if __name__ == "__main__":
    from mmrlhf_ray.core.signals import run_main

    run_main(main, "serve_load")  # Ctrl-C 130, SIGTERM 143, the services it started stopped
