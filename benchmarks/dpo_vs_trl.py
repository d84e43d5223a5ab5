"""MM-DPO trainer (grouped forward, precomputed reference) vs TRL's DPOTrainer.

Same tiny Qwen2-VL (built offline, large enough that compute dominates), same
shapes-world pairs (4 responses per query -> 6 pairs), same CPU, fp32, no gradient
checkpointing, frozen vision tower on both sides, one process each (run one after the
other in fresh subprocesses so peak RSS is per variant). Measures pairs per wall second
and per CPU second (process time, one torch thread: robust when the box is shared)
over the timed steps, and peak resident memory.

1. Step-0 check: on the same 6-pair batch, TRL's loss == ours with w = 0 (plain DPO),
   both with policy == reference (log 2) and with a *different* reference model
   (both sides then score the same token sequences; a real check of the log-probs).
2. Throughput: TRL (reference online, every step: it refuses precomputed reference
   log-probs for vision data) vs ours (K forwards per query, vision once per query,
   reference precomputed once; the precompute time is reported and also amortised over
   one epoch), plus ours with an online reference to separate the two effects.

    .venv/bin/python -m benchmarks.dpo_vs_trl            # writes the figures to stdout + JSON
    .venv/bin/python -m benchmarks.dpo_vs_trl --steps 6 --queries-per-step 2
Needs `pip install trl==1.16.0` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

BENCH_SPEC = dict(
    hidden_size=384,
    num_attention_heads=6,
    num_key_value_heads=6,
    num_hidden_layers=6,
    intermediate_size=1536,
    vision_depth=4,
    vision_embed_dim=256,
    vision_heads=4,
)
IMAGE_SIZE = 224  # 16x16 patches -> 64 visual tokens per image


def build_models(out: Path, side: int = IMAGE_SIZE, vocab_size: int = 0) -> dict[str, str]:
    """Tokenizer, a bench-sized policy and a differently seeded reference (HF dirs).

    The processor keeps ``side`` x ``side`` images as they are (``side`` a multiple of 28);
    ``vocab_size`` > 0 widens embeddings and LM head past the BPE's 2,000 tokens, as a real
    vocabulary would (the extra rows are never input). ``benchmarks/packed_forward.py``
    builds its realistic shapes with it too.
    """
    from transformers import (
        AutoTokenizer,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from mmrlhf_ray.models import TinyPolicySpec, build_tokenizer, default_texts, tiny_config

    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        build_tokenizer(default_texts(seed=0), tok_dir, vocab_size=2000)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    paths = {}
    for name, seed in (("policy", 0), ("reference", 1)):
        d = out / f"{name}-{side}px-{vocab_size or 'bpe'}"
        if not (d / "model.safetensors").exists():
            config = tiny_config("qwen2-vl", tok, TinyPolicySpec(**BENCH_SPEC))
            if vocab_size:
                config.text_config.vocab_size = vocab_size
            torch.manual_seed(seed)
            Qwen2VLForConditionalGeneration(config).float().save_pretrained(str(d))
            size = {"shortest_edge": side * side, "longest_edge": side * side}
            Qwen2VLProcessor(
                image_processor=Qwen2VLImageProcessor(size=size),
                tokenizer=tok,
                video_processor=Qwen2VLVideoProcessor(size=size),
                chat_template=tok.chat_template,
            ).save_pretrained(str(d))
        paths[name] = str(d)
    return paths


def make_pairs(n_queries: int, seed: int = 0) -> list[dict]:
    """Shapes-world queries, 4 simulated responses each, all 6 pairs ranked by the oracle."""
    from mmrlhf_ray.toyworld import make_row, oracle_annotate, simulated_responses

    rows = []
    models = ["sim-strong", "sim-medium", "sim-weak", "sim-unsafe"]
    for q in range(n_queries):
        pool = make_row(
            "bench-dpo", seed, q, category=("long", "short", "mcq")[q % 3], size=IMAGE_SIZE
        )
        resps = [
            {
                "response_id": f"q{q}-{m}",
                "model": m,
                "text": simulated_responses(pool, m, 1, seed)[0],
            }
            for m in models
        ]
        rec = oracle_annotate(pool, resps, seed, tie_rule=False)
        order = sorted(range(4), key=lambda i: (rec["responses"][i]["rank"], i))
        for a in range(4):
            for b in range(a + 1, 4):
                c, r = rec["responses"][order[a]], rec["responses"][order[b]]
                rows.append(
                    {
                        "pair_id": f"q{q}-{a}{b}",
                        "query_id": f"q{q}",
                        "question": pool["question"],
                        "image": pool["image"],
                        "chosen": c["text"],
                        "rejected": r["text"],
                        "chosen_id": c["response_id"],
                        "rejected_id": r["response_id"],
                        "margin": 1.0,
                    }
                )
    return rows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ variants ----------
def _load(path: str):
    from mmrlhf_ray.models import load_policy
    from mmrlhf_ray.training.freeze import freeze_vision

    model, processor = load_policy(path)
    freeze_vision(model)
    return model, processor


def run_ours(
    paths: dict,
    rows: list[dict],
    steps: int,
    qps: int,
    online: bool,
    forward: str = "grouped",
    max_response_tokens: int = 256,
    warmup: int = 1,
) -> dict:
    """Our loop: grouped (or packed) forward, frozen tower, reference precomputed (or online)."""
    from mmrlhf_ray.data.groups import group_pairs
    from mmrlhf_ray.dpo.batching import encode_group
    from mmrlhf_ray.dpo.config import LossConfig
    from mmrlhf_ray.dpo.objective import LossState, preference_loss
    from mmrlhf_ray.dpo.packed import collate_batch, forward_logps
    from mmrlhf_ray.dpo.reference import reference_logps

    model, processor = _load(paths["policy"])
    ref_model, _ = _load(paths["reference"] if online else paths["policy"])
    groups, _ = group_pairs(rows)
    t0, c0 = time.perf_counter(), time.process_time()
    if not online:  # precompute once: one forward per unique response
        scored = {
            (s["query_id"], s["response_id"]): s["ref_logp"]
            for i in range(0, len(groups), qps)
            for s in reference_logps(
                ref_model, processor, groups[i : i + qps], max_response_tokens, forward=forward
            )
        }
        for g in groups:
            g.ref_logps = [scored[(g.query_id, r)] for r in g.response_ids]
        del ref_model
    precompute_s, precompute_cpu = time.perf_counter() - t0, time.process_time() - c0
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    cfg = LossConfig(kind="mm_dpo", w=0.0, sft_weight=0.0)  # plain DPO, as TRL computes it
    state, times, cpu, pairs = LossState(), [], [], 0
    for step in range(steps + warmup):
        t, c = time.perf_counter(), time.process_time()
        chunk = [groups[(step * qps + j) % len(groups)] for j in range(qps)]
        batch = collate_batch(
            [encode_group(processor, g, max_response_tokens) for g in chunk],
            processor.tokenizer.pad_token_id,
            forward,
        )
        logps, n_tok = forward_logps(model, batch)
        ref = batch.ref_logps
        if online:
            with torch.no_grad():
                ref = forward_logps(ref_model, batch)[0]
        loss, _, _ = preference_loss(cfg, logps, n_tok, batch, ref, state)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= warmup:  # step 0 is warm-up
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            pairs += batch.n_pairs
    name = "ours" if forward == "grouped" else forward
    return _figures(
        name + ("-online-ref" if online else ""),
        pairs,
        times,
        cpu,
        len(rows),
        precompute_s,
        precompute_cpu,
    )


def _figures(
    variant: str,
    pairs: int,
    wall: list,
    cpu: list,
    n_rows: int,
    pre_wall: float = 0.0,
    pre_cpu: float = 0.0,
) -> dict:
    """Pairs per wall second and per CPU second (the latter is robust on a shared box),
    and per CPU second over one epoch of ``n_rows`` pairs including the precompute."""
    per_cpu = pairs / sum(cpu)
    return {
        "variant": variant,
        "pairs_per_s": pairs / sum(wall),
        "pairs_per_cpu_s": per_cpu,
        "step_s": sum(wall) / len(wall),
        "step_cpu_s": sum(cpu) / len(cpu),
        "precompute_s": pre_wall,
        "precompute_cpu_s": pre_cpu,
        "epoch_pairs_per_cpu_s": n_rows / (pre_cpu + n_rows / per_cpu),
        "peak_rss_mb": peak_rss_mb(),
        "pairs_per_step": pairs / len(wall),
    }


def _trl_trainer(
    paths: dict, rows: list[dict], steps: int, batch_pairs: int, ref_path: str, warmup: int = 1
):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from mmrlhf_ray.data.media import decode_image
    from mmrlhf_ray.data.prompts import chat_messages

    model, processor = _load(paths["policy"])
    ref_model, _ = _load(ref_path)
    # Non-conversational rows with our exact prompt text, and completions closed by
    # <|im_end|> as our encoding closes them (TRL's vision collator does not add the eos
    # itself), so both sides score exactly the same tokens.
    prompt = {
        r["query_id"]: processor.apply_chat_template(
            chat_messages(r["question"], 1), add_generation_prompt=True, tokenize=False
        )
        for r in rows
    }
    eos = processor.tokenizer.eos_token
    data = Dataset.from_list(
        [
            {
                "images": [decode_image(r["image"])],
                "prompt": prompt[r["query_id"]],
                "chosen": r["chosen"] + eos,
                "rejected": r["rejected"] + eos,
            }
            for r in rows
        ]
    )
    args = DPOConfig(
        output_dir="/tmp/dpo_vs_trl_out",
        per_device_train_batch_size=batch_pairs,
        max_steps=steps + warmup,
        learning_rate=1e-5,
        beta=0.1,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
        max_length=None,
        use_cpu=True,
        seed=0,
    )
    return DPOTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=data, processing_class=processor
    )


def run_trl(paths: dict, rows: list[dict], steps: int, batch_pairs: int, warmup: int = 1) -> dict:
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, args, state, control, **kw):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append((time.perf_counter() - self.t, time.process_time() - self.c))

    trainer = _trl_trainer(paths, rows, steps, batch_pairs, paths["policy"], warmup)
    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    times = clock.times[warmup:]  # step 0 is warm-up
    return _figures(
        "trl", batch_pairs * len(times), [t for t, _ in times], [c for _, c in times], len(rows)
    )


def step0_check(paths: dict, rows: list[dict]) -> dict:
    """TRL's loss and ours (w = 0) on the same 6-pair batch, reference == policy and != policy."""
    from mmrlhf_ray.data.groups import group_pairs
    from mmrlhf_ray.dpo.batching import collate_groups, encode_group
    from mmrlhf_ray.dpo.forward import grouped_logps
    from mmrlhf_ray.dpo.losses import mm_dpo_loss

    batch_rows = rows[:6]
    out = {}
    for label, ref_path in (
        ("ref_equals_policy", paths["policy"]),
        ("ref_differs", paths["reference"]),
    ):
        trainer = _trl_trainer(paths, batch_rows, 1, 6, ref_path)
        inputs = trainer.data_collator([dict(trainer.train_dataset[i]) for i in range(6)])
        with torch.no_grad():
            trl_loss = float(trainer.compute_loss(trainer.model, inputs))
            groups, _ = group_pairs(batch_rows)
            processor = trainer.processing_class
            batch = collate_groups(
                [encode_group(processor, g) for g in groups], processor.tokenizer.pad_token_id
            )
            pol = grouped_logps(trainer.model, batch)[0]
            ref = grouped_logps(trainer.ref_model, batch)[0]
            ci, ri = batch.chosen_idx, batch.rejected_idx
            ours = float(
                mm_dpo_loss(pol[ci], pol[ri], ref[ci], ref[ri], batch.margins, 0.1, w=0.0)[0].mean()
            )
        out[label] = {"trl": trl_loss, "ours": ours, "abs_diff": abs(trl_loss - ours)}
    return out


