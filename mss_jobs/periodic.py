"""A function run at once and then every `interval` seconds, in a daemon thread, until stopped.

    ticker = PeriodicThread(sweep, 60.0, name="mss-reaper", log=log)
    ticker.start()   # first call now, in the thread
    ...
    ticker.stop()    # wakes the thread from its wait; joins it for at most `stop_timeout`

An exception in one call is logged (`on_error` overrides how) and the loop goes on: the next
call tries again. `fn` returning False ends the loop (its resource is gone for good). The wait
between calls is an `Event`, so `stop` takes effect at once rather than after the interval.
`run()` is the same loop in the calling thread (a foreground command, stopped by Ctrl-C).
Standard library only, so the API, batches and workers all use it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["PeriodicThread"]


class PeriodicThread:
    """Calls `fn` now and then every `interval` seconds until `stop()`; see the module doc."""

    def __init__(
        self,
        fn: Callable[[], object],
        interval: float,
        *,
        name: str,
        log: logging.Logger,
        on_error: Callable[[Exception], None] | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"{interval=} must be positive")
        self.fn = fn
        self.interval = interval
        self.name = name
        self.stop_timeout = stop_timeout
        self._log = log
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """Whether `start()` was called and `stop()` not yet."""
        return self._thread is not None

    @property
    def running(self) -> bool:
        """Whether the thread is alive (it ends early when `fn` returns False)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def run(self) -> None:
        """The loop itself, in the calling thread, until `stop()` or `fn` returns False."""
        while True:
            try:
                if self.fn() is False:
                    return
            except Exception as exc:
                if self._on_error is None:
                    self._log.exception("%s: a periodic run failed", self.name)
                else:
                    self._on_error(exc)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> bool:
        """Ask the loop to end and join the thread; False if it is still running after
        `stop_timeout` (it is a daemon: it cannot keep the process alive)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(self.stop_timeout)
        return not thread.is_alive()
