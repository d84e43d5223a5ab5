"""A quiet console for `mmrlhf`: a stage's header, its progress bars, its summary line.

``enable()`` (``cli.main``, unless ``--verbose``) turns it on; ``route(run_dir, stage)``
(``parse_stage_args``, so every stage of a pipeline gets its own file) then sends the
lines Ray forwards from its workers (vLLM, DeepSpeed, Ray Train, Serve replicas:
``(Name pid=123) ...``) to ``<run_dir>/<stage>/logs/console.log`` instead of the
terminal; worker progress bars (``42%|``) still show. Ray's own INFO logs stay in Ray's
session directory. Off by default: in-process calls (tests, notebooks) see everything.

``quiet_known_warnings()`` drops, at the logger that emits them, warnings known to be
harmless here (it runs in every Ray worker as ``worker_process_setup_hook``):

* vLLM's CPU worker: "CPU backend doesn't allow to use `torch.set_num_threads`", once
  per call of ``torch.set_num_threads`` after vLLM bound its threads (vLLM skips the
  call anyway);
* Ray Train's ``PlacementGroupCleaner``: "Failed to query Ray Train Controller actor
  state", every poll on a runtime started without the dashboard (no State API).

Imports only the standard library.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from typing import Any, TextIO

KNOWN_HARMLESS = {
    "vllm.v1.worker.cpu_worker": "torch.set_num_threads",
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": (
        "Failed to query Ray Train Controller actor state"
    ),
}
QUIET_LOGGERS = ("ray", "ray.data", "ray.train", "ray.serve")  # INFO -> Ray's log files
# To the log, not the terminal: what Ray forwards from its processes ("(Name pid=1) ...",
# "(raylet) ..."), Ray's INFO/DEBUG records, torch's W/I notices, two known notices.
LOG_ONLY = re.compile(
    r"^(\x1b\[[0-9;]*m)?\((raylet|gcs_server|autoscaler|[^\n]*?pid=\d+)[^\n]*?\)"
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|DEBUG)\s"
    r"|^(INFO|DEBUG) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ serve "  # Ray Serve's format
    r"|^[WI]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ "  # torch's glog-style notices
    r"|^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\] \[(INFO|DEBUG)\]"  # DeepSpeed's INFO
    r"|Token authentication is enabled for this Ray cluster|Progress bars disabled\. To enable"
    r"|Setting accelerator to CPU"
)
# Progress bars of loading and saving models (every worker, every stage): to the log too.
NOISY_BARS = re.compile(r"Loading weights|Writing model shards|Loading checkpoint shards")
PROGRESS = re.compile(r"\d+%\|")
LOG_FILE = "console.log"

_state: dict[str, Any] = {"enabled": False, "terminal": None, "log": None}


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_known_warnings() -> None:
    """Filter the known harmless warnings at their loggers (idempotent)."""
    for name, text in KNOWN_HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))


class _Router(io.TextIOBase):
    """A text stream: lines Ray forwards from workers go to the log, the rest (and
    workers' progress bars) to the terminal."""

    def __init__(self, terminal: TextIO):
        self.terminal = terminal
        self.last_to_log = False  # print() writes the text, then "\n" on its own

    def write(self, text: str) -> int:
        if not text:
            return 0
        log = _state["log"]
        to_log = log is not None and (
            (text == "\n" and self.last_to_log)
            or (LOG_ONLY.search(text) is not None and not PROGRESS.search(text))
            or NOISY_BARS.search(text) is not None
        )
        self.last_to_log = to_log and text != "\n"
        (log if to_log else self.terminal).write(text)
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()
        if _state["log"] is not None:
            _state["log"].flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.terminal.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.terminal, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # e.g. .buffer: the terminal's
        return getattr(self.terminal, name)


def enable() -> None:
    """Quiet console for this process (``--verbose`` callers skip it)."""
    if _state["enabled"]:
        return
    _state["enabled"] = True
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # INFO blocks; ours stay
    _state["terminal"] = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = _Router(sys.stdout), _Router(sys.stderr)
    quiet_known_warnings()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def disable() -> None:
    """Undo ``enable`` (the terminal streams back, the log closed): for a process that
    runs several stages in turn with different consoles, e.g. a test session."""
    if not _state["enabled"]:
        return
    sys.stdout, sys.stderr = _state["terminal"]
    if _state["log"] is not None:
        _state["log"].close()
    _state.update(enabled=False, terminal=None, log=None)


def enabled() -> bool:
    return bool(_state["enabled"])


def route(run_dir: str, stage: str) -> str | None:
    """Worker logs from now on go to ``<run_dir>/<stage>/logs/console.log``; returns the
    path (None when the console is not quiet or ``run_dir`` is not local)."""
    if not _state["enabled"] or "://" in run_dir:
        return None
    directory = os.path.join(os.path.abspath(run_dir), stage, "logs")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOG_FILE)
    # Kept open while routing; the previous stage's file is left to the GC (a Ray log
    # thread may still hold it for one more line).
    _state["log"] = open(path, "a", buffering=1)  # noqa: SIM115
    for name in QUIET_LOGGERS:  # Ray Data re-configures its loggers when imported
        logging.getLogger(name).setLevel(logging.WARNING)
    return path
