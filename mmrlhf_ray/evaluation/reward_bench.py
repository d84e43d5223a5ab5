"""MM-RLHF-RewardBench: ACC / ACC+ per category, and the official jsonl format.

Definitions (paper Sec. 3.3; official evaluation script):

* ACC  = share of pairs with ``r_chosen > r_rejected`` (strict: a tie counts wrong);
* ACC+ = share of queries (``id``) all of whose pairs are right;

per category (``mcq, long, short, safety, video``; VL-RewardBench's ``general,
hallucination, reasoning``) and overall (pooled over all pairs /
all queries), each with n and a 95% interval: ACC's bootstrap resamples whole queries
(a query's pairs share its responses), ACC+ is a proportion over independent queries.
``reward_outcomes`` keeps the per-pair / per-query outcomes (``mmrlhf_ray.evaluation.outcomes``)
and ``paired_acc`` compares two reward models on the same pairs. The official file ``mm_reward_bench.jsonl`` has one line per pair:
``id, image|video, prompt, chosen, rejected, chosen_reason, rejected_reason`` (lines of
one query share ``id``); evaluation writes ``rewards = [r_chosen, r_rejected]`` and
``critic`` back. ``critic`` is unconfirmed in the release; we write the two critiques
used, ``[critic_chosen, critic_rejected]``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmrlhf_ray.core.quarantine import quarantine_row
from mmrlhf_ray.data.media import MediaError, decode_image, frame_paths, sample_uniform
from mmrlhf_ray.reward.data import RewardPair
from mmrlhf_ray.reward.items import RewardItem
from mmrlhf_ray.reward.model import CritiqueRewardModel

BENCH_CATEGORIES = ("mcq", "long", "short", "safety", "video")
VL_REWARDBENCH_CATEGORIES = ("general", "hallucination", "reasoning")
ALL_CATEGORIES = (*BENCH_CATEGORIES, *VL_REWARDBENCH_CATEGORIES)
DEFAULT_CRITIQUE_TOKENS = 40  # when neither the run nor reward_config.json gives one


@dataclass
class PairResult:
    """One scored pair: its query, category, rewards and the critiques used."""

    query_id: str
    category: str
    r_chosen: float
    r_rejected: float
    critic_chosen: str = ""
    critic_rejected: str = ""

    @property
    def correct(self) -> bool:
        return self.r_chosen > self.r_rejected


def category_of(path: str | None) -> str | None:
    """Which category (MM-RLHF-RewardBench's or VL-RewardBench's) names a path (folder
    first, then substring)."""
    if not path:
        return None
    parts = [p for p in str(path).replace("\\", "/").lower().split("/") if p]
    for part in parts:
        if part in ALL_CATEGORIES:
            return part
    low = str(path).lower()
    for cat in ("video", "safety", "mcq", "long", "short", *VL_REWARDBENCH_CATEGORIES):
        if cat in low:
            return cat
    return None


def row_category(row: Mapping[str, Any]) -> str | None:
    """A line's category: its ``category`` field when it names a known one (VL-RewardBench
    exports carry it), else the image/video path's."""
    given = str(row.get("category") or "").strip().lower()
    if given in ALL_CATEGORIES:
        return given
    return category_of(row.get("video") or row.get("image"))


@dataclass(frozen=True)
class BenchSettings:
    """Critique length, frames and max length a bench run uses, and where each came from."""

    max_new_tokens: int
    max_frames: int
    max_length: int
    source: dict[str, str] = field(default_factory=dict)


def bench_settings(overrides: Mapping[str, int], meta: Mapping[str, Any]) -> BenchSettings:
    """The reward model's own settings (``reward_config.json`` as ``meta``) unless an
    override > 0 is given: ``max_new_tokens`` (critique length), ``max_frames``,
    ``max_length``. A model saved before the critique length was recorded falls back to
    ``DEFAULT_CRITIQUE_TOKENS``, and says so in ``source``."""
    values, source = {}, {}
    for name in ("max_new_tokens", "max_frames", "max_length"):
        given, saved = int(overrides.get(name) or 0), int(meta.get(name) or 0)
        if given > 0:
            values[name], source[name] = given, "override"
        elif saved > 0:
            values[name], source[name] = saved, "reward_config.json"
        elif name == "max_new_tokens":
            values[name], source[name] = DEFAULT_CRITIQUE_TOKENS, "default (not recorded)"
        else:
            raise ValueError(f"reward_config.json: {name}: missing; give {name}= explicitly")
    return BenchSettings(**values, source=source)


