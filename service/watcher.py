"""The watcher: each worker's background thread.

Every ``WATCH_INTERVAL`` it follows the decision and reports what the worker
serves. It selects every ``POLL_INTERVAL`` while a model serves; while none
does, or after a selection failed, it tries again after a backoff that
starts at a second and doubles up to a minute, so a store that blinked at a
cold start costs seconds, not a poll interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: The first and the longest wait before selecting again after a failure.
RETRY_FIRST, RETRY_MAX = 1.0, 60.0


class Backoff:
    """Waits that double from ``first`` up to ``cap``, until reset."""

    def __init__(self, first: float = RETRY_FIRST, cap: float = RETRY_MAX) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        """Return the wait before the next try, and double the one after it."""
        wait, self._next = self._next, min(self._next * 2, self.cap)
        return wait

    def reset(self) -> None:
        """Start again from the first wait."""
        self._next = self.first


class Watcher:
    """Follow, report and select on a schedule, in a daemon thread of one worker."""

    def __init__(self, settings: Mapping[str, Any], *, follow: Callable[[], Any],
                 report: Callable[[], Any], select: Callable[[float], bool],
                 serving: Callable[[], bool], record_error: Callable[[str], None]) -> None:
        self.settings = settings
        self._follow = follow
        self._report = report
        self._select = select  # (min_age) -> True when a fresh, error-free selection stands
        self._serving = serving
        self._record_error = record_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.retry = Backoff()

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lineup-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _tick(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as exc:  # the watcher must outlive any one failure
            self._record_error(f"watcher: {type(exc).__name__}: {exc}")
            return None

    def select_wait(self, selected: bool) -> float:
        """Return the seconds until the next selection, after one that ``selected`` or not."""
        poll = float(self.settings["POLL_INTERVAL"])
        if selected and self._serving():
            self.retry.reset()
            return poll
        return min(self.retry.next(), poll)

    def _run(self) -> None:
        # A worker's first selection does not wait for another worker's last one.
        wait = self.select_wait(bool(self._tick(lambda: self._select(0.0))))
        next_select = time.monotonic() + wait
        while not self._stop.wait(float(self.settings["WATCH_INTERVAL"])):
            self._tick(self._follow)
            self._tick(self._report)
            if time.monotonic() >= next_select:
                min_age = float(self.settings["POLL_INTERVAL"]) if self._serving() else wait
                wait = self.select_wait(bool(self._tick(lambda: self._select(min_age))))
                next_select = time.monotonic() + wait
