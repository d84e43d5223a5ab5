"""Does beta(delta) help under label noise? A designed experiment (issue 24, Build 1).

Dynamic Reward Scaling (paper Sec. 4.2) gives pairs the reward model separates
confidently a larger beta, hence a larger update, so unreliable (small-gap) pairs should
weigh less. This builds the condition where that must matter and measures it.

* Pairs: 4 simulated responses per shapes-world query (correct, one attribute wrong,
  hallucinated object, off-topic / refusal ...), ranked by the oracle; every pair of
  differing rank. The true quality gap g of a pair is the oracle's score difference.
* Label noise tied to the gap: pair i is flipped with probability min(1, a exp(-g_i / 0.5))
  (small gaps flip far more often), ``a`` set so the mean flip rate is the noise share
  (0 ... 40%). Flips are drawn once per (noise, seed); every method of that seed sees
  the same flips and the same batches.
* Margins delta, w.r.t. the noisy label: (a) oracle: +g on a clean pair, -g on a flipped
  one; (b) a reward model trained as the pipeline's is (Bradley-Terry on the same noisy
  training labels): r(y_w) - r(y_l), scaled to the oracle's mean |delta|.
* Policy (the part that is simplified, so 5 seeds x 5 noise levels x 7 methods fit a
  2-core box in minutes): a conditional word model, log pi(y|x) = sum over the words w of
  y of log softmax(b + U f(x))_w, where f(x) is the bag of words of the question and of
  the scene's ground-truth description (a stand-in for the vision tower). SFT = maximum
  likelihood on the reference answers; every method starts from that SFT policy, which
  is also the reference. The loss is the project's own (``preference_loss`` with the loss
  table's rows): DPO (MM-DPO w = 0), MM-DPO w = 0.5 / 1 with each margin, beta-DPO, SimPO.
* Outcome: held-out preference accuracy against the CLEAN labels (held-out pairs are
  never flipped): implicit reward h > 0 (SimPO: its own reward, the mean log-prob).
* Mechanism: each training pair's effective weight beta_i sigma(-beta_i h_i) (the factor
  that scales its gradient) at the end of training, flipped vs clean pairs.

Intervals: ``mmrlhf_ray.evaluation.stats`` over seeds (t); method vs DPO: paired t over seeds (same
flips, same batches), Holm over the comparisons of one noise level.

    nice -n 10 .venv/bin/python -m benchmarks.beta_noise --seeds 0 1 2 3 4 --out /tmp/beta_noise
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmrlhf_ray.annotate.pairs import expand_record
from mmrlhf_ray.dpo.batching import PairIndex
from mmrlhf_ray.dpo.config import LossConfig
from mmrlhf_ray.dpo.objective import LossState, preference_loss
from mmrlhf_ray.dpo.report import pair_betas
from mmrlhf_ray.evaluation import stats

ROOT = Path(__file__).resolve().parents[1]
METHODS = (  # name, loss kind, w, margin source
    ("DPO", "mm_dpo", 0.0, "oracle"),
    ("MM-DPO w=0.5 oracle δ", "mm_dpo", 0.5, "oracle"),
    ("MM-DPO w=1 oracle δ", "mm_dpo", 1.0, "oracle"),
    ("MM-DPO w=0.5 RM δ", "mm_dpo", 0.5, "rm"),
    ("MM-DPO w=1 RM δ", "mm_dpo", 1.0, "rm"),
    ("β-DPO", "beta_dpo", 0.0, "oracle"),
    ("SimPO", "simpo", 0.0, "oracle"),
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def build_data(n_queries: int, seed: int = 7) -> dict:
    """Queries (features), responses (word ids) and clean pairs (chosen better, gap g)."""
    from mmrlhf_ray.toyworld import SIMULATED_MODELS, make_row, simulated_record

    mix = {"long": 0.3, "short": 0.4, "mcq": 0.3}
    queries, index = [], 0
    while len(queries) < n_queries:
        try:
            row = make_row("beta-noise", seed, index, mix)
        except ValueError:
            index += 1
            continue
        index += 1
        record = simulated_record(row, list(SIMULATED_MODELS), 1, seed)
        pairs = expand_record(record, tie_rule="skip", margin="oracle")[0]
        if pairs:
            queries.append((row, record, pairs))
    vocab: dict[str, int] = {}
    feats: dict[str, int] = {}
    out = {"x": [], "responses": [], "resp_query": [], "pairs": [], "reference": []}
    for q, (row, record, pairs) in enumerate(queries):
        f = words(row["question"]) + ["gt_" + w for w in words(row.get("reference_answer") or "")]
        out["x"].append([feats.setdefault(w, len(feats)) for w in f])
        ids = {}
        for r in record["responses"]:
            ids[r["response_id"]] = len(out["responses"])
            out["responses"].append([vocab.setdefault(w, len(vocab)) for w in words(r["text"])])
            out["resp_query"].append(q)
        out["reference"].append(
            [vocab.setdefault(w, len(vocab)) for w in words(row.get("reference_answer") or "")]
        )
        for p in pairs:
            out["pairs"].append((q, ids[p["chosen_id"]], ids[p["rejected_id"]], p["margin"]))
    out["n_vocab"], out["n_feat"] = len(vocab), len(feats)
    return out


class WordPolicy(torch.nn.Module):
    """log pi(y|x) = sum_{w in y} log softmax(b + U f(x))_w (bag-of-words features f)."""

    def __init__(self, n_feat: int, n_vocab: int):
        super().__init__()
        self.U = torch.nn.Parameter(torch.zeros(n_vocab, n_feat, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros(n_vocab, dtype=torch.float64))

    def logps(self, X: torch.Tensor, Y: torch.Tensor, rq: torch.Tensor) -> torch.Tensor:
        """Per response: summed word log-probs. X (Q, F) features, Y (R, V) word counts."""
        logp = torch.log_softmax(self.b + X @ self.U.T, dim=-1)  # (Q, V)
        return (Y * logp[rq]).sum(-1)


def tensors(data: dict) -> dict:
    Q, R = len(data["x"]), len(data["responses"])
    X = torch.zeros(Q, data["n_feat"], dtype=torch.float64)
    for q, f in enumerate(data["x"]):
        X[q, f] = 1.0
    Y = torch.zeros(R, data["n_vocab"], dtype=torch.float64)
    for r, ws in enumerate(data["responses"]):
        for w in ws:
            Y[r, w] += 1.0
    ref = torch.zeros(Q, data["n_vocab"], dtype=torch.float64)
    for q, ws in enumerate(data["reference"]):
        for w in ws:
            ref[q, w] += 1.0
    return {"X": X, "Y": Y, "rq": torch.tensor(data["resp_query"]), "ref_Y": ref}


def sft(t: dict, train_q: list[int], steps: int, lr: float) -> WordPolicy:
    """Maximum likelihood on the reference answers of the training queries."""
    torch.manual_seed(0)
    model = WordPolicy(t["X"].shape[1], t["Y"].shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    q = torch.tensor(train_q)
    for _ in range(steps):
        nll = -model.logps(t["X"], t["ref_Y"][q], q).mean()
        opt.zero_grad()
        nll.backward()
        opt.step()
    return model


def flip_mask(gaps: np.ndarray, share: float, seed: int, scale: float = 0.5) -> np.ndarray:
    """Flips with p_i = min(1, a exp(-g_i / scale)), ``a`` (bisection) giving mean p = share."""
    if share <= 0:
        return np.zeros(len(gaps), dtype=bool)
    lo, hi = 0.0, 1e9
    for _ in range(200):
        a = (lo + hi) / 2
        lo, hi = (a, hi) if np.minimum(1, a * np.exp(-gaps / scale)).mean() < share else (lo, a)
    p = np.minimum(1.0, hi * np.exp(-gaps / scale))
    rng = np.random.default_rng(10_000 * seed + int(round(share * 1000)))
    return rng.random(len(gaps)) < p


def reward_margins(t: dict, ch: np.ndarray, rj: np.ndarray, seed: int, steps: int) -> np.ndarray:
    """A Bradley-Terry reward model r(x, y) = mean_{w in y} (a_w + B_w . f(x)) trained on
    the (noisy) training labels with weight decay; its margins on those pairs."""
    torch.manual_seed(seed)
    V, F = t["Y"].shape[1], t["X"].shape[1]
    a = torch.zeros(V, dtype=torch.float64, requires_grad=True)
    B = torch.zeros(V, F, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([a, B], lr=0.05, weight_decay=1e-3)
    Yn = t["Y"] / t["Y"].sum(-1, keepdim=True).clamp(min=1)

    def r(idx):
        return (Yn[idx] * (a + t["X"][t["rq"][idx]] @ B.T)).sum(-1)

    c, j = torch.tensor(ch), torch.tensor(rj)
    for _ in range(steps):
        loss = -torch.nn.functional.logsigmoid(r(c) - r(j)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (r(c) - r(j)).numpy()


def train(base: WordPolicy, t: dict, pairs: dict, kind: str, w: float, seed: int, args):
    """One run of the project's objective from the SFT policy; returns (model, cfg)."""
    model = WordPolicy(t["X"].shape[1], t["Y"].shape[1])
    model.load_state_dict(base.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    cfg, state = LossConfig(kind=kind, w=w, sft_weight=0.0), LossState()
    with torch.no_grad():
        ref_all = base.logps(t["X"], t["Y"], t["rq"])
    n_tok = t["Y"].sum(-1)
    rng = random.Random(seed)
    order = list(range(len(pairs["c"])))
    for step in range(args.steps):
        if step % (len(order) // args.batch) == 0:
            rng.shuffle(order)
        k = step % (len(order) // args.batch)
        idx = order[k * args.batch : (k + 1) * args.batch]
        batch = PairIndex(
            row_query=t["rq"],
            chosen_idx=torch.tensor(pairs["c"][idx]),
            rejected_idx=torch.tensor(pairs["r"][idx]),
            margins=torch.tensor(pairs["delta"][idx], dtype=torch.float32),
            ref_logps=ref_all,
            query_ids=["q"],
        )
        logps = model.logps(t["X"], t["Y"], t["rq"])
        ref = None if kind == "simpo" else ref_all
        loss, _, _ = preference_loss(cfg, logps, n_tok, batch, ref, state)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, cfg


def pair_h(model, base, t, c, r, simpo: bool) -> np.ndarray:
    with torch.no_grad():
        lp, ref = model.logps(t["X"], t["Y"], t["rq"]), base.logps(t["X"], t["Y"], t["rq"])
        n = t["Y"].sum(-1).clamp(min=1)
        if simpo:
            return (lp[c] / n[c] - lp[r] / n[r]).numpy()
        return ((lp[c] - ref[c]) - (lp[r] - ref[r])).numpy()


def one_cell(share, seed, base, t, train_pairs, held, args, top: bool) -> dict:
    """Every method on one (noise share, seed)."""
    c0, r0, gaps = train_pairs
    flips = flip_mask(gaps, share, seed)
    c, r = np.where(flips, r0, c0), np.where(flips, c0, r0)
    oracle = np.where(flips, -gaps, gaps)
    rm = reward_margins(t, c, r, seed, args.rm_steps)
    rm = rm * (np.abs(gaps).mean() / max(np.abs(rm).mean(), 1e-9))  # oracle's scale
    out = {
        "flip_rate": float(flips.mean()),
        "rm_agrees_with_truth": float(((rm > 0) == ~flips).mean()),
        "methods": {},
    }
    for name, kind, w, source in METHODS:
        pairs = {"c": c, "r": r, "delta": oracle if source == "oracle" else rm}
        model, cfg = train(base, t, pairs, kind, w, seed, args)
        simpo = kind == "simpo"
        acc = float((pair_h(model, base, t, held[0], held[1], simpo) > 0).mean())
        res = {"acc": acc}
        if top and not simpo:
            h = pair_h(model, base, t, c, r, False)
            beta = np.array(pair_betas(cfg, list(pairs["delta"])))
            beta = np.where(np.isnan(beta), cfg.beta_ori, beta)  # beta-DPO: per batch
            weight = beta / (1.0 + np.exp(beta * h))
            res["weights"] = weight.round(6).tolist()
            res["weight_flipped"] = float(weight[flips].mean()) if flips.any() else None
            res["weight_clean"] = float(weight[~flips].mean())
        out["methods"][name] = res
    if top:
        out["flips"] = flips.tolist()
    return out


def summarise(results: dict, args) -> dict:
    """Per noise share: each method's clean accuracy over seeds (t interval) and its
    paired difference from DPO (paired t over seeds, Holm within the noise level)."""
    table = {}
    for share in map(str, args.noise):
        runs = results[share]
        accs = {n: [r["methods"][n]["acc"] for r in runs] for n, *_ in METHODS}
        diffs = stats.with_holm(
            {n: stats.paired_over_seeds(accs["DPO"], v) for n, v in accs.items() if n != "DPO"}
        )
        table[share] = {
            "flip_rate": float(np.mean([r["flip_rate"] for r in runs])),
            "rm_agrees_with_truth": float(np.mean([r["rm_agrees_with_truth"] for r in runs])),
            "acc": {n: stats.over_seeds(v).to_dict() for n, v in accs.items()},
            "vs_dpo": {n: d.to_dict() for n, d in diffs.items()},
        }
    return table


def plot(results: dict, table: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (name, *_r) in enumerate(METHODS):
        pts = [table[str(s)]["acc"][name] for s in args.noise]
        x = np.array(args.noise) + (i - 3) * 0.003
        y = np.array([p["value"] for p in pts])
        err = [y - [p["low"] for p in pts], [p["high"] for p in pts] - y]
        ax1.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=name)
    ax1.set_xlabel("label-noise share (flipped more often where the true gap is small)")
    ax1.set_ylabel("held-out preference accuracy vs clean labels")
    ax1.set_title(f"mean and 95% t interval over {len(args.seeds)} seeds")
    ax1.legend(fontsize=7)
    top = str(max(args.noise))
    data, labels = [], []
    for name, _k, _w, _s in METHODS[:-1]:
        wf, wc = [], []
        for r in results[top]:
            wts, fl = np.array(r["methods"][name]["weights"]), np.array(r["flips"])
            wf.append(wts[fl]), wc.append(wts[~fl])
        data += [np.concatenate(wc), np.concatenate(wf)]
        labels += [f"{name} · clean", f"{name} · flipped"]
    ax2.boxplot(data, showfliers=False)
    ax2.set_xticks(range(1, len(labels) + 1), labels, rotation=75, ha="right", fontsize=7)
    ax2.set_ylabel("effective weight β_i·σ(−β_i·h_i), end of training")
    ax2.set_title(f"per training pair, noise {float(top):.0%}, all seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    ap.add_argument("--queries", type=int, default=240)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32, help="pairs per step")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--rm-steps", type=int, default=150)
    ap.add_argument("--out", default="/tmp/beta_noise")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "beta_noise.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    data = build_data(args.queries)
    t = tensors(data)
    n_q = len(data["x"])
    held_q = set(random.Random(0).sample(range(n_q), n_q // 4))
    train_q = [q for q in range(n_q) if q not in held_q]
    base = sft(t, train_q, args.sft_steps, 0.1)
    tr = [p for p in data["pairs"] if p[0] not in held_q]
    he = [p for p in data["pairs"] if p[0] in held_q]
    train_pairs = (np.array([p[1] for p in tr]), np.array([p[2] for p in tr]),
                   np.array([p[3] for p in tr]))  # fmt: skip
    held = (torch.tensor([p[1] for p in he]), torch.tensor([p[2] for p in he]))
    print(f"{n_q} queries: {len(tr)} train / {len(he)} held-out pairs; vocabulary "
          f"{data['n_vocab']}, features {data['n_feat']}", flush=True)  # fmt: skip
    results = {}
    for share in args.noise:
        results[str(share)] = [
            one_cell(share, s, base, t, train_pairs, held, args, share == max(args.noise))
            for s in args.seeds
        ]
        print(f"[{time.time() - start:4.0f} s] noise {share:.1f} done", flush=True)
    table = summarise(results, args)
    base_acc = {
        "implicit (h = 0 at the start: ties count wrong)": 0.0,
        "SimPO reward (mean log-prob)": float(
            (pair_h(base, base, t, held[0], held[1], True) > 0).mean()
        ),
    }
    meta = {
        "args": vars(args),
        "train_pairs": len(tr),
        "heldout_pairs": len(he),
        "gap_range": [float(train_pairs[2].min()), float(train_pairs[2].max())],
        "base_accuracy": base_acc,
        "wall_s": round(time.time() - start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "beta_noise.json").write_text(
        json.dumps({"table": table, "meta": meta, "runs": results}, indent=1)
    )
    plot(results, table, args, Path(args.plot))
    for share, row in table.items():
        print(f"noise {float(share):.0%}: flip rate {row['flip_rate']:.3f}, "
              f"RM margin sign = truth on {row['rm_agrees_with_truth']:.3f} of train pairs")  # fmt: skip
        for name, est in row["acc"].items():
            line = stats.fmt(stats.Estimate.from_dict(est))
            if name in row["vs_dpo"]:
                line += f"; vs DPO {stats.fmt(stats.PairedDiff.from_dict(row['vs_dpo'][name]))}"
            print(f"  {name}: {line}")
    top = results[str(max(args.noise))]
    for name, *_r in METHODS[:-1]:
        wf = np.mean([r["methods"][name]["weight_flipped"] for r in top])
        wc = np.mean([r["methods"][name]["weight_clean"] for r in top])
        print(f"  weight at noise {max(args.noise):.0%}, {name}: clean {wc:.4f}, flipped {wf:.4f}")
    print(f"meta {json.dumps(meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
