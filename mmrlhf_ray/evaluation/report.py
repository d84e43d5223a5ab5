"""One report per run: `<run_dir>/report.md` and `report.html`, built from the artifacts.

Everything in the report is read from what the stages wrote, never recomputed or
typed in: manifests (row counts, wall times), each stage's ``summary.md`` (tables such
as the Table 1 composition or the Table 2-shaped RewardBench table), its PNG plots
(cluster map, loss curves, beta histogram), and ``evaluate/metrics.json`` (toy
benchmark and safety metrics before/after alignment, and per self-improvement round).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrlhf_ray.evaluation.record import TOY, EvaluationRecord


def stage_order() -> list[str]:
    """The stages a run directory can hold, in the stage table's order (one list)."""
    from mmrlhf_ray.core.stages import STAGES

    return [s.name for s in STAGES if s.name != "pipeline"]


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _stage_rows(run: Path) -> list[list[Any]]:
    timings = _load_json(run / "pipeline" / "timings.json") or {}
    rows = []
    for stage in stage_order():
        manifest = _load_json(run / stage / "manifest.json")
        if not manifest:
            continue
        counts = manifest.get("counts", {})
        wall = manifest.get("wall_seconds", timings.get(stage))
        rows.append(
            [
                stage,
                manifest.get("status"),
                counts.get("in"),
                counts.get("out"),
                counts.get("unselected", 0),
                counts.get("quarantined"),
                wall,
            ]
        )
    return rows


def _ordered(keys: list[str], order: list[str] | None) -> list[str]:
    """``keys`` in the order of ``order`` (the rest after, as they came)."""
    rank = {k: i for i, k in enumerate(order or [])}
    return sorted(keys, key=lambda k: rank.get(k, len(rank)))


def interval_table(intervals: dict[str, dict[str, dict]], order: list[str] | None = None) -> str:
    """One row per metric, one column per policy: ``value [low, high], n = ...``."""
    from mmrlhf_ray.evaluation.stats import Estimate, fmt

    policies = list(intervals)
    keys = _ordered(list(dict.fromkeys(m for p in policies for m in intervals[p])), order)
    rows = [
        [k]
        + [fmt(Estimate.from_dict(intervals[p][k])) if k in intervals[p] else "" for p in policies]
        for k in keys
    ]
    return markdown_table(["metric", *policies], rows)


def paired_table(
    comparisons: dict[str, dict[str, dict]],
    lower_is_better: set[str] | None,
    order: list[str] | None = None,
    note: str = "",
) -> str:
    """Every paired comparison: ``before → after, diff [low, high], p (Holm p), n`` and the
    reading, which never calls a difference whose interval holds 0 a gain.
    ``lower_is_better`` None: no better direction is known ("rose" / "fell")."""
    from mmrlhf_ray.evaluation.stats import PairedDiff, fmt, verdict

    rows = []
    for pair, metrics in comparisons.items():
        for metric in _ordered(list(metrics), order):
            d = PairedDiff.from_dict(metrics[metric])
            better = None if lower_is_better is None else metric not in lower_is_better
            rows.append([metric, pair, fmt(d), verdict(d, better) + note])
    return markdown_table(
        ["metric", "comparison", "after − before [95% interval]", "reading"], rows
    )


def comparison_section(
    summary: dict, bench: str, lower_is_better: set[str] | None, order: list[str] | None = None
) -> str:
    """A benchmark's intervals table and its paired-comparison table, with what they cover."""
    boot = summary.get("bootstrap", {})
    text = (
        f"Each value with its {100 * boot.get('confidence', 0.95):.0f}% interval "
        f"({boot.get('method', 'bca')} bootstrap over items, {boot.get('resamples')} "
        f"resamples; clusters resampled whole where items share one) and n.\n\n"
        + interval_table(summary["intervals"][bench], order)
    )
    comparisons = summary.get("comparisons", {}).get(bench)
    if comparisons:
        text += (
            "\n\nPaired on the same items: after − before with a paired bootstrap interval; "
            "p from exact McNemar (0/1 outcomes) or the paired bootstrap, Holm-adjusted across "
            f"the {summary.get('holm_family')} comparisons of this report. A difference whose "
            "interval holds 0 is reported as no difference.\n\n"
            + paired_table(comparisons, lower_is_better, order)
        )
    missing = [m for m in summary.get("not_estimated", []) if m.startswith(f"{bench}/")]
    if missing:
        text += "\n\nToo little data for an interval: " + "; ".join(missing)
    return text + "\n"


