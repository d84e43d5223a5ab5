"""`mmrlhf evaluate`: the toy benchmark and safety metrics of one or more policies.

Pure pieces of the evaluate stage: its config, turning generated benchmark answers into
metrics (``mmrlhf_ray.toyworld.benchmark_metrics``), the before/after table and the bar
chart. The job (``jobs/evaluate.py``) generates the answers with the same vLLM actor
pool as the generate stage (greedy, one sample per query).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Metrics shown in the before/after chart; "higher is better" unless listed in LOWER_IS_BETTER.
CHART_METRICS = [
    "overall_accuracy",
    "short_accuracy",
    "mcq_accuracy",
    "video_accuracy",
    "long_accuracy",
    "chair_i",
    "refusal_harmful",
    "unsafe_rate",
    "refusal_benign",
]
LOWER_IS_BETTER = {"chair_i", "unsafe_rate", "refusal_benign"}


@dataclass
class EvaluateConfig:
    """Toy benchmark of each policy (answers generated greedily), plus RewardBench."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory"})
    policies: dict[str, str] = field(
        default_factory=lambda: {
            "random": "{run_dir}/build-models/policy",
            "sft": "{run_dir}/sft/policy",
            "mm-dpo": "{run_dir}/train-dpo/policy",
        },
        metadata={"help": "name -> HF model dir ({run_dir} expands); missing dirs are an error"},
    )
    benchmark_run_dir: str = field(
        default="", metadata={"help": "run dir holding toyworld/benchmark ('' = run_dir)"}
    )
    backend: str = field(default="auto", metadata={"help": "auto | vllm | transformers"})
    max_tokens: int = field(default=48, metadata={"help": "new tokens per answer"})
    benchmark_limit: int = field(default=0, metadata={"help": "first N benchmark rows (0 = all)"})
    chunk_size: int = field(default=64, metadata={"help": "queries per written part (resume unit)"})
    pool_size: int = field(default=1, metadata={"help": "generator actors per policy"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs per generator actor"})
    dtype: str = field(default="float32", metadata={"help": "float32 on CPU, bfloat16 on GPU"})
    reward_bench: bool = field(
        default=True,
        metadata={"help": "RewardBench ACC/ACC+ of the trained reward model on held-out pairs"},
    )


def policy_metrics(rows: list[dict[str, Any]], answers: dict[str, str]) -> dict[str, Any]:
    """Benchmark metrics for answers keyed by sample_id; every row must have an answer."""
    from mmrlhf_ray.evaluation.shapes_metrics import benchmark_metrics

    missing = [r["sample_id"] for r in rows if r["sample_id"] not in answers]
    if missing:
        raise ValueError(
            f"answers: no answer for {len(missing)} benchmark rows, e.g. {missing[:3]}"
        )
    return benchmark_metrics(rows, [answers[r["sample_id"]] for r in rows])


def summary_markdown(toy: dict[str, dict[str, Any]]) -> str:
    from mmrlhf_ray.evaluation.report import metrics_comparison

    note = ", ".join(sorted(LOWER_IS_BETTER))
    return (
        f"Toy benchmark on the held-out shapes-world split (greedy answers); lower is "
        f"better for {note}.\n\n" + metrics_comparison(toy)
    )


def plot_metrics(toy: dict[str, dict[str, Any]], path: str, title: str = "toy benchmark") -> str:
    """Grouped bars: one group per metric, one bar per policy."""
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
        ax.bar(x + i * width, heights, width, label=policy)
    ax.set_xticks(x + width * (len(toy) - 1) / 2)
    ax.set_xticklabels(
        [m + (" (lower better)" if m in LOWER_IS_BETTER else "") for m in metrics],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
