"""Packed forward vs today's grouped forward vs TRL's DPOTrainer, side by side.

One MM-DPO training step = policy forward + backward over the pairs of ``--queries-per-step``
queries (K = 4 responses -> 6 pairs each), frozen vision tower, fp32, one torch thread,
reference log-probs precomputed once for ours (TRL refuses that for vision data and runs
its reference model every step). Every variant runs in its own subprocess, so each peak
RSS is its own high-water mark. Shapes:

* ``tiny``: the project's tiny shapes-world Qwen2-VL (1.6M parameters, 64x64 images);
* ``real256`` / ``real1024``: a realistic ratio: 256 / 1,024 visual tokens (448 / 896 px
  images), ~32 prompt text tokens, responses of 64-128 tokens, K = 4, a 32,768-token
  vocabulary (hidden 384, 6 layers: ~30M parameters).

The tokens each variant computes per query (LLM positions, LM-head positions) are
counted beside the measured ratios. Also: reward-model training pairs/s, unpacked vs
packed (``tiny``). Reuses ``benchmarks/dpo_vs_trl.py`` for TRL and our training loop.

    .venv/bin/pip install trl==1.16.0        # bench-only extra
    .venv/bin/python -m benchmarks.packed_forward   # ends with one JSON line (real1024)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.dpo_vs_trl import _figures, build_models, run_ours, run_trl

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {"tiny": 0, "real256": 448, "real1024": 896}  # image side (px) of the real shapes
VOCAB = 32768
WORDS = (
    "the a red blue green circle square triangle small large left right top bottom "
    "image shows there is one two three shape colour near far above below and with "
    "which object picture answer describe"
).split()


def _words(rng: random.Random, tok, n_tokens: int) -> str:
    text = ""
    while len(tok(text, add_special_tokens=False).input_ids) < n_tokens:
        text += rng.choice(WORDS) + " "
    return text.strip()


def build_tiny(out: Path) -> dict[str, str]:
    from mmrlhf_ray.models import build_all

    return {
        "policy": build_all(str(out / "tiny"), seed=0)["policy"],
        "reference": build_all(str(out / "tiny-ref"), seed=1)["policy"],
    }


def real_pairs(n_queries: int, side: int, tok, seed: int = 0) -> list[dict]:
    """Random-pixel images, ~22-token questions, 4 responses of 64-128 tokens, 6 pairs each."""
    import numpy as np
    from PIL import Image

    from mmrlhf_ray.data.media import encode_png

    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        image = encode_png(Image.fromarray((np_rng.random((side, side, 3)) * 255).astype("uint8")))
        question = _words(rng, tok, 22)
        resps = [_words(rng, tok, rng.randint(64, 127)) for _ in range(4)]
        for a in range(4):
            for b in range(a + 1, 4):
                rows.append(
                    {
                        "pair_id": f"q{q}-{a}{b}",
                        "query_id": f"q{q}",
                        "question": question,
                        "image": image,
                        "chosen": resps[a],
                        "rejected": resps[b],
                        "chosen_id": f"q{q}-r{a}",
                        "rejected_id": f"q{q}-r{b}",
                        "margin": 1.0,
                    }
                )
    return rows


def shape_setup(shape: str, workdir: Path, n_queries: int) -> tuple[dict, list[dict]]:
    from transformers import AutoTokenizer

    from benchmarks.dpo_vs_trl import make_pairs

    if shape == "tiny":
        return build_tiny(workdir), make_pairs(n_queries)
    paths = build_models(workdir, SHAPES[shape], VOCAB)
    tok = AutoTokenizer.from_pretrained(paths["policy"])
    return paths, real_pairs(n_queries, SHAPES[shape], tok)


def token_counts(paths: dict, rows: list[dict]) -> dict[str, float]:
    """Per query: LLM positions and LM-head positions each variant computes (mean)."""
    from mmrlhf_ray.data.groups import group_pairs
    from mmrlhf_ray.dpo.batching import encode_group
    from mmrlhf_ray.models import load_policy

    _, processor = load_policy(paths["policy"])
    groups, _ = group_pairs(rows)
    out = {
        k: 0.0
        for k in (
            "prompt",
            "response",
            "grouped_llm",
            "packed_llm",
            "trl_llm",
            "grouped_head",
            "packed_head",
            "trl_head",
        )
    }
    for g in groups:
        eq = encode_group(processor, g)
        p, rs = eq.prompt["input_ids"].shape[1], [int(r.numel()) for r in eq.response_ids]
        pair_tokens = sum(2 * p + rs[x.chosen] + rs[x.rejected] for x in g.pairs)
        width = p + max(rs)  # grouped rows are padded to the longest
        out["prompt"] += p
        out["response"] += sum(rs) / len(rs)
        out["grouped_llm"] += len(rs) * width
        out["packed_llm"] += p + sum(rs)
        out["trl_llm"] += 2 * pair_tokens  # policy + reference, each pair's two sequences
        out["grouped_head"] += len(rs) * width
        out["packed_head"] += sum(rs)
        out["trl_head"] += 2 * pair_tokens
    return {k: v / len(groups) for k, v in out.items()}


def run_reward(paths: dict, forward: str, steps: int, pairs_per_step: int) -> dict:
    """Reward-model training steps (joint loss) with the unpacked or the packed forward."""
    from mmrlhf_ray.reward.data import collate_reward_pairs, pairs_from_rows, reward_loss_fn
    from mmrlhf_ray.reward.losses import RewardLossWeights
    from mmrlhf_ray.reward.model import new_reward_model
    from mmrlhf_ray.reward.toy import toy_pairs
    from mmrlhf_ray.training.freeze import freeze_vision

    model = new_reward_model(paths["policy"], seed=0).train()
    freeze_vision(model)
    pairs, _ = pairs_from_rows(toy_pairs(32, seed=0), "auto")
    pairs.sort(key=lambda p: p.query_id)  # a batch holds whole queries (3 pairs each)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    weights, times, cpu, n = RewardLossWeights(), [], [], 0
    for step in range(steps + 1):
        t, c = time.perf_counter(), time.process_time()
        chunk = [pairs[(step * pairs_per_step + j) % len(pairs)] for j in range(pairs_per_step)]
        batch = collate_reward_pairs(chunk, model.processor, model.meta, forward=forward)
        loss, _ = reward_loss_fn(model, batch, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step > 0:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            n += len(chunk)
    return _figures(f"reward-{forward}", n, times, cpu, len(pairs))


def _child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warmup = 1 if args.shape == "tiny" else args.warmup
    n = args.queries_per_step * (args.steps + warmup)
    paths, rows = shape_setup(args.shape, Path(args.workdir), n)
    if args.variant == "trl":
        result = run_trl(
            paths, rows, args.steps, args.trl_pairs or 6 * args.queries_per_step, warmup
        )
    elif args.variant.startswith("reward-"):
        result = run_reward(paths, args.variant.split("-", 1)[1], args.steps, 12)
    else:
        result = run_ours(
            paths, rows, args.steps, args.queries_per_step, online=False, forward=args.variant
        )
    if args.variant == "packed":
        result["tokens"] = token_counts(paths, rows)
        from mmrlhf_ray.models import load_policy

        result["params_m"] = (
            sum(p.numel() for p in load_policy(paths["policy"])[0].parameters()) / 1e6
        )
    print("RESULT " + json.dumps(result))


def _spawn(args, shape: str, variant: str, steps: int, qps: int, trl_pairs: int = 0) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--shape",
        shape,
        "--variant",
        variant,
        "--steps",
        str(steps),
        "--queries-per-step",
        str(qps),
        "--threads",
        str(args.threads),
        "--workdir",
        args.workdir,
        "--trl-pairs",
        str(trl_pairs),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        raise SystemExit(f"{shape}/{variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(line[0][7:])


def _ratio(a: dict, b: dict, key: str) -> float:
    return a[key] / b[key]


def _row(shape: str, res: dict) -> str:
    tok = res["packed"]["tokens"]
    g, p, t = res["grouped"], res["packed"], res["trl"]
    cpu, wall = "pairs_per_cpu_s", "pairs_per_s"
    return (
        f"| {shape} | {t[cpu]:.3f} / {g[cpu]:.3f} / {p[cpu]:.3f} "
        f"| **{_ratio(p, g, cpu):.2f}x** | **{_ratio(p, t, cpu):.1f}x** "
        f"| {t[wall]:.3f} / {g[wall]:.3f} / {p[wall]:.3f} "
        f"| {_ratio(p, g, wall):.2f}x / {_ratio(p, t, wall):.1f}x "
        f"| {t['peak_rss_mb']:.0f} / {g['peak_rss_mb']:.0f} / {p['peak_rss_mb']:.0f} "
        f"| **{p['peak_rss_mb'] / g['peak_rss_mb']:.2f}** "
        f"| {tok['prompt']:.0f} + 4 x {tok['response']:.0f} "
        f"| {tok['trl_llm']:.0f} / {tok['grouped_llm']:.0f} / {tok['packed_llm']:.0f} "
        f"({tok['grouped_llm'] / tok['packed_llm']:.1f}x) "
        f"| {tok['trl_head']:.0f} / {tok['grouped_head']:.0f} / {tok['packed_head']:.0f} |"
    )


def summarize(results: dict) -> dict:
    """Print the markdown table and return the JSON line's figures.

    Ratios are pairs per CPU-second of each variant's own process, every variant on one
    torch thread: on a machine shared with other work, wall-clock pairs/s measure how
    much CPU the scheduler gave each subprocess (printed too, never the headline); on one
    thread a step's CPU-seconds are its wall-seconds on a core of its own.
    """
    shapes = [s for s in results if s in SHAPES]
    print(
        "| shape | pairs / CPU-s TRL / grouped / packed | packed vs grouped | packed vs TRL "
        "| pairs / s (wall) TRL / grouped / packed | wall ratios vs grouped / vs TRL "
        "| peak RSS MB TRL / grouped / packed | packed / grouped RSS "
        "| tokens per query (prompt + K x response) | LLM positions TRL / grouped / packed "
        "| LM-head positions TRL / grouped / packed |"
    )
    print("|---" * 11 + "|")
    for shape in shapes:
        print(_row(shape, results[shape]))
    if "reward" in results:
        g, p = results["reward"]["grouped"], results["reward"]["packed"]
        print(
            f"reward-model training (tiny): unpacked {g['pairs_per_cpu_s']:.2f} pairs/CPU-s, "
            f"packed {p['pairs_per_cpu_s']:.2f} pairs/CPU-s "
            f"({_ratio(p, g, 'pairs_per_cpu_s'):.2f}x; wall {_ratio(p, g, 'pairs_per_s'):.2f}x)"
        )
    key = "real1024" if "real1024" in results else shapes[-1]
    res = results[key]
    cpu, wall = "pairs_per_cpu_s", "pairs_per_s"
    return {
        "shape": key,
        "basis": "pairs per CPU-second, 1 torch thread per variant",
        "packed_vs_grouped": round(_ratio(res["packed"], res["grouped"], cpu), 3),
        "packed_vs_trl": round(_ratio(res["packed"], res["trl"], cpu), 3),
        "packed_memory_vs_grouped": round(
            res["packed"]["peak_rss_mb"] / res["grouped"]["peak_rss_mb"], 3
        ),
        "packed_vs_grouped_wall": round(_ratio(res["packed"], res["grouped"], wall), 3),
        "packed_vs_trl_wall": round(_ratio(res["packed"], res["trl"], wall), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="all", help=f"all, or a comma list of {', '.join(SHAPES)}")
    ap.add_argument("--variant", default="all")
    ap.add_argument("--steps", type=int, default=1, help="timed steps (after one warm-up)")
    ap.add_argument("--queries-per-step", type=int, default=1, help="queries (6 pairs each)")
    ap.add_argument(
        "--trl-pairs",
        type=int,
        default=2,
        help="TRL pairs per step on the real shapes (its cost is per pair)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed first steps on the real shapes (tiny: always 1)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/packed_forward_bench")
    ap.add_argument("--json", default="", help="also write all results here")
    ap.add_argument("--from-json", default="", help="only re-print the summary of a --json file")
    args = ap.parse_args()
    if args.child:
        return _child(args)
    if args.from_json:
        print(json.dumps(summarize(json.loads(Path(args.from_json).read_text()))))
        return None
    if args.threads != 1:
        print("note: the ratios assume 1 torch thread per variant (see summarize)")
    shapes = list(SHAPES) if args.shape == "all" else args.shape.split(",")
    results: dict = {}
    for shape in shapes:
        qps, steps = (2, 3) if shape == "tiny" else (args.queries_per_step, args.steps)
        results[shape] = {
            v: _spawn(args, shape, v, steps, qps, 0 if shape == "tiny" else args.trl_pairs)
            for v in ("trl", "grouped", "packed")
        }
        print(shape, json.dumps(results[shape]), flush=True)
    if "tiny" in shapes:
        results["reward"] = {
            v: _spawn(args, "tiny", f"reward-{v}", 3, 1) for v in ("grouped", "packed")
        }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(summarize(results)))


if __name__ == "__main__":
    main()
