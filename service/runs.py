"""The run source: which runs of the training flow exist, newest first.

Candidates are ordered by end time and run id, never by ``Flow.runs()``
order, which tags rewrite on the local backend (Netflix/metaflow#2293).
Data is read only from successful runs: failed and running runs have none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service import config
from service.contract import SUMMARY_ARTIFACTS

logger = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """The Metaflow datastore cannot be read right now."""


class RunNotFound(LookupError):
    """No run with that id exists for the configured flow."""


@dataclass(frozen=True)
class RunRecord:
    """One run of the training flow, as the source saw it."""

    run_id: str
    pathspec: str
    state: str  # "successful", "failed" or "running"
    created_at: float | None
    finished_at: float | None
    tags: tuple[str, ...] = ()

    @property
    def successful(self) -> bool:
        """True when the run finished and its data can be read."""
        return self.state == "successful"

    def sort_key(self) -> tuple[float, int, str]:
        """Order by end time, then by run id (numeric ids compare as numbers)."""
        numeric = int(self.run_id) if self.run_id.isdigit() else -1
        return (self.finished_at or self.created_at or 0.0, numeric, self.run_id)


def _epoch(moment: Any) -> float | None:
    return moment.timestamp() if moment is not None else None


def _hint(exc: Exception, settings: Mapping[str, Any]) -> str:
    """Name the setting to fix when the client could not write its cache."""
    if "directory" in str(exc).lower() and settings["METAFLOW_CLIENT_CACHE"] in str(exc):
        return (f" (the Metaflow client cache {settings['METAFLOW_CLIENT_CACHE']} must be "
                "writable by this account: set LINEUP_METAFLOW_CLIENT_CACHE or LINEUP_HOME)")
    return ""


def _run_state(run: Any) -> str:
    if run.successful:
        return "successful"
    # Failed and running runs look alike at the run level; a task whose last
    # attempt is recorded as not ok tells them apart.
    for step in run:
        for task in step:
            if task.metadata_dict.get("attempt_ok") == "False":
                return "failed"
    return "running"


class RunSource(Protocol):
    """Where candidate runs come from: which exist, and their artifacts.

    Implementations: :class:`MetaflowRunSource` and the in-memory fake of the
    tests. ``create_app`` and the CLI get theirs from
    :func:`service.backends.run_source`.
    """

    def recent(self, limit: int | None = None) -> list[RunRecord]:
        """Return the flow's runs in every state, newest first; raise StoreUnavailable."""

    def candidates(self, limit: int | None = None) -> list[RunRecord]:
        """Return successful runs, newest first; raise StoreUnavailable."""

    def get(self, run_id: str) -> RunRecord:
        """Return one run by id or pathspec; raise RunNotFound or StoreUnavailable."""

    def artifact(self, record: RunRecord, name: str) -> Any:
        """Read one artifact of a successful run; raise KeyError when it has none."""

    def summary(self, record: RunRecord) -> dict[str, Any]:
        """Read ``SUMMARY_ARTIFACTS``; a missing one reads as None."""


class MetaflowRunSource:
    """List and read runs of the configured flow through the Metaflow client."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.flow_name: str = settings["FLOW_NAME"]
        self._records: dict[str, RunRecord] = {}  # successful runs never change

    def _client(self) -> Any:
        """Point the Metaflow client at our store and return the module."""
        root = Path(self.settings["DATASTORE_ROOT"]) / ".metaflow"
        try:
            if self.settings["METADATA"] == "local" and not (
                    root.is_dir() and os.access(root, os.R_OK | os.X_OK)):
                raise FileNotFoundError(root)
            config.apply_metaflow(self.settings)  # raises the same if it went away since
        except FileNotFoundError as exc:
            raise StoreUnavailable(f"Metaflow datastore {root} is missing or unreadable "
                                   "(LINEUP_DATASTORE_ROOT names its parent)") from exc
        import metaflow

        return metaflow

    def _flow(self) -> Any | None:
        metaflow = self._client()
        try:
            return metaflow.Flow(self.flow_name)
        except metaflow.exception.MetaflowNotFound:
            return None  # nothing trained yet

    def _record(self, run: Any) -> RunRecord:
        cached = self._records.get(run.id)
        if cached is not None:
            return cached
        record = RunRecord(
            run_id=run.id,
            pathspec=run.pathspec,
            state=_run_state(run),
            created_at=_epoch(run.created_at),
            finished_at=_epoch(run.finished_at) if run.successful else None,
            tags=tuple(sorted(run.tags)),
        )
        if record.successful:
            self._records[run.id] = record
        return record

    def recent(self, limit: int | None = None) -> list[RunRecord]:
        """Return the flow's runs in every state, newest first."""
        try:
            flow = self._flow()
            if flow is None:
                return []
            records = [self._record(run) for run in flow.runs()]
        except StoreUnavailable:
            raise
        except Exception as exc:  # the client raises many kinds on a broken store
            raise StoreUnavailable(f"cannot list runs of {self.flow_name}: {exc}"
                                   f"{_hint(exc, self.settings)}") from exc
        records.sort(key=RunRecord.sort_key, reverse=True)
        return records[:limit] if limit is not None else records

    def candidates(self, limit: int | None = None) -> list[RunRecord]:
        """Return successful runs, newest first."""
        successful = [record for record in self.recent() if record.successful]
        return successful[:limit] if limit is not None else successful

    def get(self, run_id: str) -> RunRecord:
        """Return one run by id or pathspec; raise RunNotFound when absent."""
        run_id = run_id.rsplit("/", 1)[-1]
        if run_id in self._records:
            return self._records[run_id]
        metaflow = self._client()
        try:
            run = metaflow.Run(f"{self.flow_name}/{run_id}")
        except metaflow.exception.MetaflowNotFound:
            raise RunNotFound(f"run {run_id} of {self.flow_name} does not exist") from None
        except Exception as exc:
            raise StoreUnavailable(f"cannot read run {run_id}: {exc}") from exc
        return self._record(run)

    def artifact(self, record: RunRecord, name: str) -> Any:
        """Read one artifact of a successful run (the end step's data)."""
        if not record.successful:
            raise ValueError(f"run {record.run_id} is {record.state}; it has no data to read")
        metaflow = self._client()
        data = metaflow.Run(record.pathspec).data
        if name not in data:
            raise KeyError(f"run {record.run_id} has no artifact {name!r}")
        return getattr(data, name)

    def summary(self, record: RunRecord) -> dict[str, Any]:
        """Read the small artifacts the cheap checks and operators need.

        Missing artifacts read as None, so that a check can say which is absent.
        """
        metaflow = self._client()
        data = metaflow.Run(record.pathspec).data
        return {name: getattr(data, name) if name in data else None
                for name in SUMMARY_ARTIFACTS}
