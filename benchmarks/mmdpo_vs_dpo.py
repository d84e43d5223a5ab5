"""Shapes world: MM-DPO (dynamic reward scaling) vs plain DPO from the same SFT policy.

For each seed, both losses train the same base policy on the same pairs, in the same
order, with the same hyperparameters (only w differs: 0.5 for MM-DPO, 0 for DPO), then
are scored on held-out pairs (implicit-reward preference accuracy) and on the toy
benchmark (greedy generation: accuracy, CHAIR_i hallucination, refusals on harmful and
on benign requests). Reports, through ``mmrlhf_ray.outcomes`` / ``mmrlhf_ray.stats``,
two kinds of uncertainty and says which is which: per seed, each metric with a 95%
bootstrap interval over the items (held-out pairs clustered by query, benchmark items)
and the paired item-level tests base → dpo → mm_dpo (item variance); over the seeds, the
mean with a Student-t interval and the paired t of mm_dpo against dpo seed by seed (seed
variance, the items fixed). Holm across each family. A difference whose interval holds 0
is printed as no difference, whichever way it points.

Inputs, two ways:

* ``--run-dir runs/demo`` (the issue's setting): the pipeline's SFT policy
  (``sft/policy``) and its scored pairs (``score``: oracle-ranked pairs of the generated
  responses, ``margin = r(chosen) - r(rejected)`` from the trained reward model through
  the reward service, ``margin_source = reward-service``);
* without it: a tiny policy warmed up in-process on toy-world reference answers and
  pairs from four simulated models annotated by the oracle (``margin_source = oracle``:
  the annotator's score difference stands in for the reward model's margin).

The training loop is the in-process one (same objective code as ``train-dpo``, without
Ray Train / DeepSpeed, so six runs fit on a 2-core box).

    .venv/bin/python benchmarks/mmdpo_vs_dpo.py --seeds 0 1 2 --run-dir runs/demo --json /tmp/m.json
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mmrlhf_ray.dpo.batching import collate_groups, encode_group  # noqa: E402
from mmrlhf_ray.dpo.config import LossConfig  # noqa: E402
from mmrlhf_ray.dpo.evaluate import preference_metrics, response_scores  # noqa: E402
from mmrlhf_ray.dpo.forward import grouped_logps  # noqa: E402
from mmrlhf_ray.dpo.objective import LossState, preference_loss  # noqa: E402
from mmrlhf_ray.groups import group_pairs, split_groups  # noqa: E402
from mmrlhf_ray.models import build_all, load_policy, sft_loss  # noqa: E402
from mmrlhf_ray.training.freeze import freeze_vision  # noqa: E402

BENCH_KEYS = (
    "overall_accuracy",
    "short_accuracy",
    "mcq_accuracy",
    "long_accuracy",
    "chair_i",
    "refusal_harmful",
    "unsafe_rate",
    "refusal_benign",
)


def sft_policy(work: Path, n_rows: int, steps: int) -> str:
    """A weak but working base policy: tiny Qwen2-VL + SFT on reference answers (cached)."""
    from mmrlhf_ray.toyworld import generate_pool
    from mmrlhf_ray.training.sft import collate_sft, encode_sft_example, prepare_sft_rows

    out = work / "sft"
    if (out / "model.safetensors").exists():
        return str(out)
    paths = build_all(str(work / "models"), seed=0)
    model, processor = load_policy(paths["policy"])
    freeze_vision(model)
    examples, _ = prepare_sft_rows(generate_pool(n_rows, seed=0), "toyworld")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    rng = random.Random(0)
    model.train()
    for step in range(steps):
        batch = collate_sft(
            [encode_sft_example(e, processor) for e in rng.sample(examples, 8)], processor
        )
        loss, _ = sft_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"sft step {step} loss {float(loss):.3f}", flush=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return str(out)


def simulated_pairs(n_queries: int, seed: int = 7) -> list[dict]:
    """All differing-rank pairs of 4 simulated responses per query, oracle margins."""
    from mmrlhf_ray.pairs import expand_record
    from mmrlhf_ray.toyworld import SIMULATED_MODELS, make_row, simulated_record

    rows, index = [], 0
    mix = {"long": 0.25, "short": 0.35, "mcq": 0.2, "safety": 0.2}
    while len({r["query_id"] for r in rows}) < n_queries:
        try:
            pool = make_row("dpo", seed, index, mix)
        except ValueError:
            index += 1
            continue
        record = simulated_record(pool, list(SIMULATED_MODELS), 1, seed)
        rows += expand_record(record, mode="all", tie_rule="constructed", margin="oracle")[0]
        index += 1
    return rows


def run_dir_inputs(run_dir: str) -> tuple[str, list[dict]]:
    """The pipeline's SFT policy and its reward-scored pairs."""
    from mmrlhf_ray.dpo.io import resolve_policy
    from mmrlhf_ray.stage import require_done

    return resolve_policy(run_dir, ""), require_done(run_dir, "score").read().to_pylist()


def reference_logps(policy: str, groups) -> None:
    """Fill each group's reference log-probs with the base policy's (once per response)."""
    model, processor = load_policy(policy)
    scores = response_scores(model, processor, groups)
    for g in groups:
        g.ref_logps = [scores[(g.query_id, r)][0] for r in g.response_ids]


