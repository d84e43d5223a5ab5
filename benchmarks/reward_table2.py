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

    .venv/bin/python -m benchmarks.reward_table2 --queries 200 --epochs 3 --out runs/bench-reward
    .venv/bin/python -m benchmarks.reward_table2 --queries 200 --epochs 3 --seeds 0 1 2

``--light``: the same four Table 2 columns (score only, human reasons, expanded
critiques, ground-truth critiques at inference) over ``--seeds`` (a fresh query split
and initialisation per seed), on today's pairs and on subtle pairs (``toy_pairs(...,
subtle=True)``: one attribute wrong inside the same long frame), with a reward model
small enough to train 40 times in minutes: phi(x, y) = [bag of response words, response
words x query words] (the query's words = the question and the ground-truth answer,
standing in for the image); a critique head (softmax over critique words, Task 1 =
its NLL on the human or expanded critique); score = v . phi + u . c, c the critique's
word distribution (teacher-forced in training; at inference the head's own
distribution, or the ground-truth critique). Intervals over seeds (``mmrlhf_ray.evaluation.stats``),
each variant paired with score-only.

    nice -n 10 .venv/bin/python -m benchmarks.reward_table2 --light --queries 200 --out /tmp/t2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from jobs import train_reward
from mmrlhf_ray.core.stage import StageDir
from mmrlhf_ray.data.schemas import to_table
from mmrlhf_ray.evaluation.reward_bench import acc_table, format_table, paired_acc, score_pairs
from mmrlhf_ray.models import build_all
from mmrlhf_ray.reward.data import pairs_from_rows, split_pairs
from mmrlhf_ray.reward.model import load_reward_model, new_reward_model
from mmrlhf_ray.reward.toy import toy_pairs

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
    from mmrlhf_ray.evaluation.outcomes import seed_summary
    from mmrlhf_ray.evaluation.stats import with_holm

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
    from mmrlhf_ray.evaluation.stats import Estimate, PairedDiff, describe, fmt

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
    ap.add_argument(
        "--seeds", type=int, nargs="+", help="model seeds (default: 0; with --light: 0 1 2 3 4)"
    )
    ap.add_argument("--out", default="runs/bench-reward")
    ap.add_argument(
        "--light",
        action="store_true",
        help="the seeded ablation with a bag-of-words critique reward model (minutes)",
    )
    ap.add_argument("--light-steps", type=int, default=300)
    ap.add_argument("--light-lr", type=float, default=0.05)
    ap.add_argument(
        "--plot", default=str(Path(__file__).resolve().parents[1] / "docs/img/table2_ablation.png")
    )
    args = ap.parse_args()
    if args.light:
        args.seeds = args.seeds or [0, 1, 2, 3, 4]
        return light_main(args)
    args.seeds = args.seeds or [0]
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


# ---- the light ablation: Table 2 over seeds, on today's pairs and on subtle pairs -------
LIGHT_VARIANTS = (  # name, critique source, critique weight, inference critique
    ("score only (w/o Task 1)", "none", 0.0, "none"),
    ("human reasons (w/o enhanced)", "human", 1.0, "generate"),
    ("expanded critiques (MM-RLHF-Reward)", "expanded", 1.0, "generate"),
    ("expanded, GT critique at inference", "expanded", 1.0, "given"),
)


def _bag(text: str, vocab: dict, grow: bool = True) -> list[int]:
    import re

    ids = []
    for w in re.findall(r"[a-z0-9]+", (text or "").lower()):
        if w not in vocab and grow:
            vocab[w] = len(vocab)
        if w in vocab:
            ids.append(vocab[w])
    return ids


