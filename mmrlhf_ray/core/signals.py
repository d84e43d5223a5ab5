"""One signal contract for every entry point: Ctrl-C (SIGINT) exits 130, SIGTERM 143.

``handled()`` (entered by ``mmrlhf``'s ``cli.main`` and by ``mmrlhf pipeline``) sets a
handler for both signals that remembers the first one and raises ``KeyboardInterrupt``
in the main thread, so the running stage unwinds (parts are written atomically: a re-run
resumes). The exit code is decided by the *remembered* signal, never by the exception
that reaches the top: frameworks turn a ``KeyboardInterrupt`` into their own errors, into
``SystemExit(0)`` or into a normal return, and the code stays 130 / 143. ``exit_now``
then leaves with ``os._exit``: an interrupted Ray Data execution keeps shutting down in
a background thread, and if that thread touches Ray after the interpreter's exit hook
has shut Ray down, Ray's core worker ends the process with status 1. A second signal
exits at once.

Frameworks install handlers of their own (``ray.init`` sets SIGTERM to ``sys.exit(15)``,
Ray Train's ``fit`` sets SIGINT to "abort the run" and never restores it): ``reassert()``
puts ours back after such calls; ``while_framework_runs`` keeps ours in force around one.

Tests interrupt at a known point with ``MMRLHF_INTERRUPT_AT=<point>[:SIGTERM]``: the
first time any process of the run (the driver or a Ray worker) reaches
``interrupt_point("<point>")``, it sends the signal to the driver (SIGINT to the
driver's process group when the driver leads one, as a terminal's Ctrl-C does; SIGTERM
to the driver alone, as ``kill`` does); a worker then waits to be stopped, so the work
cannot finish before the driver sees the signal. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
HOOK_ENV = "MMRLHF_INTERRUPT_AT"
DRIVER_ENV = "MMRLHF_INTERRUPT_DRIVER"  # the driver's pid, for hooks in Ray workers
WORKER_WAIT_S = 600.0

_received: list[int] = []
_state = {"depth": 0}  # install() minus restore() calls: our handlers are in force


def _handler(signum: int, frame: Any) -> None:
    if _received:  # a second signal: the user insists, stop now
        sys.stderr.write(f"\n{signal.Signals(signum).name} again: exiting at once\n")
        sys.stderr.flush()
        os._exit(EXIT_CODES[signal.Signals(_received[0])])
    _received.append(signum)
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> dict[int, Any]:
    """Handle SIGINT and SIGTERM the contract's way; returns the handlers replaced.

    Only from the main thread (elsewhere: a no-op returning {}). The outermost call
    forgets earlier signals; ``received()`` stays readable after ``restore``.
    """
    if not _in_main_thread():
        return {}
    if os.environ.get(HOOK_ENV) and DRIVER_ENV not in os.environ:
        os.environ[DRIVER_ENV] = str(os.getpid())  # inherited by a local Ray started later
    if _state["depth"] == 0:
        _received.clear()
    _state["depth"] += 1
    return {signum: signal.signal(signum, _handler) for signum in EXIT_CODES}


def restore(previous: dict[int, Any]) -> None:
    """Undo one ``install`` (pass what it returned)."""
    if not previous:
        return
    _state["depth"] -= 1
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Our handlers inside the block, the previous ones after."""
    previous = install()
    try:
        yield
    finally:
        restore(previous)


def reassert() -> None:
    """Put our handlers back if a framework replaced them (no-op outside ``handled``)."""
    if _state["depth"] > 0 and _in_main_thread():
        for signum in EXIT_CODES:
            signal.signal(signum, _handler)


def adopt(exc: BaseException) -> None:
    """Count ``SystemExit(15)`` as SIGTERM received: ``ray.init``'s own handler, in force
    while it starts a runtime (before ``reassert``), exits that way."""
    if not _received and isinstance(exc, SystemExit) and exc.code == signal.SIGTERM:
        _received.append(signal.SIGTERM)


def received() -> int | None:
    """The first signal received in the outermost ``handled`` block, or None."""
    return _received[0] if _received else None


def exit_code() -> int | None:
    """130 after SIGINT, 143 after SIGTERM, None when no signal arrived."""
    return EXIT_CODES[signal.Signals(_received[0])] if _received else None


def signal_name() -> str:
    return signal.Signals(_received[0]).name if _received else ""


def exit_now(message: str = "") -> NoReturn:
    """Print ``message``, flush, and end the process with ``exit_code()``.

    ``os._exit`` on purpose: no exit hook may run after an interrupt (see the module
    doc: Ray's exit hook racing a Data execution still shutting down exits with 1).
    Ray processes a local runtime started die with this one; a cluster ends the job's
    actors when its driver goes.
    """
    if message:
        print(message, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(exit_code() or 1)


def run_main(fn: Callable[[], Any], prog: str) -> NoReturn:
    """``sys.exit(fn())`` under the contract, for scripts outside ``mmrlhf`` (benchmarks,
    ``python jobs/pipeline.py`` under ``ray job submit``)."""
    code: Any = None
    with handled():
        try:
            code = fn()
        except BaseException:
            if received() is None:
                raise
    if received() is not None:
        exit_now(f"{prog}: stopped by {signal_name()}; re-run the same command to resume")
    sys.exit(code)


def while_framework_runs(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` (e.g. Ray Train's ``fit``) keeping our handlers in force.

    A framework that installs its own handler from the main thread (Ray Train does,
    and does not restore it) is run in a worker thread, where it cannot; the main
    thread waits in short joins, so a signal interrupts the wait. After an interrupt
    ``fn``'s thread is left to the process exit.
    """
    if _state["depth"] == 0 or not _in_main_thread():
        return fn(*args, **kwargs)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="mmrlhf-framework-call", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.2)
    reassert()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _hook_target(name: str, hits: int) -> signal.Signals | None:
    """The signal to send at ``name`` after ``hits`` passes: ``$MMRLHF_INTERRUPT_AT`` is
    ``point[@N][:SIGINT|SIGTERM]`` (N: fire at the N-th pass, default the first)."""
    target, _, sig_name = os.environ.get(HOOK_ENV, "").partition(":")
    point, _, nth = target.partition("@")
    if point != name or hits < int(nth or 1):
        return None
    return signal.Signals[sig_name or "SIGINT"]


def _claim(name: str, driver: int) -> bool:
    """True for the first process of this run to reach ``name`` (an O_EXCL marker)."""
    marker = os.path.join(tempfile.gettempdir(), f"mmrlhf-interrupt-{driver}-{name}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def interrupt_point(name: str, hits: int = 1, hold: bool = True) -> None:
    """Test hook: the first time this run reaches ``name`` (its ``hits``-th pass, as the
    caller counts) with ``$MMRLHF_INTERRUPT_AT`` naming it, signal the driver (see the
    module doc). ``hold=False``: a worker carries on (e.g. a request being answered)."""
    signum = _hook_target(name, hits)
    if signum is None:
        return
    driver = int(os.environ.get(DRIVER_ENV, os.getpid()))
    if not _claim(name, driver):
        return
    sys.stderr.write(f"[{HOOK_ENV}] sending {signum.name} to pid {driver} at '{name}'\n")
    sys.stderr.flush()
    if signum == signal.SIGINT and os.getpgid(driver) == driver:
        os.killpg(driver, signum)
    else:
        os.kill(driver, signum)
    if hold and os.getpid() != driver:  # a Ray worker: hold the work until the driver stops it
        time.sleep(WORKER_WAIT_S)