def train(
    base,
    processor,
    groups,
    kind_w: float,
    seed: int,
    steps: int,
    qps: int,
    lr: float,
    sft_weight: float,
):
    """One in-process MM-DPO (w > 0) or DPO (w = 0) run; returns the trained model."""
    torch.manual_seed(seed)
    model = copy.deepcopy(base).train()
    freeze_vision(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    cfg, state = LossConfig(kind="mm_dpo", w=kind_w, sft_weight=sft_weight), LossState()
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    for step in range(steps):
        chunk = [groups[order[(step * qps + j) % len(order)]] for j in range(qps)]
        batch = collate_groups(
            [encode_group(processor, g) for g in chunk], processor.tokenizer.pad_token_id
        )
        logps, n_tok = grouped_logps(model, batch)
        loss, _, _ = preference_loss(cfg, logps, n_tok, batch, batch.ref_logps, state)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval()


def evaluate(model, processor, held, bench_rows, label: str) -> tuple[dict, list[dict]]:
    """Point metrics and the per-item outcome rows (held-out pairs + benchmark items)."""
    from mmrlhf_ray.dpo.evaluate import pair_outcomes
    from mmrlhf_ray.evaluation import policy_items
    from mmrlhf_ray.toyworld import benchmark_metrics
    from mmrlhf_ray.training.sft import answer_benchmark

    scores = response_scores(model, processor, held)
    out = preference_metrics(held, scores, None)
    answers = answer_benchmark(model, processor, bench_rows, 4, 48, "bench")
    bench = benchmark_metrics(list(bench_rows), answers)
    out.update({k: bench.get(k) for k in BENCH_KEYS})
    by_id = {r["sample_id"]: a for r, a in zip(bench_rows, answers, strict=True)}
    items = pair_outcomes(held, scores, None, 0.1, label) + policy_items(label, bench_rows, by_id)
    return out, items


def summarise(runs: dict[str, list[dict]], items: list[dict], seeds: list[int]) -> dict:
    """Item-level intervals and paired tests per seed, and mean / t-interval over seeds."""
    from mmrlhf_ray.outcomes import item_table, seed_summary, summarize

    pairs = []
    for s in seeds:
        pairs += [("base", f"dpo@seed{s}"), (f"dpo@seed{s}", f"mm_dpo@seed{s}")]
    keys = ["implicit_accuracy", "dpo_loss", *BENCH_KEYS]
    return {
        "per_seed_items": summarize(item_table(items), pairs),
        "over_seeds": seed_summary(
            {m: runs[m] for m in ("dpo", "mm_dpo")}, keys, [("dpo", "mm_dpo")]
        ),
    }


def print_summary(summary: dict) -> None:
    from mmrlhf_ray.stats import Estimate, PairedDiff, describe, fmt

    lower = {"dpo_loss", "chair_i", "unsafe_rate", "refusal_benign"}
    seeds = summary["over_seeds"]
    print("over seeds (interval: seed variance only, items fixed):")
    for method, metrics in seeds["intervals"].items():
        for metric, est in metrics.items():
            print(f"  {method} {metric}: {fmt(Estimate.from_dict(est))}")
    for pair, metrics in seeds["comparisons"].items():
        for metric, d in metrics.items():
            print(f"  {pair}: {describe(metric, PairedDiff.from_dict(d), metric not in lower)}")
    print("per seed, paired on the same items (interval: item variance):")
    for bench, pairs in summary["per_seed_items"]["comparisons"].items():
        for pair, metrics in pairs.items():
            for metric in ("implicit_accuracy", "overall_accuracy"):
                if metric in metrics:
                    d = PairedDiff.from_dict(metrics[metric])
                    print(f"  {bench} {pair}: {describe(metric, d, metric not in lower)}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--queries-per-step", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--sft-weight", type=float, default=0.1)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--bench", type=int, default=60)
    ap.add_argument("--workdir", default="/tmp/mmdpo_vs_dpo")
    ap.add_argument(
        "--run-dir", default="", help="read the SFT policy and scored pairs of a pipeline run"
    )
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    work = Path(args.workdir)
    if args.run_dir:
        policy, rows = run_dir_inputs(args.run_dir)
    else:
        policy, rows = sft_policy(work, 1200, args.sft_steps), simulated_pairs(args.queries)
    groups, bad = group_pairs(rows, need_margin=True)
    if args.run_dir and args.queries:
        groups = groups[: args.queries]
    train_groups, held = split_groups(groups, 0.2, seed=0)
    reference_logps(policy, groups)
    from mmrlhf_ray.toyworld import benchmark_split

    bench_rows = benchmark_split(args.bench, seed=0)
    base, processor = load_policy(policy)
    first, items = evaluate(base, processor, held, bench_rows, "base")
    results = {"base": [first], "mm_dpo": [], "dpo": []}
    print("base", results["base"][0], flush=True)
    for seed in args.seeds:
        for method, w in (("mm_dpo", 0.5), ("dpo", 0.0)):
            model = train(
                base,
                processor,
                train_groups,
                w,
                seed,
                args.steps,
                args.queries_per_step,
                args.lr,
                args.sft_weight,
            )
            metrics, rows = evaluate(model, processor, held, bench_rows, f"{method}@seed{seed}")
            results[method].append(metrics)
            items += rows
            print(method, seed, results[method][-1], flush=True)
    margins = [p.margin for g in train_groups for p in g.pairs]
    summary = {
        "summary": summarise(results, items, args.seeds),
        "runs": results,
        "args": vars(args),
        "pairs": {
            "train": sum(len(g.pairs) for g in train_groups),
            "heldout": sum(len(g.pairs) for g in held),
            "quarantined": len(bad),
            "train_queries": len(train_groups),
            "margin_source": sorted({str(r.get("margin_source")) for r in rows}),
            "margin_min": min(margins),
            "margin_max": max(margins),
            "negative_margins": sum(m < 0 for m in margins),
            "policy": policy,
        },
        "wall_s": round(time.time() - t0, 1),
    }
    print_summary(summary["summary"])
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