def acc_table(results: Iterable[PairResult], resamples: int = 2000) -> dict[str, dict[str, Any]]:
    """``{category|"overall": {"acc", "acc_plus", "pairs", "queries", "acc_interval",
    "acc_plus_interval"}}`` (present ones; intervals are ``stats.Estimate`` dicts)."""
    from mmrlhf_ray.evaluation.stats import estimate

    by_cat: dict[str, list[PairResult]] = defaultdict(list)
    for r in results:
        by_cat[r.category].append(r)
        by_cat["overall"].append(r)
    table = {}
    order = [c for c in (*ALL_CATEGORIES, "unknown") if c in by_cat] + ["overall"]
    for cat in order:
        rows = by_cat.get(cat, [])
        if not rows:
            continue
        per_query: dict[str, bool] = {}
        for r in rows:
            per_query[r.query_id] = per_query.get(r.query_id, True) and r.correct
        correct = [float(r.correct) for r in rows]
        table[cat] = {
            "acc": sum(correct) / len(rows),
            "acc_plus": sum(per_query.values()) / len(per_query),
            "pairs": len(rows),
            "queries": len(per_query),
            "acc_interval": estimate(
                correct, [r.query_id for r in rows], resamples=resamples
            ).to_dict(),
            "acc_plus_interval": estimate(
                [float(v) for v in per_query.values()], resamples=resamples
            ).to_dict(),
        }
    return table


def reward_outcomes(results: Sequence[PairResult], label: str) -> list[dict]:
    """Per-item rows (benchmark ``reward_bench``): ``acc`` per pair (cluster = query),
    ``acc_plus`` per query (all its pairs right), and the same per category."""
    from mmrlhf_ray.evaluation.outcomes import item_rows

    rows: list[dict] = []
    per_query: dict[str, list[PairResult]] = defaultdict(list)
    for i, r in enumerate(results):
        per_query[r.query_id].append(r)
        ok = float(r.correct)
        rows += item_rows(
            "reward_bench", label, f"pair{i}", {"acc": ok, f"{r.category}_acc": ok}, r.query_id
        )
    for qid, pairs in per_query.items():
        ok = float(all(p.correct for p in pairs))
        rows += item_rows(
            "reward_bench",
            label,
            f"query:{qid}",
            {"acc_plus": ok, f"{pairs[0].category}_acc_plus": ok},
        )
    return rows


def paired_acc(before: Sequence[PairResult], after: Sequence[PairResult], resamples: int = 2000):
    """ACC of two reward models on the same pairs (same order): the paired difference,
    clustered by query (``stats.PairedDiff``)."""
    from mmrlhf_ray.evaluation.stats import paired

    if [r.query_id for r in before] != [r.query_id for r in after]:
        raise ValueError("paired_acc: the two result lists are not the same pairs in order")
    return paired(
        [float(r.correct) for r in before],
        [float(r.correct) for r in after],
        [r.query_id for r in before],
        resamples=resamples,
    )


