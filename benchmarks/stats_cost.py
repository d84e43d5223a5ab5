"""What the intervals cost: ``outcomes.summarize`` (every metric's 95% bootstrap interval and
every paired comparison, Holm) beside judging the same answers, for the toy benchmark.

Three policies answer ``--items`` benchmark rows (reference answers on a share of them,
a wrong answer elsewhere); times judging the answers (``policy_metrics``) and summarizing
their per-item outcomes at each ``--resamples``.

    .venv/bin/python -m benchmarks.stats_cost --items 200 --resamples 2000 10000
"""

from __future__ import annotations

import argparse
import sys
import time

from mmrlhf_ray.evaluation.outcomes import Bootstrap, item_table, summarize
from mmrlhf_ray.evaluation.shapes import policy_items, policy_metrics
from mmrlhf_ray.toyworld import benchmark_split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--resamples", type=int, nargs="+", default=[2000, 10000])
    args = ap.parse_args()
    rows = benchmark_split(args.items, seed=5)
    answers = {
        name: {
            r["sample_id"]: r["reference_answer"] if i % every == 0 else "a red circle"
            for i, r in enumerate(rows)
        }
        for name, every in (("random", 7), ("sft", 4), ("mm-dpo", 3))
    }
    t0 = time.perf_counter()
    for a in answers.values():
        policy_metrics(rows, a)
    judge = time.perf_counter() - t0
    items = item_table([x for k, a in answers.items() for x in policy_items(k, rows, a)])
    for b in args.resamples:
        t0 = time.perf_counter()
        s = summarize(items, boot=Bootstrap(resamples=b))
        took = time.perf_counter() - t0
        print(
            f"stats_cost: {args.items} items x 3 policies ({items.num_rows} item rows, "
            f"{s['holm_family']} comparisons), {b} resamples: summarize {took:.2f} s, "
            f"judging the answers {judge:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