def light_data(rows: list[dict]) -> dict:
    """Per response: bag of its words, of its query (question + the ground-truth answer,
    standing in for the image), and of its human / expanded critique."""
    resp, query, crit = {}, {}, {}
    items, pairs, index, qx, qnum = [], [], {}, {}, {}
    for r in rows:
        q = r["query_id"]
        if q not in qnum:  # a query's first pair has its best response as chosen
            qnum[q] = len(qnum)
            qx[q] = _bag(r["question"], query) + _bag(_reference(r), query)
        for side in ("chosen", "rejected"):
            key = (q, r[f"{side}_id"])
            if key not in index:
                index[key] = len(items)
                items.append(
                    {
                        "q": qnum[q],
                        "y": _bag(r[side], resp),
                        "x": qx[q],
                        "human": _bag(r[f"{side}_reason"], crit),
                        "expanded": _bag(r[f"{side}_critique"], crit),
                    }
                )
        pairs.append((qnum[q], index[(q, r["chosen_id"])], index[(q, r["rejected_id"])]))
    return {"items": items, "pairs": pairs, "V": len(resp), "F": len(query), "C": len(crit)}


def _reference(row: dict) -> str:
    """The ground-truth answer of a toy pair: the expanded critique of its correct side
    states it (``... the image: <reference> ...``); else the chosen text."""
    crit = row.get("chosen_critique") or ""
    return crit.split(": ", 1)[1] if ": " in crit else row.get("chosen") or ""


def _dense(items: list[dict], key: str, size: int):
    import torch

    m = torch.zeros(len(items), size, dtype=torch.float32)
    for i, it in enumerate(items):
        for w in it[key]:
            m[i, w] += 1.0
    return m / m.sum(-1, keepdim=True).clamp(min=1)


class LightCritiqueRM:
    """phi(x, y) = [y, y (x) x]; critique head softmax(W phi) over critique words; score
    r = v . phi + u . c, with c the critique's word distribution (teacher-forced in
    training; at inference the head's own distribution, or the given critique)."""

    def __init__(self, d: dict, seed: int):
        import torch

        g = torch.Generator().manual_seed(seed)
        Y, X = _dense(d["items"], "y", d["V"]), _dense(d["items"], "x", d["F"])
        self.phi = torch.cat([Y, (Y[:, :, None] * X[:, None, :]).flatten(1)], dim=1)
        P = self.phi.shape[1]
        self.crit = {k: _dense(d["items"], k, d["C"]) for k in ("human", "expanded")}
        self.v = (0.01 * torch.randn(P, generator=g, dtype=torch.float32)).requires_grad_()
        self.W = (0.01 * torch.randn(d["C"], P, generator=g, dtype=torch.float32)).requires_grad_()
        self.u = torch.zeros(d["C"], dtype=torch.float32, requires_grad=True)

    def params(self):
        return [self.v, self.W, self.u]

    def scores(self, idx, source: str, mode: str):
        import torch

        base = self.phi[idx] @ self.v
        if source == "none":
            return base, None
        logits = self.phi[idx] @ self.W.T
        if mode == "given" or mode == "teacher":
            c = self.crit[source][idx]
        else:
            c = torch.softmax(logits, -1)
        nll = -(self.crit[source][idx] * torch.log_softmax(logits, -1)).sum(-1).mean()
        return base + c @ self.u, nll