def seeds_section(seeds: dict, lower_is_better: set[str], order: list[str] | None = None) -> str:
    """Mean and t-interval over seeds per system, and the paired t over the seeds."""
    if not seeds.get("intervals"):
        return ""
    text = (
        "Over seeds (the same items every run): mean and 95% Student-t interval over the "
        "seeds, so these intervals cover the seeds' variance only (sampling / training "
        "randomness), not the items' (the per-seed tables above cover that).\n\n"
        + interval_table(seeds["intervals"], order)
    )
    if seeds.get("comparisons"):
        text += (
            "\n\nPaired over seeds (seed i against seed i): paired t over the per-seed "
            f"differences, Holm across the {seeds.get('holm_family')} comparisons.\n\n"
            + paired_table(seeds["comparisons"], lower_is_better, order, " (seed variance)")
        )
    return text + "\n"


def metrics_comparison(metrics: dict[str, dict[str, float]]) -> str:
    """A table of toy-benchmark metrics with one column per policy (base, aligned, rounds)."""
    policies = list(metrics)
    keys: list[str] = []
    for values in metrics.values():
        keys += [k for k in values if k not in keys and isinstance(values[k], (int, float))]
    rows = [[k, *[metrics[p].get(k) for p in policies]] for k in keys]
    return markdown_table(["metric", *policies], rows)


CURVE_COLUMNS = {
    "sft": ["loss"],
    "train-reward": ["loss", "critique", "score", "acc"],
    "train-dpo": ["loss", "pref_loss", "reward_accuracy", "beta_mean", "beta_upper_share"],
}


