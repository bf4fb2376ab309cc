"""A fixed-period loop on its own thread: the policy node's inference and command streaming."""
from __future__ import annotations

import threading
import time
from typing import Callable
from typing import Optional


class ControlLoop:
    """Call ``step()`` every ``period`` seconds on a daemon thread until :meth:`stop`.

    Deadlines are absolute (``start + k * period``), so the rate does not drift with the time a
    step takes; a step that overruns skips the ticks it missed instead of bursting to catch up.

    :param name: thread name (shows in ``py-spy`` / debuggers).
    :param period: seconds between the starts of two steps (> 0).
    :param step: the work; called with no arguments.
    :param on_error: called with the exception when ``step`` raises; the loop goes on. Return
        False from it to stop the loop (e.g. the ROS context is gone).
    """

    def __init__(self, name: str, period: float, step: Callable[[], None],
                 on_error: Optional[Callable[[BaseException], bool]] = None):
        if not period > 0:
            raise ValueError(f'{name}: period must be > 0, got {period}')
        self.name = name
        self.period = float(period)
        self._step = step
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.overruns = 0

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f'{self.name} already started')
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to stop and wait up to ``timeout`` s for the current step to finish."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad step
                if self._on_error is not None and self._on_error(exc) is False:
                    return
            deadline += self.period
            now = time.monotonic()
            if deadline < now:
                missed = int((now - deadline) // self.period) + 1
                self.overruns += missed
                deadline += missed * self.period
            self._stop.wait(deadline - now)
