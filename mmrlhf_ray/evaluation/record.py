"""``evaluate/metrics.json`` as one typed record: what the evaluate stage writes, and what
the run report, the self-improvement loop and the printed lines read.

Every section is a field here and nowhere else is a top-level key spelled; a file with a key
this record does not know is refused with the file and the key named (an older or newer
writer, or a hand edit), so no reader silently misses a section. Below the top level the
sections keep the shapes their producers document (``outcomes.summarize``,
``outcomes.seed_summary``, ``safety_judges.safetybench_report``, the lmms-eval pool).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FILE = "metrics.json"  # inside the evaluate stage's directory
TOY = "toy_benchmark"  # the shapes benchmark's name in the record and the per-item table


@dataclass
class EvaluationRecord:
    """The evaluate stage's metrics, one field per section of ``metrics.json``."""

    # shapes benchmark point values: {policy label: {metric: value}}
    toy_benchmark: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the reward model's RewardBench ACC / ACC+ ({mode, table, output}); None = not run
    reward_bench: dict | None = None
    # per-item intervals and paired tests (``outcomes.summarize``)
    intervals: dict[str, dict[str, dict[str, dict]]] = field(default_factory=dict)
    comparisons: dict[str, dict[str, dict[str, dict]]] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    holm_family: int = 0
    not_estimated: list[str] = field(default_factory=list)
    # seeds as the variance (``outcomes.seed_summary`` per benchmark); empty = one run
    over_seeds: dict[str, dict] = field(default_factory=dict)
    # lmms-eval tasks ({task: {metrics, samples, ...}}) and SafetyBench ({tasks, averages})
    lmms_eval: dict[str, dict] = field(default_factory=dict)
    safetybench: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = FILE) -> EvaluationRecord:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))}); "
                "written by another version of the evaluate stage? re-run it"
            )
        return cls(**{k: v for k, v in data.items() if v is not None})  # null = the default

    @classmethod
    def read(cls, path: str | Path) -> EvaluationRecord:
        """The record in ``path`` (a metrics.json, or the evaluate stage directory)."""
        path = Path(path)
        path = path / FILE if path.is_dir() else path
        return cls.from_dict(json.loads(path.read_text()), str(path))

    @classmethod
    def read_if_exists(cls, path: str | Path) -> EvaluationRecord | None:
        path = Path(path)
        return cls.read(path) if (path / FILE if path.is_dir() else path).is_file() else None

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path = path / FILE if path.is_dir() else path
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def points(self, policy: str) -> dict[str, Any]:
        """One policy's shapes-benchmark point values ({} when it was not evaluated)."""
        return dict(self.toy_benchmark.get(policy, {}))