def light_run(d: dict, train_idx, held_idx, source: str, w_c: float, mode: str, seed: int, args):
    """Train one variant on the training pairs; (ACC, ACC+) on the held-out pairs."""
    import random as _random

    import torch

    model = LightCritiqueRM(d, seed)
    opt = torch.optim.Adam(model.params(), lr=args.light_lr, weight_decay=1e-4)
    pairs = [d["pairs"][i] for i in train_idx]
    rng = _random.Random(seed)
    for _ in range(args.light_steps):
        batch = rng.sample(pairs, min(32, len(pairs)))
        c = torch.tensor([p[1] for p in batch])
        r = torch.tensor([p[2] for p in batch])
        sc, nc = model.scores(c, source, "teacher")
        sr, nr = model.scores(r, source, "teacher")
        loss = -torch.nn.functional.logsigmoid(sc - sr).mean()
        if nc is not None:
            loss = loss + w_c * 0.5 * (nc + nr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held = [d["pairs"][i] for i in held_idx]
    with torch.no_grad():
        sc, _ = model.scores(torch.tensor([p[1] for p in held]), source, mode)
        sr, _ = model.scores(torch.tensor([p[2] for p in held]), source, mode)
    right = (sc > sr).numpy()
    by_q: dict[int, bool] = {}
    for p, ok in zip(held, right, strict=True):
        by_q[p[0]] = by_q.get(p[0], True) and bool(ok)
    return float(right.mean()), float(sum(by_q.values()) / len(by_q))


def light_main(args) -> int:
    """Table 2's four columns x seeds x two pair sets; intervals over seeds, each variant
    paired with score-only (same split, same batches per seed)."""
    import random as _random

    from mmrlhf_ray.evaluation import stats

    sets = {
        "today (toy_pairs)": toy_pairs(args.queries, seed=0),
        "subtle (one attribute wrong in a long frame)": toy_pairs(args.queries, 0, subtle=True),
    }
    out = {}
    for set_name, rows in sets.items():
        d = light_data(rows)
        n_q = len({p[0] for p in d["pairs"]})
        res = {name: {"acc": [], "acc_plus": []} for name, *_ in LIGHT_VARIANTS}
        for seed in args.seeds:
            held_q = set(_random.Random(seed).sample(range(n_q), int(n_q * args.heldout)))
            tr = [i for i, p in enumerate(d["pairs"]) if p[0] not in held_q]
            he = [i for i, p in enumerate(d["pairs"]) if p[0] in held_q]
            for name, source, w_c, mode in LIGHT_VARIANTS:
                acc, acc_plus = light_run(d, tr, he, source, w_c, mode, seed, args)
                res[name]["acc"].append(acc), res[name]["acc_plus"].append(acc_plus)
        base = LIGHT_VARIANTS[0][0]
        summary = {}
        for name in res:
            row = {k: stats.over_seeds(v).to_dict() for k, v in res[name].items()}
            if name != base:
                for k in ("acc", "acc_plus"):
                    row[f"{k}_vs_score_only"] = stats.paired_over_seeds(
                        res[base][k], res[name][k]
                    ).to_dict()
            summary[name] = row
        out[set_name] = {
            "pairs": len(d["pairs"]),
            "queries": n_q,
            "heldout_queries": int(n_q * args.heldout),
            "per_seed": res,
            "summary": summary,
        }
        print(f"{set_name}: {len(d['pairs'])} pairs, {n_q} queries", flush=True)
        for name, row in summary.items():
            line = f"  {name}: ACC {stats.fmt(stats.Estimate.from_dict(row['acc']))}"
            line += f"; ACC+ {stats.fmt(stats.Estimate.from_dict(row['acc_plus']))}"
            if "acc_vs_score_only" in row:
                d_acc = stats.PairedDiff.from_dict(row["acc_vs_score_only"])
                line += f"; ACC vs score only {stats.fmt(d_acc)}"
            print(line)
    base_dir = Path(args.out)
    base_dir.mkdir(parents=True, exist_ok=True)
    (base_dir / "table2_light.json").write_text(
        json.dumps({"args": vars(args), "sets": out}, indent=1)
    )
    light_plot(out, Path(args.plot))
    return 0


def light_plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, (set_name, res) in zip(axes, out.items(), strict=True):
        names = list(res["summary"])
        for j, key in enumerate(("acc", "acc_plus")):
            ests = [res["summary"][n][key] for n in names]
            x = np.arange(len(names)) + (j - 0.5) * 0.35
            y = np.array([e["value"] for e in ests])
            err = [y - [e["low"] for e in ests], [e["high"] for e in ests] - y]
            ax.bar(x, y, 0.35, yerr=err, capsize=3, label="ACC" if j == 0 else "ACC+")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=7)
        ax.set_title(
            f"{set_name}\n{res['pairs']} pairs; mean, 95% t interval over seeds", fontsize=9
        )
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
