"""Fault injection for resume drills: kill a training worker once, at a chosen step.

``CrashOnce(loss_fn, at_call, marker, rank)`` behaves like ``loss_fn`` until its
``at_call``-th call on data-parallel rank ``rank``; then, if ``marker`` does not exist
yet, it creates it and ends the process with ``os._exit(1)`` (no cleanup, as when a
node dies). The marker makes the crash happen once, so the restarted run can finish.
Used by the resume tests and by ``mmrlhf sft train.fail_once_at_step=N`` style drills.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class CrashOnce:
    """A picklable wrapper around a loss function that kills its worker once."""

    def __init__(self, loss_fn: Any, at_call: int, marker: str, rank: int = 1):
        self.loss_fn, self.at_call, self.marker, self.rank = loss_fn, at_call, marker, rank
        self.calls = 0

    def __call__(self, model: Any, batch: dict) -> Any:
        import torch.distributed as dist

        self.calls += 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == self.rank and self.calls == self.at_call and not Path(self.marker).exists():
            Path(self.marker).write_text(f"worker rank {rank} killed at loss call {self.calls}\n")
            os._exit(1)
        return self.loss_fn(model, batch)
