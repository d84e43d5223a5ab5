"""Table 2 on the shapes world: held-out ACC / ACC+ per category of the tiny critique
reward model vs an untrained one and vs the paper's ablations.

Builds the tiny models and toy preference pairs (``mmrlhf_ray.reward.toy``), then runs
``mmrlhf train-reward`` (Ray Train + DeepSpeed ZeRO-2, 2 CPU workers) three times on
the same train split: expanded critiques (the full method), human (short) critiques
("w/o enhanced annotations") and score-only ("w/o Task 1"), and scores the same
held-out queries in Table 2's inference modes. Prints the table (shaped like Table 2)
and writes the raw numbers to ``<out>/table2.json`` (copied into docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/reward_table2.py --queries 200 --epochs 3 --out runs/bench-reward
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
from mmrlhf_ray.core.stage import StageDir  # noqa: E402
from mmrlhf_ray.data.schemas import to_table  # noqa: E402
from mmrlhf_ray.evaluation.reward_bench import acc_table, format_table, score_pairs  # noqa: E402
from mmrlhf_ray.models import build_all  # noqa: E402
from mmrlhf_ray.reward.data import pairs_from_rows, split_pairs  # noqa: E402
from mmrlhf_ray.reward.model import load_reward_model, new_reward_model  # noqa: E402
from mmrlhf_ray.reward.toy import toy_pairs  # noqa: E402

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


def run_variant(base: Path, slug: str, source: str, w_crit: float, args, policy: str) -> str:
    run = base / slug
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
    ]
    train_reward.main(argv)
    return str(run / "train-reward" / "model")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--heldout", type=float, default=0.25)
    ap.add_argument("--out", default="runs/bench-reward")
    args = ap.parse_args()
    torch.set_num_threads(1)  # shared 2-core host: one thread beats oversubscription
    base = Path(args.out).resolve()
    policy = build_all(str(base / "models"), seed=0)["policy"]
    write_pairs(base / "data", args.queries, seed=0)
    held_exp = heldout_pairs(base / "data", "expanded", args.heldout)
    held_hum = heldout_pairs(base / "data", "human", args.heldout)
    tables, timings = {}, {}
    start = time.time()
    untrained = new_reward_model(policy, seed=0).eval()
    tables["untrained (none)"] = acc_table(score_pairs(untrained, held_exp, "none"))
    for name, (slug, source, w_crit, modes) in VARIANTS.items():
        t0 = time.time()
        model = load_reward_model(run_variant(base, slug, source, w_crit, args, policy))
        timings[name] = round(time.time() - t0, 1)
        for mode in modes:
            held = held_hum if source == "human" else held_exp
            tables[f"{name} [{mode}]"] = acc_table(score_pairs(model, held, mode, 40))
            print(format_table({k: tables[k] for k in list(tables)[-1:]}), flush=True)
    (base / "table2.json").write_text(json.dumps({"tables": tables, "train_s": timings}, indent=2))
    print(format_table(tables))
    print(f"reward_table2: {time.time() - start:.0f} s; raw numbers in {base / 'table2.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
