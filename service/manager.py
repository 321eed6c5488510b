"""The manager: one worker's parts, put together.

A :class:`~service.selection.Selector` walks the candidates with the pure
policy and writes the decision; a :class:`~service.follower.Follower` swaps
the decided run into the slot; a :class:`~service.watcher.Watcher` thread
follows, reports and selects on a schedule; :mod:`service.status` says what
serves. The API and the admin blueprint talk to this facade only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from service import backends
from service.decisions import DecisionStore, DecisionStoreError, SelectionBusy
from service.follower import Follower
from service.runs import RunSource
from service.selection import SelectionError, Selector
from service.slot import ModelSlot
from service.status import ErrorLog, WorkerReporter, describe, why_not_ready
from service.watcher import Watcher


class ModelManager:
    """Select, follow and describe the model of one worker process."""

    def __init__(self, settings: Mapping[str, Any], *, source: RunSource | None = None,
                 store: DecisionStore | None = None, slot: ModelSlot | None = None) -> None:
        self.settings = settings
        self.source = source if source is not None else backends.run_source(settings)
        self.store = store if store is not None else backends.decision_store(settings)
        self.slot = slot or ModelSlot()
        self.errors = ErrorLog()
        self.selector = Selector(settings, self.source, self.store, self.slot.get)
        self.follower = Follower(settings, self.source, self.store, self.slot,
                                 self.errors.record)
        self.reporter = WorkerReporter(self.store, self.slot, self.errors)
        self.watcher = Watcher(settings, follow=self.sync, report=self.reporter.report,
                               select=self.poll, serving=lambda: self.slot.get() is not None,
                               record_error=self.errors.record)

    @property
    def last_error(self) -> dict[str, Any] | None:
        """This worker's last error, or None."""
        return self.errors.last

    def sync(self, *, force: bool = False) -> bool:
        """Serve the run the decision names; return True if the slot changed."""
        return self.follower.sync(force=force)

    def start(self) -> None:
        """Serve the decided run, then start this worker's watcher thread.

        Call after gunicorn forks and before the worker accepts connections:
        the first sync is done here, not in the thread, so a new worker (after
        a restart or a crash) never answers 503 while a run is decided.
        """
        try:
            self.sync()
        except Exception as exc:  # a worker starts even when its first look fails
            self.errors.record(f"first look at the decision: {type(exc).__name__}: {exc}")
        self.watcher.start()

    def stop(self) -> None:
        """Stop the watcher thread."""
        self.watcher.stop()

    def poll(self, min_age: float = 0.0) -> bool:
        """Select unless a selection finished without error within ``min_age`` seconds.

        Never waits for the lock. Returns True when a fresh, error-free
        selection stands (this one or another worker's).
        """
        if min_age > 0:
            last = self.store.read().last_selection
            if last and not last.error and last.finished_at > time.time() - min_age:
                return True
        try:
            self.reload(reason="poll", wait=0)
        except SelectionBusy:
            return False
        except SelectionError:
            return False  # recorded in the error log; serving is unchanged
        return True

    def _selected(self, action: Callable[..., dict[str, Any]], *args: Any,
                  **kwargs: Any) -> dict[str, Any]:
        """Run a selection, remember its failure or clear the last error, then follow it."""
        try:
            result = action(*args, **kwargs)
        except SelectionError as exc:
            self.errors.record(str(exc))
            raise
        self.errors.clear()
        self.sync()
        return result

    def reload(self, *, reason: str = "admin", wait: float | None = None) -> dict[str, Any]:
        """Run a selection now, follow it, and return what it did."""
        return self._selected(self.selector.reload, reason=reason, wait=wait)

    def pin(self, run_id: str, *, force: bool = False) -> dict[str, Any]:
        """Serve exactly ``run_id`` until unpinned; refuse, changing nothing, if it cannot."""
        return self._selected(self.selector.pin, run_id, force=force)

    def unpin(self) -> dict[str, Any]:
        """Return to automatic selection."""
        return self._selected(self.selector.unpin)

    def why_not_ready(self) -> str:
        """Say why this worker serves no model (call while it serves none)."""
        try:
            decision = self.store.read()
        except DecisionStoreError as exc:
            return str(exc)
        return why_not_ready(decision, self.errors)

    def status(self) -> dict[str, Any]:
        """Describe what serves here and in the decision, and the recent verdicts."""
        return describe(self.settings, self.slot, self.store, self.errors, self.store.read)
