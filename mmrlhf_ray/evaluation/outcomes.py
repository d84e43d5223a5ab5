"""Per-item outcomes, kept so that every reported number can be recomputed with its interval.

One long table (``ITEM_SCHEMA``): a row per (benchmark, policy, item, metric) with the
item's ``value`` and ``weight``; a metric is sum(value) / sum(weight) over its items
(weight 1 for a plain mean such as accuracy; CHAIR_i has value = hallucinated objects,
weight = mentioned objects). ``cluster`` names the unit resampled by the bootstrap
(a query whose K responses or pairs are correlated, a SafetyBench image's prompts);
it is the item itself when items are independent.

    rows = item_rows("toy_benchmark", "sft", "bench-00001", {"overall_accuracy": 1.0})
    table = item_table(rows)                  # pyarrow, written as <stage>/items.parquet
    result = summarize(table)                 # intervals + paired comparisons, Holm
    result["comparisons"]["toy_benchmark"]["sft → mm-dpo"]["overall_accuracy"]

A stage that evaluates anything builds its rows with ``item_rows`` and lets
``summarize`` do the statistics (``mmrlhf_ray.evaluation.stats``), so every metric of one report
carries n, a 95% interval and, for policies on the same items, the paired difference
with its p-value, Holm-adjusted across all comparisons of the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmrlhf_ray.evaluation import stats

ITEM_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("policy", pa.string()),
        ("item_id", pa.string()),
        ("cluster", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("weight", pa.float64()),
    ]
)
ARROW = " \u2192 "  # "before → after" names a comparison


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are computed (stage configs expose ``resamples``)."""

    resamples: int = field(default=stats.DEFAULT_RESAMPLES, metadata={"help": "resamples"})
    seed: int = field(default=stats.DEFAULT_SEED, metadata={"help": "bootstrap seed"})
    confidence: float = field(default=stats.CONFIDENCE, metadata={"help": "interval level"})
    method: str = field(default="bca", metadata={"help": "bca | percentile"})

    def kwargs(self) -> dict:
        return asdict(self)


def item_rows(
    benchmark: str,
    policy: str,
    item_id: str,
    metrics: Mapping[str, float | bool | tuple[float, float] | None],
    cluster: str | None = None,
) -> list[dict]:
    """Rows of one item: ``metrics`` maps name -> value, (value, weight), or None (the
    metric does not apply to this item, e.g. ``mcq_accuracy`` of a video question)."""
    out = []
    for metric, v in metrics.items():
        if v is None:
            continue
        value, weight = v if isinstance(v, tuple) else (v, 1.0)
        out.append(
            {
                "benchmark": benchmark,
                "policy": policy,
                "item_id": str(item_id),
                "cluster": str(item_id if cluster is None else cluster),
                "metric": metric,
                "value": float(value),
                "weight": float(weight),
            }
        )
    return out


def item_table(rows: Iterable[Mapping]) -> pa.Table:
    """The rows as a table of ``ITEM_SCHEMA``; a bad row is a ValueError naming it."""
    rows = list(rows)
    for i, r in enumerate(rows):
        for name in ("benchmark", "policy", "item_id", "metric"):
            if not isinstance(r.get(name), str) or not r.get(name):
                raise ValueError(f"item row {i}: {name}: missing or not a string")
        for name in ("value", "weight"):
            if not np.isfinite(r.get(name, np.nan)):
                raise ValueError(
                    f"item row {i} ({r['item_id']}, {r['metric']}): {name}: not finite"
                )
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)


def write_items(path: str, table: pa.Table) -> str:
    pq.write_table(table.cast(ITEM_SCHEMA), path)
    return path


def read_items(path: str) -> pa.Table:
    return pq.read_table(path).cast(ITEM_SCHEMA)


def relabel(table: pa.Table, names: Mapping[str, str]) -> pa.Table:
    """The same items with policies renamed (e.g. ``sft`` -> ``round-0 (sft)``)."""
    policies = [names.get(p, p) for p in table.column("policy").to_pylist()]
    return table.set_column(table.schema.get_field_index("policy"), "policy", pa.array(policies))


