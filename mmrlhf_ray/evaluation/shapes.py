"""`mmrlhf evaluate`: the toy benchmark and safety metrics of one or more policies.

Pure pieces of the evaluate stage: its config, turning generated benchmark answers into
metrics (``mmrlhf_ray.toyworld.benchmark_metrics``), the per-item outcomes behind them
(``policy_items``, for intervals and paired tests: ``mmrlhf_ray.evaluation.outcomes``), the
before/after tables and the bar chart with 95% error bars. The job (``jobs/evaluate.py``) generates the answers with the same vLLM actor
pool as the generate stage (greedy, one sample per query).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrlhf_ray.evaluation.record import TOY, EvaluationRecord
from mmrlhf_ray.evaluation.shapes_metrics import CHART_METRICS, LOWER_IS_BETTER


def policy_metrics(rows: list[dict[str, Any]], answers: dict[str, str]) -> dict[str, Any]:
    """Benchmark metrics for answers keyed by sample_id; every row must have an answer."""
    from mmrlhf_ray.evaluation.shapes_metrics import benchmark_metrics

    missing = [r["sample_id"] for r in rows if r["sample_id"] not in answers]
    if missing:
        raise ValueError(
            f"answers: no answer for {len(missing)} benchmark rows, e.g. {missing[:3]}"
        )
    return benchmark_metrics(rows, [answers[r["sample_id"]] for r in rows])


def repeat_label(policy: str, seed: int | None) -> str:
    """``sft`` for the greedy run, ``sft@seed2`` for a sampled repeat."""
    return policy if seed is None else f"{policy}@seed{seed}"


def repeat_seeds(repeats: int) -> list[int | None]:
    return [None] if repeats == 1 else list(range(repeats))


def repeat_pairs(policies: list[str], repeats: int) -> list[tuple[str, str]]:
    """Item-level comparisons: each policy against the one before it, within each seed."""
    from mmrlhf_ray.evaluation.outcomes import consecutive

    return [
        (repeat_label(b, s), repeat_label(a, s))
        for b, a in consecutive(policies)
        for s in repeat_seeds(repeats)
    ]


def policy_items(policy: str, rows: list[dict[str, Any]], answers: dict[str, str]) -> list[dict]:
    """Per-item outcome rows (``mmrlhf_ray.evaluation.outcomes.item_rows``) of one policy's answers;
    each benchmark row is its own image and query, so each item is its own cluster."""
    from mmrlhf_ray.evaluation.outcomes import item_rows
    from mmrlhf_ray.evaluation.shapes_metrics import item_metrics

    out: list[dict] = []
    for r in rows:
        if r["sample_id"] not in answers:
            raise ValueError(f"answers: no answer for benchmark row {r['sample_id']}")
        out += item_rows(TOY, policy, r["sample_id"], item_metrics(r, answers[r["sample_id"]]))
    return out


def summary_markdown(toy: dict[str, dict[str, Any]], summary: dict | None = None) -> str:
    """The toy benchmark's tables: each metric with its 95% interval and n per policy, and
    every before/after pair's paired difference (``summary`` from ``outcomes.summarize``;
    without it, point values only, marked as such)."""
    from mmrlhf_ray.evaluation.report import comparison_section, metrics_comparison, seeds_section

    note = ", ".join(sorted(LOWER_IS_BETTER))
    head = (
        f"Toy benchmark on the held-out shapes-world split (greedy answers); lower is "
        f"better for {note}.\n\n"
    )
    if not summary or TOY not in summary.get("intervals", {}):
        return head + "Point values only (no per-item outcomes kept).\n\n" + metrics_comparison(toy)
    text = head + comparison_section(summary, TOY, LOWER_IS_BETTER, CHART_METRICS)
    seeds = summary.get("over_seeds", {}).get(TOY)
    return text + ("\n" + seeds_section(seeds, LOWER_IS_BETTER, CHART_METRICS) if seeds else "")


def write_results(
    out_dir: str | Path,
    toy: dict[str, dict[str, Any]],
    items: list[dict],
    reward_bench: dict | None = None,
    resamples: int = 2000,
    policies: list[str] | None = None,
    repeats: int = 1,
    extra: dict | None = None,
) -> EvaluationRecord:
    """The evaluate stage's outputs in ``out_dir``: ``items.parquet`` (per-item outcomes of
    every benchmark), ``metrics.json`` (an ``EvaluationRecord``: points, intervals,
    comparisons; with ``repeats`` > 1 also over seeds), ``summary.md`` and
    ``toy_benchmark.png`` (95% error bars). ``policies``: the policy names in order
    (default: the keys of ``toy``); ``toy`` is keyed by ``repeat_label``; ``extra``:
    comparisons made elsewhere, Holm-adjusted with the rest (``outcomes.summarize``)."""
    from mmrlhf_ray.evaluation.outcomes import (
        Bootstrap,
        item_table,
        seed_summary,
        summarize,
        write_items,
    )

    out = Path(out_dir)
    policies = policies or list(toy)
    table = item_table(items)
    write_items(str(out / "items.parquet"), table)
    pairs = repeat_pairs(policies, repeats) if repeats > 1 else None
    summary = summarize(table, pairs, boot=Bootstrap(resamples=resamples), extra=extra)
    record = EvaluationRecord(toy_benchmark=toy, reward_bench=reward_bench, **summary)
    if repeats > 1:
        runs = {p: [toy[repeat_label(p, s)] for s in repeat_seeds(repeats)] for p in policies}
        record.over_seeds = {TOY: seed_summary(runs, CHART_METRICS)}
    record.write(out)
    summary_md = summary_markdown(toy, record.to_dict()) if toy else ""  # shapes not asked for
    (out / "summary.md").write_text(summary_md)
    if toy:
        plot_metrics(toy, str(out / "toy_benchmark.png"), intervals=record.intervals.get(TOY))
    return record


def result_lines(record: EvaluationRecord) -> list[str]:
    """Printed lines: each policy's overall accuracy with its interval, and each paired
    comparison's headline metrics in words that never call a zero-holding difference a gain."""
    from mmrlhf_ray.evaluation.stats import Estimate, PairedDiff, describe, fmt

    lines = []
    for bench, policies in record.intervals.items():
        for name, metrics in policies.items():
            if "overall_accuracy" in metrics:
                e = Estimate.from_dict(metrics["overall_accuracy"])
                lines.append(f"{bench}: {name}: overall_accuracy {fmt(e)}")
    for bench, seeds in record.over_seeds.items():
        for name, metrics in seeds.get("intervals", {}).items():
            if "overall_accuracy" in metrics:
                e = Estimate.from_dict(metrics["overall_accuracy"])
                lines.append(f"{bench}: {name}: overall_accuracy {fmt(e)} (seed variance)")
    comparisons = list(record.comparisons.items())
    comparisons += [
        (f"{bench} over seeds", s.get("comparisons", {})) for bench, s in record.over_seeds.items()
    ]
    for bench, pairs in comparisons:
        for pair, metrics in pairs.items():
            for metric in ("overall_accuracy", "unsafe_rate", "chair_i"):
                if metric in metrics:
                    d = PairedDiff.from_dict(metrics[metric])
                    words = describe(metric, d, metric not in LOWER_IS_BETTER)
                    lines.append(f"{bench}: {pair}: {words}")
    return lines


