"""The follower: serve, in this worker, the run the decision names.

Every worker follows the decision store: when the decision changes, it opens
the shared, memory-mapped copy of the decided run and swaps it into the slot.
A copy that cannot be opened leaves the slot as it was, and the next look
tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from service import loader, metrics
from service.decisions import DecisionStore, DecisionStoreError
from service.records import ServingEntry
from service.runs import RunRecord, RunSource
from service.slot import ModelSlot, ServedModel

logger = logging.getLogger(__name__)


class Follower:
    """Swap the decided run into one worker's slot."""

    def __init__(self, settings: Mapping[str, Any], source: RunSource, store: DecisionStore,
                 slot: ModelSlot, record_error: Callable[[str], None]) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self.slot = slot
        self._record_error = record_error
        self._lock = threading.Lock()
        self._seen: Hashable | None = None

    def _open(self, serving: ServingEntry) -> ServedModel:
        """Open the shared copy of the decided run, making it if it is missing."""
        record = RunRecord(run_id=serving.run_id, pathspec=serving.pathspec,
                           state="successful", created_at=None, finished_at=serving.finished_at)
        path = loader.shared_copy_path(self.settings["STATE_DIR"], record.run_id)
        if not path.exists():
            model, _ = loader.load_from_run(self.source, record)
            loader.write_shared_copy(model, path)
        return loader.serve(loader.open_shared_copy(path), record, serving.holdout_metrics,
                            forced=serving.forced)

    def sync(self, *, force: bool = False) -> bool:
        """Serve the run the decision names; return True if the slot changed."""
        with self._lock:
            signature = self.store.signature()
            if signature is None or (signature == self._seen and not force):
                return False
            try:
                serving = self.store.read().serving
            except DecisionStoreError as exc:
                self._record_error(str(exc))
                return False
            current = self.slot.get()
            if serving is None or (current is not None and current.run_id == serving.run_id
                                   and current.forced == serving.forced):
                self._seen = signature
                return False
            try:
                old = self.slot.swap(self._open(serving))
            except Exception as exc:  # keep serving what we have; the next look tries again
                self._record_error(f"cannot load decided run {serving.run_id}: "
                                   f"{type(exc).__name__}: {exc}")
                return False
            self._seen = signature
            metrics.SWAPS.inc()
            if old is not None:
                metrics.SERVING_RUN.labels(old.run_id).set(0)
            metrics.SERVING_RUN.labels(serving.run_id).set(1)
            return True