def format_table(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table shaped like the paper's Table 2: one ACC/ACC+ column pair per
    method (``tables`` maps method name -> ``acc_table`` result)."""
    methods = list(tables)
    cats = [
        c for c in (*ALL_CATEGORIES, "unknown", "overall") if any(c in t for t in tables.values())
    ]
    head = "| Category | " + " | ".join(f"{m} ACC | {m} ACC+" for m in methods) + " |"
    sep = "|---" * (1 + 2 * len(methods)) + "|"
    lines = [head, sep]
    for c in cats:
        cells = []
        for m in methods:
            row = tables[m].get(c)
            cells += [table_cell(row, "acc"), table_cell(row, "acc_plus")] if row else ["-", "-"]
        n = next(t[c] for t in tables.values() if c in t)
        label = f"{c.capitalize()} ({int(n['pairs'])} pairs / {int(n['queries'])} q)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    note = (
        "Values with 95% intervals: ACC by a bootstrap over queries (a query's pairs "
        "resampled together), ACC+ over queries."
    )
    return "\n".join([note, "", *lines])


def table_cell(row: dict[str, Any], key: str) -> str:
    """``0.74 [0.60, 0.87]`` (the point value alone for a table without intervals)."""
    iv = row.get(f"{key}_interval")
    if not iv:
        return f"{row[key]:.2f} (no interval kept)"
    if iv.get("method") == "too-few-clusters":
        return f"{row[key]:.2f} (no interval: {iv.get('n_clusters')} queries)"
    return f"{row[key]:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


def overall_line(table: dict[str, dict[str, Any]]) -> str:
    """``ACC 0.74 [0.60, 0.87] ACC+ 0.30 [0.13, 0.47] (90 pairs / 30 queries)``."""
    row = table.get("overall")
    if not row:
        return "no pairs scored"
    return (
        f"ACC {table_cell(row, 'acc')} ACC+ {table_cell(row, 'acc_plus')} "
        f"({int(row['pairs'])} pairs / {int(row['queries'])} queries)"
    )


# ---- the official jsonl --------------------------------------------------------------
def read_bench_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, quarantine) of an ``mm_reward_bench.jsonl``; each row gets ``_line``.

    A line that is not JSON, lacks ``id``/``prompt``/``chosen``/``rejected``, has no
    category in its image/video path, or has a malformed ``rewards`` is quarantined
    with the field named.
    """
    rows, bad = [], []
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            problem = None
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                row, problem = None, ("line", f"not JSON: {exc.msg}")
            if row is not None:
                problem = _check_bench_row(row)
            if problem:
                bad.append(quarantine_row(path, f"line {n}", *problem, text.strip()))
                continue
            row["_line"] = n
            rows.append(row)
    return rows, bad


def _check_bench_row(row: Any) -> tuple[str, str] | None:
    if not isinstance(row, dict):
        return ("line", "not a JSON object")
    for name in ("id", "prompt", "chosen", "rejected"):
        if not isinstance(row.get(name), (str, int)) or row.get(name) == "":
            return (name, "missing or empty")
    if row_category(row) is None:
        known = "/".join(ALL_CATEGORIES)
        return ("image", f"no category field and no {known} in the image/video path")
    rewards = row.get("rewards")
    if rewards is not None and not (
        isinstance(rewards, list)
        and len(rewards) == 2
        and all(isinstance(x, (int, float)) for x in rewards)
    ):
        return ("rewards", f"expected [r_chosen, r_rejected], got {rewards!r}")
    return None


def bench_row_images(
    row: dict[str, Any], image_root: str | Path, max_frames: int = 4, max_side: int | None = None
) -> list:
    """Decoded image (or uniformly sampled video frames) of a bench line."""
    root = Path(image_root or ".")
    if row.get("video"):
        frames = sample_uniform(frame_paths(root / row["video"]), max_frames)
        return [decode_image(p, "video", max_side=max_side) for p in frames]
    if row.get("image"):
        return [decode_image(root / row["image"], "image", max_side=max_side)]
    return []


def bench_rows_to_pairs(
    rows: Sequence[dict[str, Any]],
    image_root: str | Path,
    max_frames: int = 4,
    max_side: int | None = None,
) -> tuple[list[RewardPair], list[dict[str, Any]], list[dict[str, Any]]]:
    """(pairs, the rows they came from, quarantine for unreadable media)."""
    pairs, kept, bad = [], [], []
    for row in rows:
        try:
            images = bench_row_images(row, image_root, max_frames, max_side)
        except MediaError as exc:
            bad.append(
                quarantine_row(
                    "mm_reward_bench", f"line {row['_line']}", exc.field, exc.reason, row
                )
            )
            continue
        q = str(row["prompt"])
        pairs.append(
            RewardPair(
                pair_id=f"line{row['_line']}",
                query_id=str(row["id"]),
                category=row_category(row) or "unknown",
                chosen=RewardItem(q, str(row["chosen"]), images, row.get("chosen_reason")),
                rejected=RewardItem(q, str(row["rejected"]), images, row.get("rejected_reason")),
            )
        )
        kept.append(row)
    return pairs, kept, bad


def write_bench_jsonl(
    path: str | Path, rows: Sequence[dict[str, Any]], results: Sequence[PairResult]
) -> str:
    """The official format back, each line with ``rewards`` and ``critic`` filled."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row, res in zip(rows, results, strict=True):
            out = {k: v for k, v in row.items() if k != "_line"}
            out["rewards"] = [res.r_chosen, res.r_rejected]
            out["critic"] = [res.critic_chosen, res.critic_rejected]
            f.write(json.dumps(out, ensure_ascii=False) + "\n")
    return str(path)


def results_from_rewards(rows: Sequence[dict[str, Any]]) -> list[PairResult]:
    """PairResults from lines that already carry ``rewards`` (no model needed)."""
    out = []
    for row in rows:
        if row.get("rewards") is None:
            raise ValueError(f"line {row.get('_line')}: rewards: missing")
        critic = row.get("critic") if isinstance(row.get("critic"), list) else ["", ""]
        out.append(
            PairResult(
                str(row["id"]),
                row_category(row) or "unknown",
                float(row["rewards"][0]),
                float(row["rewards"][1]),
                str(critic[0] or ""),
                str(critic[-1] or ""),
            )
        )
    return out


# ---- scoring -------------------------------------------------------------------------
def score_pairs(
    model: CritiqueRewardModel,
    pairs: Sequence[RewardPair],
    mode: str = "generate",
    max_new_tokens: int = 48,
    batch_size: int = 8,
) -> list[PairResult]:
    """Score every pair in ``mode`` (generate / given / none).

    A response shared by several pairs of one query is critiqued and scored once
    (K forwards per query, not 2 per pair).
    """
    keys, unique = [], {}
    for p in pairs:
        for item in (p.chosen, p.rejected):
            key = (p.query_id, item.response, item.critique if mode == "given" else None)
            keys.append(key)
            unique.setdefault(key, item)
    items = list(unique.values())
    scored: list[tuple[float, str]] = []
    for start in tqdm(range(0, len(items), batch_size), desc=f"score ({mode})", leave=False):
        chunk = items[start : start + batch_size]
        scored += model.score_with_critique(chunk, mode, max_new_tokens, batch_size)
    by_key = dict(zip(unique.keys(), scored, strict=True))
    results = []
    for i, p in enumerate(pairs):
        (rc, cc), (rr, cr) = by_key[keys[2 * i]], by_key[keys[2 * i + 1]]
        results.append(PairResult(p.query_id, p.category, rc, rr, cc, cr))
    return results