def plot_metrics(
    toy: dict[str, dict[str, Any]],
    path: str,
    title: str = "toy benchmark",
    intervals: dict[str, dict[str, dict]] | None = None,
) -> str:
    """Grouped bars: one group per metric, one bar per policy; with ``intervals``
    (``{policy: {metric: Estimate dict}}``) each bar has its 95% interval as error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [
        m for m in CHART_METRICS if any(isinstance(v.get(m), (int, float)) for v in toy.values())
    ]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(metrics)), 3.8))
    width = 0.8 / max(1, len(toy))
    x = np.arange(len(metrics))
    for i, (policy, values) in enumerate(toy.items()):
        heights = [float(values.get(m) or 0.0) for m in metrics]
        ci = (intervals or {}).get(policy, {})
        err = None
        if ci:
            err = np.array(
                [
                    [h - ci[m]["low"], ci[m]["high"] - h] if m in ci else [0.0, 0.0]
                    for h, m in zip(heights, metrics, strict=True)
                ]
            ).T.clip(min=0.0)
        ax.bar(x + i * width, heights, width, label=policy, yerr=err, capsize=2)
    ax.set_xticks(x + width * (len(toy) - 1) / 2)
    ax.set_xticklabels(
        [m + (" (lower better)" if m in LOWER_IS_BETTER else "") for m in metrics],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylim(0, 1)
    ax.set_title(title + (" (bars: 95% intervals over items)" if intervals else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
