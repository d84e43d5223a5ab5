"""The quiet console: worker lines and Ray INFO to the stage's log file, our lines and
progress bars to the terminal; known harmless warnings dropped at their loggers."""

from __future__ import annotations

import io
import logging
import sys

from mmrlhf_ray.core import console

WORKER = (
    "\x1b[36m(MapWorker(MapBatches(GenerateWorker)) pid=19259)\x1b[0m INFO 11-30 vLLM engine up"
)
RAY_INFO = "2026-11-30 21:29:58,942\tINFO streaming_executor.py:215 -- Starting execution"
TRAIN_BAR = "\x1b[36m(RayTrainWorker pid=77)\x1b[0m sft:  50%|#####     | 3/6 [00:04<00:04]"


def test_router_sends_worker_lines_to_the_stage_log(tmp_path, monkeypatch):
    monkeypatch.setitem(console._state, "enabled", True)
    monkeypatch.setitem(console._state, "log", None)
    path = console.route(str(tmp_path), "generate")
    assert path == str(tmp_path / "generate" / "logs" / "console.log")
    terminal = io.StringIO()
    out = console._Router(terminal)
    for text in [
        "=== pipeline: generate ===",
        "\n",
        WORKER,
        "\n",
        RAY_INFO + "\n",
        TRAIN_BAR,
        "\n",
        "(raylet) Task failed\n",
        "generate: 12 queries -> 24 rows\n",
    ]:
        print(text, end="", file=out)
    out.flush()
    assert (
        terminal.getvalue()
        == f"=== pipeline: generate ===\n{TRAIN_BAR}\ngenerate: 12 queries -> 24 rows\n"
    )
    assert (tmp_path / "generate" / "logs" / "console.log").read_text() == (
        f"{WORKER}\n{RAY_INFO}\n(raylet) Task failed\n"
    )


def test_route_is_off_unless_enabled(tmp_path, monkeypatch):
    monkeypatch.setitem(console._state, "enabled", False)
    assert console.route(str(tmp_path), "curate") is None
    assert not (tmp_path / "curate").exists()


def test_known_harmless_warnings_are_dropped_once_at_their_logger(caplog):
    console.quiet_known_warnings()
    console.quiet_known_warnings()  # idempotent: one filter per logger
    vllm = logging.getLogger("vllm.v1.worker.cpu_worker")
    assert sum(isinstance(f, console._DropMessage) for f in vllm.filters) == 1
    with caplog.at_level(logging.WARNING):
        vllm.warning(
            "CPU backend doesn't allow to use `torch.set_num_threads` after the thread binding"
        )
        vllm.warning("a real problem")
        logging.getLogger(
            "ray.train.v2._internal.execution.controller.placement_group_cleaner"
        ).warning(
            "Failed to query Ray Train Controller actor state. State API may be temporarily unavailable."
        )
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]


def test_model_loading_bars_and_deepspeed_notices_go_to_the_log(tmp_path, monkeypatch):
    monkeypatch.setitem(console._state, "enabled", True)
    monkeypatch.setitem(console._state, "log", None)
    console.route(str(tmp_path), "sft")
    terminal = io.StringIO()
    out = console._Router(terminal)
    noisy = [
        "(RayTrainWorker pid=5) \rLoading weights: 100%|##########| 82/82 [00:00<00:00]\n",
        "[2026-11-30 21:35:20,640] [WARNING] [real_accelerator.py:213:get_accelerator] "
        "Setting accelerator to CPU.\n",
        'INFO 2026-11-30 22:20:56,450 serve 16328 -- Started Serve in namespace "serve".\n',
    ]
    for text in noisy:
        out.write(text)
    out.write("sft: 40 of 48 pool rows trained\n")
    assert terminal.getvalue() == "sft: 40 of 48 pool rows trained\n"
    assert (tmp_path / "sft" / "logs" / "console.log").read_bytes().decode() == "".join(noisy)


def test_disable_gives_the_streams_back_and_closes_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(console, "_state", {"enabled": False, "terminal": None, "log": None})
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    console.enable()
    log = console.route(str(tmp_path), "sft")
    assert sys.stdout is not out and console.enabled()
    console.disable()
    assert sys.stdout is out and sys.stderr is err and not console.enabled()
    assert console.route(str(tmp_path), "sft") is None  # off again: nothing routed
    assert open(log).read() == ""  # the log existed, closed with nothing lost