def plot_training_curves(run: Path) -> list[Path]:
    """``<stage>/training_curves.png`` from each training stage's ``metrics.csv``: the rows
    the rank-0 worker also logged to TensorBoard / MLflow / W&B (``train/<column>``), so
    the report's curves and the tracker's are one source."""
    import matplotlib

    from mmrlhf_ray.training.checkpoint import read_metrics

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for stage, columns in CURVE_COLUMNS.items():
        path = run / stage / "metrics.csv"
        if not path.exists():
            continue
        rows = read_metrics(path)
        columns = [c for c in columns if rows and c in rows[0]]
        if not columns:
            continue
        fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 2.6), squeeze=False)
        steps = [r["step"] for r in rows]
        for ax, column in zip(axes[0], columns, strict=False):
            ax.plot(steps, [r.get(column, float("nan")) for r in rows], marker=".")
            ax.set_title(f"{stage}: {column}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
        fig.tight_layout()
        out = run / stage / "training_curves.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written


def reward_bench_table(result: dict[str, Any]) -> str:
    """RewardBench ACC / ACC+ per category, shaped like the paper's Table 2."""
    from mmrlhf_ray.evaluation.reward_bench import table_cell

    table = result.get("table", {})
    rows = [
        [cat, table_cell(v, "acc"), table_cell(v, "acc_plus"), v.get("pairs"), v.get("queries")]
        for cat, v in table.items()
    ]
    return (
        f"Held-out pairs scored by the trained reward model (mode: {result.get('mode')}); "
        "95% intervals: ACC by a bootstrap over queries (a query's pairs together), ACC+ "
        "over queries.\n\n"
        + markdown_table(["category", "ACC [95%]", "ACC+ [95%]", "pairs", "queries"], rows)
    )


def _stage_sections(run: Path) -> list[str]:
    parts: list[str] = []
    for stage in stage_order():
        stage_dir = run / stage
        if not stage_dir.is_dir():
            continue
        texts = [
            p
            for p in (stage_dir / "summary.md", stage_dir / "report" / "composition.md")
            if p.exists()
        ]
        images = sorted([*stage_dir.glob("*.png"), *stage_dir.glob("report/*.png")])
        if not texts and not images:
            continue
        parts += ["", f"## {stage}", ""]
        parts += [p.read_text().strip() + "\n" for p in texts]
        for image in images:
            parts += ["", f"![{stage}: {image.stem}]({image.relative_to(run)})"]
    return parts


def _benchmark_text(summary: dict, bench: str, points: dict | None = None) -> str:
    """Intervals and paired tests when per-item outcomes were kept, else marked points."""
    from mmrlhf_ray.evaluation.shapes_metrics import CHART_METRICS, LOWER_IS_BETTER

    if bench in summary.get("intervals", {}):
        seeds = summary.get("over_seeds", {}).get(bench)
        text = comparison_section(summary, bench, LOWER_IS_BETTER, CHART_METRICS)
        if seeds:
            text += "\n" + seeds_section(seeds, LOWER_IS_BETTER, CHART_METRICS)
        return text
    return (
        "Point values only: this run kept no per-item outcomes, so no interval can be "
        "given and no difference claimed.\n\n" + metrics_comparison(points or {})
    )


def heldout_sections(run: Path) -> list[str]:
    """Held-out implicit-reward accuracy of train-dpo (before / after, paired)."""
    manifest = _load_json(run / "train-dpo" / "manifest.json") or {}
    summary = (manifest.get("heldout") or {}).get("stats")
    if not summary:
        return []
    return [
        "",
        "## Held-out preference accuracy (train-dpo, before / after)",
        "",
        comparison_section(summary, "heldout_pairs", {"dpo_loss"}),
    ]


def evaluation_sections(record: EvaluationRecord | None) -> list[str]:
    """The evaluate stage's benchmarks: the toy one, any other with per-item outcomes, and
    the reward model's RewardBench table."""
    if record is None:
        return []
    parts: list[str] = []
    summary = record.to_dict()
    if record.toy_benchmark:
        parts += ["", "## Toy benchmark and safety metrics (before / after)", ""]
        parts.append(_benchmark_text(summary, TOY, record.toy_benchmark))
    for bench in record.intervals:
        if bench != TOY and not is_harness(bench):  # other per-item benchmarks
            parts += ["", f"## {bench} (before / after)", "", _benchmark_text(summary, bench)]
    if record.reward_bench:
        parts += ["", "## RewardBench (ACC / ACC+)", "", reward_bench_table(record.reward_bench)]
    return parts + harness_sections(record)


def is_harness(bench: str) -> bool:
    """A per-item benchmark of the harness sections (an lmms-eval or SafetyBench task)."""
    from mmrlhf_ray.evaluation import lmms, safety_data

    return bench.startswith((lmms.BENCHMARK_PREFIX, safety_data.BENCHMARK_PREFIX))


def harness_sections(record: EvaluationRecord) -> list[str]:
    """The lmms-eval tasks and SafetyBench of a record (markdown lines; [] when neither ran):
    each value with its interval, then every task's paired comparisons between policies."""
    parts: list[str] = []
    summary = record.to_dict()
    if record.lmms_eval:
        parts += ["", "## lmms-eval tasks", "", lmms_table(record.lmms_eval, record.intervals)]
        parts += _harness_comparisons(summary, "lmms-eval/", _lmms_lower(record.lmms_eval))
    if record.safetybench:
        parts += ["", "## MM-RLHF-SafetyBench", "", safety_table(record.safetybench)]
        parts += _harness_comparisons(summary, "safetybench/", _safety_lower)
    return parts


def _lmms_lower(lmms_eval: dict) -> Callable[[str], set[str] | None]:
    """``task -> metrics where lower is better`` from the tasks' own ``higher_is_better``
    (None, no direction claimed, for a task that did not say)."""
    said: dict[str, set[str]] = {}
    for tasks in lmms_eval.values():
        for task, result in tasks.items():
            if isinstance(result, dict) and result.get("higher_is_better"):
                better = result["higher_is_better"].items()
                said[task] = {m for m, higher in better if not higher}
    return lambda task: said.get(task)


def _safety_lower(task: str) -> set[str]:
    from mmrlhf_ray.evaluation.safetybench import get_task

    if task == "averages":  # Table 9's two: Unsafety lower, Safety higher is better
        return {"unsafety"}
    t = get_task(task)
    return {t.kind} if t.lower_is_better else set()


def _harness_comparisons(
    summary: dict, prefix: str, lower_is_better: Callable[[str], set[str] | None]
) -> list[str]:
    """One paired table per task that two policies answered (``lower_is_better(task)``:
    the metrics where lower is better, None when no direction is known)."""
    parts: list[str] = []
    for bench, comparisons in summary.get("comparisons", {}).items():
        if bench.startswith(prefix) and comparisons:
            task = bench[len(prefix) :]
            parts += ["", f"### {bench}: paired on the same items", ""]
            parts.append(paired_table(comparisons, lower_is_better(task)))
    if parts:
        parts.insert(
            0,
            f"\nPaired differences (after − before, paired bootstrap interval; exact McNemar "
            f"p for 0/1 outcomes), Holm-adjusted across the {summary.get('holm_family')} "
            "comparisons of this report; a difference whose interval holds 0 is no difference.",
        )
    return parts


def lmms_table(lmms_eval: dict, intervals: dict) -> str:
    """One row per policy, task and metric: lmms-eval's aggregate, with its 95% interval
    and n where the metric is a mean of per-item values (``intervals`` of the record)."""
    from mmrlhf_ray.evaluation.lmms import BENCHMARK_PREFIX
    from mmrlhf_ray.evaluation.stats import Estimate, fmt

    rows = []
    for policy, tasks in lmms_eval.items():
        for task, result in tasks.items():
            if task.startswith("_"):  # pool bookkeeping (actor restarts)
                continue
            per_item = intervals.get(BENCHMARK_PREFIX + task, {}).get(policy, {})
            for metric, value in (result.get("metrics") or {}).items():
                est = per_item.get(metric)
                cell = fmt(Estimate.from_dict(est)) if est else f"{_fmt(value)} (no interval)"
                rows.append([policy, task, metric, cell])
    return markdown_table(["policy", "task", "metric", "value [95% interval], n"], rows)


def _safety_cell(entry: dict) -> str:
    """A SafetyBench task or average: ``not run: why``, or its value rendered by
    ``stats.fmt`` from its interval (a point marked as such when it has none)."""
    from mmrlhf_ray.evaluation.stats import Estimate, fmt

    if entry.get("value") is None:
        return f"not run: {entry.get('reason', '')}"
    cell = fmt(Estimate.from_dict(entry["interval"])) if entry.get("interval") else None
    cell = cell or f"{entry['value']:.3f} (no interval)"
    return cell + (f"; {entry['reason']}" if entry.get("reason") else "")


def safety_table(safetybench: dict) -> str:
    """Table 9's layout: a row per task (``not run`` with its reason) and the two averages,
    a column per policy (or answers file)."""
    from mmrlhf_ray.evaluation.safetybench import TASKS

    columns = list(safetybench)
    rows = [
        [t.label, "lower" if t.lower_is_better else "higher"]
        + [_safety_cell(safetybench[c]["tasks"][t.name]) for c in columns]
        for t in TASKS
    ]
    rows += [
        [f"{name.capitalize()} (average)", "lower" if name == "unsafety" else "higher"]
        + [_safety_cell(safetybench[c]["averages"][name]) for c in columns]
        for name in ("unsafety", "safety")
    ]
    return markdown_table(["task", "better", *columns], rows)


def build_markdown(run_dir: str | Path) -> str:
    run = Path(run_dir)
    parts = [f"# MM-RLHF run report: `{run}`", "", "## Stages", ""]
    parts.append(
        markdown_table(
            ["stage", "status", "rows in", "rows out", "unselected", "quarantined", "wall s"],
            _stage_rows(run),
        )
    )
    parts += evaluation_sections(EvaluationRecord.read_if_exists(run / "evaluate"))
    rounds = _load_json(run / "self-improve" / "rounds.json")
    if rounds:
        rounds_stats = _load_json(run / "self-improve" / "rounds_stats.json") or {}
        parts += ["", "## Self-improvement rounds", ""]
        parts.append(_benchmark_text(rounds_stats, TOY, rounds))
    parts += heldout_sections(run)
    parts += _stage_sections(run)
    return "\n".join(parts) + "\n"


def markdown_to_html(text: str, title: str) -> str:
    """A small converter for the subset the report uses: headings, tables, images, text."""
    out = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "img{max-width:100%}</style></head><body>",
    ]
    table: list[list[str]] = []

    def flush_table() -> None:
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>")
            out.extend(["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body])
            out.append("</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                table.append(cells)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(
                f"<p><img alt='{html.escape(alt)}' src='{html.escape(src.rstrip(')'))}'></p>"
            )
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: str | Path) -> dict[str, str]:
    run = Path(run_dir)
    plot_training_curves(run)
    text = build_markdown(run)
    md_path, html_path = run / "report.md", run / "report.html"
    md_path.write_text(text)
    html_path.write_text(markdown_to_html(text, f"MM-RLHF report {run.name}"))
    return {"markdown": str(md_path), "html": str(html_path)}
