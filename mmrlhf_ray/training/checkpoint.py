"""Checkpoint bookkeeping shared by the harness and the stages (pure Python).

A training checkpoint directory (one per Ray Train checkpoint) holds::

    state.json      {"step": int, "epoch_micro": int, ...}  the harness's own counters
    ds/             DeepSpeed's engine checkpoint (model + optimizer + scheduler shards)
    hf/             (final checkpoint only) consolidated Hugging Face model + processor

The metrics CSV is append-only; on resume it is cut back to the resumed step so a step
redone after a crash appears once.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
DS_DIR = "ds"
HF_DIR = "hf"


def write_state(ckpt_dir: str | Path, state: dict[str, Any]) -> None:
    Path(ckpt_dir, STATE_FILE).write_text(json.dumps(state, indent=2))


def read_state(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir, STATE_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{ckpt_dir}: not a training checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def append_metrics(csv_path: str | Path, row: dict[str, Any]) -> None:
    """Append one row; the header is written with the first row (columns of that row)."""
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open() as f:
            header = next(csv.reader(f))
    else:
        header = list(row)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def truncate_metrics(csv_path: str | Path, last_step: int) -> None:
    """Drop rows with ``step > last_step`` (they will be redone after a resume)."""
    path = Path(csv_path)
    if not path.exists():
        return
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    header = list(rows[0])
    keep = [r for r in rows if int(float(r["step"])) <= last_step]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(keep)


def read_metrics(csv_path: str | Path) -> list[dict[str, float]]:
    with Path(csv_path).open() as f:
        return [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)
        ]
