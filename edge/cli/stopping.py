"""How `meal-edge run` stops: SIGTERM or SIGINT ends the daemon within a bounded time, in every state.

The handler is installed before anything slow starts (model loading, camera, broker, screen), so a signal is
never lost to Python's default action half-way through start-up. During start-up nothing is in flight, so the
signal interrupts the loading at once (`StopRequested`). Once running, the first signal asks every part to stop
(each callback only sets a flag: it runs inside a signal handler) and starts a deadline: a part that does
not let go in time (a camera driver stuck in a read, a network call that hangs) cannot keep the kiosk running,
so when the deadline passes the process says which step it was in and exits. A later signal is acknowledged,
not ignored. Nothing is lost by the hard exit: every meal event is committed with its outbox row before the
senior is told, and unsent events are sent at the next start.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

#: systemd waits 90 s before SIGKILL; the issue asks for 5 s in every state. Leave room for the exit itself.
STOP_BUDGET_S = 4.5
EXIT_OVERDUE = 1


class StopRequested(Exception):
    """Raised in the main thread by a signal that arrives while the daemon is still starting."""


class Stopper:
    def __init__(self, budget: float = STOP_BUDGET_S) -> None:
        self.budget = budget
        self.requested = False
        #: what the daemon is doing, named in the log if the deadline passes
        self.step = "starting"
        self._callbacks: list[Callable[[], None]] = []
        self._signals = 0
        self._starting = True
        self._shield = 0

    def install(self) -> None:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._handle)

    def started(self) -> None:
        """From here on a signal only asks the parts to stop (the main loop sees `requested`)."""
        self._starting = False
        if self.requested:
            raise StopRequested

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Inside, a signal only records the stop; StopRequested is raised on leaving. For native code that runs
        Python callbacks (an extension module's import: onnx's nanobind bindings abort the whole process with
        SIGABRT when an exception from a signal handler goes through them). The deadline still holds."""
        self._shield += 1
        try:
            yield
        finally:
            self._shield -= 1
        if self.requested and self._starting and not self._shield:
            raise StopRequested

    def preload(self, modules: Iterable[str]) -> None:
        """Import these extension modules shielded (see `shielded`); one that is not installed is skipped (the
        code that needs it says so)."""
        with self.shielded():
            for name in modules:
                try:
                    importlib.import_module(name)
                except ImportError:
                    log.debug("preload: %s is not installed", name)

    def on_stop(self, fn: Callable[[], None]) -> None:
        """Call `fn` (signal-safe: it only sets a flag) when a stop is requested, or now if it already was."""
        self._callbacks.append(fn)
        if self.requested:
            fn()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self.requested:
            log.warning("signal %d again: already stopping (at most %.1f s after the first)", signum, self.budget)
            return
        self.requested = True
        log.warning("signal %d: stopping (%s)", signum, self.step)
        for fn in self._callbacks:
            fn()
        timer = threading.Timer(self.budget, self._overdue)
        timer.daemon = True
        timer.start()
        if self._starting and not self._shield:
            raise StopRequested

    def _overdue(self) -> None:
        log.error(
            "still stopping %.1f s after the signal (at: %s): exiting now; meal events not yet sent stay in the "
            "store and are sent at the next start", self.budget, self.step,
        )
        for h in logging.getLogger().handlers:
            h.flush()
        os._exit(0 if self._starting else EXIT_OVERDUE)  # stopped while starting: nothing was lost