def _grouped(table: pa.Table) -> dict[tuple[str, str, str], dict[str, np.ndarray]]:
    """{(benchmark, metric, policy): columns sorted by item_id}, in first-seen order."""
    cols = {k: table.column(k).to_pylist() for k in ("benchmark", "metric", "policy")}
    keys = list(zip(cols["benchmark"], cols["metric"], cols["policy"], strict=True))
    order: dict[tuple[str, str, str], list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    ids = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    clusters = np.asarray(table.column("cluster").to_pylist(), dtype=object)
    value = table.column("value").to_numpy()
    weight = table.column("weight").to_numpy()
    out = {}
    for k, idx in order.items():
        idx = np.asarray(idx)
        idx = idx[np.argsort(ids[idx].astype(str), kind="stable")]
        dup = ids[idx][1:] == ids[idx][:-1]
        if dup.any():
            raise ValueError(f"items: {k[0]}/{k[1]}/{k[2]}: item {ids[idx][1:][dup][0]} twice")
        out[k] = {"id": ids[idx], "cluster": clusters[idx], "v": value[idx], "w": weight[idx]}
    return out


def _clusters(g: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """None when every item is its own cluster (the plain bootstrap)."""
    return None if np.array_equal(g["cluster"], g["id"]) else g["cluster"]


def _is_ratio(*groups: Mapping[str, np.ndarray]) -> bool:
    return any(np.any(g["w"] != 1.0) for g in groups)


def metric_estimate(g: Mapping[str, np.ndarray], boot: Bootstrap) -> stats.Estimate:
    w = g["w"] if _is_ratio(g) else None
    return stats.estimate(g["v"], _clusters(g), weights=w, **boot.kwargs())


def metric_paired(
    b: Mapping[str, np.ndarray], a: Mapping[str, np.ndarray], boot: Bootstrap
) -> stats.PairedDiff | None:
    """The paired difference on the items both sides have (None when they share none)."""
    common, ib, ia = np.intersect1d(b["id"].astype(str), a["id"].astype(str), return_indices=True)
    if common.size == 0:
        return None
    b = {k: v[ib] for k, v in b.items()}
    a = {k: v[ia] for k, v in a.items()}
    if _is_ratio(b, a) and (b["w"].sum() == 0 or a["w"].sum() == 0):
        return None
    weights = {"weights_before": b["w"], "weights_after": a["w"]} if _is_ratio(b, a) else {}
    return stats.paired(b["v"], a["v"], _clusters(b), **weights, **boot.kwargs())


def consecutive(policies: Sequence[str]) -> list[tuple[str, str]]:
    """Each policy against the one before it (random → sft → mm-dpo; round r-1 → r)."""
    return list(zip(policies[:-1], policies[1:], strict=True))


def _intervals(groups: dict, boot: Bootstrap, skipped: list[str]) -> dict:
    """{bench: {policy: {metric: Estimate dict}}}; undefined metrics left out, noted."""
    intervals: dict = {}
    for (bench, metric, policy), g in groups.items():
        if g["w"].sum() == 0:  # e.g. CHAIR_i of answers that mention no object: undefined
            continue
        try:
            est = metric_estimate(g, boot)
        except ValueError as exc:  # too few items with weight for a bootstrap
            skipped.append(f"{bench}/{policy}/{metric}: {exc}")
            continue
        intervals.setdefault(bench, {}).setdefault(policy, {})[metric] = est.to_dict()
    return intervals


def _comparisons(
    groups: dict,
    pairs: Sequence[tuple[str, str]] | None,
    boot: Bootstrap,
    skipped: list[str],
    extra: Mapping[str, stats.PairedDiff],
) -> dict:
    """{bench: {"a → b": {metric: PairedDiff dict}}}, ``extra`` ones too, Holm across all."""
    policies: dict[str, list[str]] = {}
    for bench, _, policy in groups:
        if policy not in policies.setdefault(bench, []):
            policies[bench].append(policy)
    flat: dict[str, stats.PairedDiff] = {}
    for bench, names in policies.items():
        metrics = list(dict.fromkeys(m for (b, m, _) in groups if b == bench))
        for before, after in pairs if pairs is not None else consecutive(names):
            for metric in metrics:
                b, a = groups.get((bench, metric, before)), groups.get((bench, metric, after))
                if b is None or a is None:
                    continue
                try:
                    d = metric_paired(b, a, boot)
                except ValueError as exc:
                    skipped.append(f"{bench}/{before}{ARROW}{after}/{metric}: {exc}")
                    continue
                if d is not None:
                    flat["|".join((bench, f"{before}{ARROW}{after}", metric))] = d
    comparisons: dict = {}
    for key, d in stats.with_holm(flat | dict(extra)).items():
        bench, pair, metric = key.split("|")
        comparisons.setdefault(bench, {}).setdefault(pair, {})[metric] = d.to_dict()
    return comparisons


def summarize(
    table: pa.Table,
    pairs: Sequence[tuple[str, str]] | None = None,
    boot: Bootstrap | None = None,
    extra: Mapping[str, stats.PairedDiff] | None = None,
) -> dict:
    """Every metric's interval and every paired comparison of a per-item table, as JSON:

    ``{"intervals": {bench: {policy: {metric: Estimate}}}, "comparisons": {bench:
    {"a → b": {metric: PairedDiff}}}, "bootstrap": settings, "holm_family": m,
    "not_estimated": [what had too little data, and why]}``. ``pairs`` default:
    consecutive policies in the order they first appear. ``extra``: comparisons made
    elsewhere (``"bench|a → b|metric"`` -> PairedDiff, e.g. SafetyBench's averages), in
    the same family. Holm runs across every comparison (one report, one family).
    """
    boot = boot or Bootstrap()
    groups = _grouped(table)
    skipped: list[str] = []
    intervals = _intervals(groups, boot, skipped)
    comparisons = _comparisons(groups, pairs, boot, skipped, extra or {})
    return {
        "intervals": intervals,
        "comparisons": comparisons,
        "bootstrap": boot.kwargs(),
        "holm_family": sum(len(ms) for ps in comparisons.values() for ms in ps.values()),
        "not_estimated": skipped,
    }


def seed_summary(
    runs: Mapping[str, Sequence[Mapping[str, float | None]]],
    metrics: Sequence[str],
    pairs: Sequence[tuple[str, str]] | None = None,
    confidence: float = stats.CONFIDENCE,
) -> dict:
    """Seeds as the source of variance: ``runs`` maps a system to one metrics dict per seed
    (seed i of every system is the same seed). Returns ``{"intervals": {system: {metric:
    Estimate}}, "comparisons": {"a → b": {metric: PairedDiff}}, "variance": "seeds",
    "holm_family": m}``: mean and Student-t interval over seeds, and the paired t over
    the per-seed differences (Holm across all). The items are the same in every run, so
    these intervals cover the seeds' variance only, not the items' (see the per-run
    intervals for that). A system with one seed gets no interval and no comparison."""
    intervals: dict = {}
    for system, results in runs.items():
        for metric in metrics:
            values = [r[metric] for r in results if r.get(metric) is not None]
            if len(values) >= 2:
                est = stats.over_seeds(values, confidence)
                intervals.setdefault(system, {})[metric] = est.to_dict()
    flat: dict[str, stats.PairedDiff] = {}
    for before, after in pairs if pairs is not None else consecutive(list(runs)):
        b_runs, a_runs = runs.get(before, []), runs.get(after, [])
        if len(b_runs) != len(a_runs) or len(a_runs) < 2:
            continue
        for metric in metrics:
            b = [r.get(metric) for r in b_runs]
            a = [r.get(metric) for r in a_runs]
            if None not in a and None not in b:
                flat[f"{before}{ARROW}{after}|{metric}"] = stats.paired_over_seeds(b, a, confidence)
    comparisons: dict = {}
    for key, d in stats.with_holm(flat).items():
        pair, metric = key.rsplit("|", 1)
        comparisons.setdefault(pair, {})[metric] = d.to_dict()
    return {
        "intervals": intervals,
        "comparisons": comparisons,
        "variance": "seeds",
        "holm_family": len(flat),
    }
