"""The model slot: the one piece of shared mutable state in a worker.

It holds one immutable :class:`ServedModel`. A swap is one reference
assignment, so a request that read the slot keeps its model to the end even
when a swap happens meanwhile (TF Serving's ServableHandle, in one line).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A loaded model with the facts a request or an operator needs about it."""

    model: Any
    run_id: str
    pathspec: str
    loaded_at: float
    finished_at: float | None
    holdout_metrics: dict[str, float] = field(default_factory=dict)
    forced: bool = False
    #: Each item's JSON object up to its score ('{"item_id":...,"score":'),
    #: encoded once at load so that a request only adds the score.
    item_json: tuple[str, ...] = ()
    #: The model's items indexed for filters (service.catalogue_view), built at load.
    view: Any = None


class ModelSlot:
    """Hand one model to each request; replace it atomically."""

    def __init__(self) -> None:
        self._current: ServedModel | None = None
        self._write_lock = threading.Lock()

    def get(self) -> ServedModel | None:
        """Return the model serving now, or None before the first swap."""
        return self._current

    def swap(self, new: ServedModel) -> ServedModel | None:
        """Serve ``new`` from now on and return the model it replaced.

        The slot is never emptied: there is no way to put ``None`` back.
        """
        if new is None:
            raise ValueError("the slot is never emptied; swap in a model")
        with self._write_lock:
            old, self._current = self._current, new
        logger.info(
            "swapped model: run %s -> run %s%s",
            old.run_id if old else None, new.run_id, " (forced)" if new.forced else "",
        )
        return old
