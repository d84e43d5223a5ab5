"""The signal helper on its own (no Ray): which code a signal gives, who keeps the handler,
the test hook firing once. The end-to-end contract: tests/e2e/test_signals.py."""

from __future__ import annotations

import os
import signal
import tempfile
import threading

import pytest

from mmrlhf_ray.core import signals


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_interrupts_and_sets_the_exit_code(signum, code):
    before = signal.getsignal(signum)
    with signals.handled():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
            signal.sigtimedwait([], 0)  # let the handler run here
        assert signals.received() == signum and signals.exit_code() == code
    assert signal.getsignal(signum) is before  # restored
    assert signals.exit_code() == code  # still readable after the block


def test_a_framework_handler_does_not_replace_ours():
    def framework_call() -> str:  # Ray Train's fit: its own SIGINT handler, if it can
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda *_: None)
        return "done"

    with signals.handled():
        assert signals.while_framework_runs(framework_call) == "done"
        assert signal.getsignal(signal.SIGINT) is signals._handler


def test_ray_init_sigterm_exit_counts_as_sigterm():
    with signals.handled():
        signals.adopt(SystemExit(0))
        assert signals.received() is None
        signals.adopt(SystemExit(15))  # ray.init's handler: sys.exit(signum)
        assert signals.exit_code() == 143


def test_interrupt_point_fires_once_per_run(monkeypatch):
    monkeypatch.setenv(signals.HOOK_ENV, "stage.point@2:SIGTERM")
    monkeypatch.setenv(signals.DRIVER_ENV, str(os.getpid()))
    with signals.handled():
        signals.interrupt_point("other.point", hits=5)
        signals.interrupt_point("stage.point", hits=1)  # not yet: the 2nd pass fires
        with pytest.raises(KeyboardInterrupt):
            signals.interrupt_point("stage.point", hits=2)
            signal.sigtimedwait([], 0)
        assert signals.exit_code() == 143
        signals.interrupt_point("stage.point", hits=3)  # claimed already: no second signal
    os.unlink(os.path.join(tempfile.gettempdir(), f"mmrlhf-interrupt-{os.getpid()}-stage.point"))