def _child(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    paths = build_models(Path(args.workdir))
    rows = make_pairs(args.queries)
    qps = args.queries_per_step
    if args.variant == "check":
        result = step0_check(paths, rows)
    elif args.variant == "trl":
        result = run_trl(paths, rows, args.steps, 6 * qps)
    else:
        result = run_ours(paths, rows, args.steps, qps, online=args.variant == "ours-online-ref")
    print("RESULT " + json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--variant", default="all", choices=["all", "check", "trl", "ours", "ours-online-ref"]
    )
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    ap.add_argument("--queries-per-step", type=int, default=2, help="queries per step (x6 pairs)")
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/dpo_vs_trl")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    if args.variant != "all":
        return _child(args)
    build_models(Path(args.workdir))
    results = {}
    for variant in ("check", "trl", "ours", "ours-online-ref"):
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--steps",
            str(args.steps),
            "--queries-per-step",
            str(args.queries_per_step),
            "--queries",
            str(args.queries),
            "--threads",
            str(args.threads),
            "--workdir",
            args.workdir,
        ]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-4000:]}")
        results[variant] = json.loads(line[0][7:])
        print(variant, json.dumps(results[variant], indent=1), flush=True)
    trl, ours = results["trl"], results["ours"]
    results["speedup_pairs_per_s"] = ours["pairs_per_s"] / trl["pairs_per_s"]
    results["speedup_pairs_per_cpu_s"] = ours["pairs_per_cpu_s"] / trl["pairs_per_cpu_s"]
    results["speedup_epoch_cpu"] = ours["epoch_pairs_per_cpu_s"] / trl["epoch_pairs_per_cpu_s"]
    results["speedup_online_ref_cpu"] = (
        results["ours-online-ref"]["pairs_per_cpu_s"] / trl["pairs_per_cpu_s"]
    )
    results["memory_ratio"] = ours["peak_rss_mb"] / trl["peak_rss_mb"]
    from mmrlhf_ray.models import load_policy

    model, _ = load_policy(str(Path(args.workdir) / "policy"))
    results["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
