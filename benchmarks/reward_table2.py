"""Table 2 on the shapes world: held-out ACC / ACC+ per category of the tiny critique
reward model vs an untrained one and vs the paper's ablations.

Builds the tiny models and toy preference pairs (``mmrlhf_ray.reward.toy``), then runs
``mmrlhf train-reward`` (Ray Train + DeepSpeed ZeRO-2, 2 CPU workers) three times on
the same train split: expanded critiques (the full method), human (short) critiques
("w/o enhanced annotations") and score-only ("w/o Task 1"), and scores the same
held-out queries in Table 2's inference modes. Prints the table (shaped like Table 2,
each ACC / ACC+ with its 95% interval over held-out queries) and writes the raw numbers
to ``<out>/table2.json`` (copied into docs/BENCHMARKS.md). Every variant is also compared
with the untrained model on the same held-out pairs (paired, clustered by query: item
variance); with ``--seeds`` 0 1 2 every model (the untrained one too) is rebuilt per seed
and the overall ACC / ACC+ get a mean and Student-t interval over the seeds and a paired
t against the untrained model (seed variance, the pairs fixed). Holm across each family.

    .venv/bin/python benchmarks/reward_table2.py --queries 200 --epochs 3 --out runs/bench-reward
    .venv/bin/python benchmarks/reward_table2.py --queries 200 --epochs 3 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from jobs import train_reward  # noqa: E402
from mmrlhf_ray.models import build_all  # noqa: E402
from mmrlhf_ray.reward.bench import acc_table, format_table, paired_acc, score_pairs  # noqa: E402
from mmrlhf_ray.reward.data import pairs_from_rows, split_pairs  # noqa: E402
from mmrlhf_ray.reward.model import load_reward_model, new_reward_model  # noqa: E402
from mmrlhf_ray.reward.toy import toy_pairs  # noqa: E402
from mmrlhf_ray.schemas import to_table  # noqa: E402
from mmrlhf_ray.stage import StageDir  # noqa: E402

UNTRAINED = "untrained (none)"
VARIANTS = {  # name -> (run slug, critique_source, critique weight, inference modes)
    "w/o Task 1 (score only)": ("score-only", "none", 0.0, ["none"]),
    "w/o enhanced annotations (human reasons)": ("human", "human", 1.0, ["generate"]),
    "MM-RLHF-Reward (expanded critiques)": (
        "expanded",
        "expanded",
        1.0,
        ["generate", "none", "given"],
    ),
}


def write_pairs(run: Path, queries: int, seed: int) -> None:
    stage = StageDir(str(run), "pairs")
    if stage.is_done():
        return
    rows = toy_pairs(queries, seed=seed)
    stage.begin({"toy_pairs": queries, "seed": seed})
    stage.write_part("part-0", to_table(rows, "pair"))
    stage.finish(len(rows), len(rows), 0)


def heldout_pairs(run: Path, source: str, fraction: float):
    rows = StageDir(str(run), "pairs").read().to_pylist()
    good, _ = pairs_from_rows(rows, source)
    return split_pairs(good, fraction, 0)[1]


def run_variant(
    base: Path, slug: str, source: str, w_crit: float, args, policy: str, seed: int = 0
) -> str:
    run = base / (slug if seed == 0 else f"{slug}-seed{seed}")
    run.mkdir(parents=True, exist_ok=True)
    pairs_link = run / "pairs"
    if not pairs_link.exists():
        pairs_link.symlink_to((base / "data" / "pairs").resolve())
    argv = [
        f"run_dir={run}",
        f"backbone={policy}",
        f"critique_source={source}",
        f"loss.critique={w_crit}",
        f"epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"heldout_fraction={args.heldout}",
        "eval_mode=none",
        f"train.checkpoint_every={10**6}",
        f"seed={seed}",
    ]
    train_reward.main(argv)
    return str(run / "train-reward" / "model")


def score_variants(base: Path, args, policy: str, seed: int, held: dict) -> dict[str, list]:
    """{"<variant> [<mode>]": per-pair results} of every model trained with ``seed``."""
    results = {
        UNTRAINED: score_pairs(new_reward_model(policy, seed=seed).eval(), held["expanded"], "none")
    }
    for name, (slug, source, w_crit, modes) in VARIANTS.items():
        model = load_reward_model(run_variant(base, slug, source, w_crit, args, policy, seed))
        for mode in modes:
            pairs = held["human"] if source == "human" else held["expanded"]
            results[f"{name} [{mode}]"] = score_pairs(model, pairs, mode, 40)
            print(
                format_table(
                    {f"{name} [{mode}] seed {seed}": acc_table(results[f"{name} [{mode}]"])}
                ),
                flush=True,
            )
    return results


def compare(per_seed: dict[int, dict[str, list]]) -> dict:
    """Paired against the untrained model: per seed on the same pairs (item variance,
    clustered by query), and over the seeds (seed variance); Holm within each family."""
    from mmrlhf_ray.outcomes import seed_summary
    from mmrlhf_ray.stats import with_holm

    items = {}
    for seed, results in per_seed.items():
        for name, res in results.items():
            if name != UNTRAINED and [r.query_id for r in res] == [
                r.query_id for r in results[UNTRAINED]
            ]:
                items[f"seed {seed}: {UNTRAINED} \u2192 {name}|acc"] = paired_acc(
                    results[UNTRAINED], res
                )
    per_item = {k: d.to_dict() for k, d in with_holm(items).items()}
    runs: dict[str, list[dict]] = {}
    for results in per_seed.values():
        for name, res in results.items():
            overall = acc_table(res, resamples=200)["overall"]
            runs.setdefault(name, []).append(
                {"acc": overall["acc"], "acc_plus": overall["acc_plus"]}
            )
    pairs = [(UNTRAINED, name) for name in runs if name != UNTRAINED]
    return {"paired_items": per_item, "over_seeds": seed_summary(runs, ["acc", "acc_plus"], pairs)}


def print_comparisons(comparisons: dict) -> None:
    from mmrlhf_ray.stats import Estimate, PairedDiff, describe, fmt

    print("paired on the same held-out pairs (interval: item variance, clustered by query):")
    for key, d in comparisons["paired_items"].items():
        print(f"  {describe(key.rsplit('|', 1)[0] + ' ACC', PairedDiff.from_dict(d))}")
    seeds = comparisons["over_seeds"]
    if seeds["intervals"]:
        print("over seeds (interval: seed variance only, the pairs fixed):")
    for name, metrics in seeds["intervals"].items():
        for metric, est in metrics.items():
            print(f"  {name} {metric}: {fmt(Estimate.from_dict(est))}")
    for pair, metrics in seeds["comparisons"].items():
        for metric, d in metrics.items():
            print(f"  {describe(f'{pair} {metric}', PairedDiff.from_dict(d))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--heldout", type=float, default=0.25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="model seeds")
    ap.add_argument("--out", default="runs/bench-reward")
    args = ap.parse_args()
    torch.set_num_threads(1)  # shared 2-core host: one thread beats oversubscription
    base = Path(args.out).resolve()
    policy = build_all(str(base / "models"), seed=0)["policy"]
    write_pairs(base / "data", args.queries, seed=0)
    held = {s: heldout_pairs(base / "data", s, args.heldout) for s in ("expanded", "human")}
    start = time.time()
    per_seed = {seed: score_variants(base, args, policy, seed, held) for seed in args.seeds}
    tables = {
        (name if seed == args.seeds[0] else f"{name} seed {seed}"): acc_table(res)
        for seed, results in per_seed.items()
        for name, res in results.items()
    }
    comparisons = compare(per_seed)
    out = {"tables": tables, "comparisons": comparisons, "seeds": args.seeds}
    (base / "table2.json").write_text(json.dumps(out, indent=2))
    print(format_table(tables))
    print_comparisons(comparisons)
    print(f"reward_table2: {time.time() - start:.0f} s; raw numbers in {base / 'table2.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
