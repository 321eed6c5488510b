"""In-memory run source and decision store: the protocols' fakes for fast unit tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from service.decisions import DecisionUnreadable, SelectionBusy
from service.records import Decision, WorkerReport
from service.runs import RunNotFound, RunRecord, StoreUnavailable


def run(run_id: str, state: str = "successful", finished_at: float | None = None) -> RunRecord:
    """Return a record of run ``run_id`` that finished at ``finished_at`` (default: its id)."""
    return RunRecord(run_id=run_id, pathspec=f"FakeFlow/{run_id}", state=state,
                     created_at=float(run_id),
                     finished_at=(float(run_id) if finished_at is None else finished_at)
                     if state == "successful" else None)


class FakeRunSource:
    """Runs and their artifacts held in memory; ``available`` False makes every read fail."""

    def __init__(self, runs: list[RunRecord] | None = None) -> None:
        self.runs = {record.run_id: record for record in runs or []}
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("the fake store is unreachable")

    def recent(self, limit: int | None = None) -> list[RunRecord]:
        self._check()
        records = sorted(self.runs.values(), key=RunRecord.sort_key, reverse=True)
        return records[:limit] if limit is not None else records

    def candidates(self, limit: int | None = None) -> list[RunRecord]:
        successful = [record for record in self.recent() if record.successful]
        return successful[:limit] if limit is not None else successful

    def get(self, run_id: str) -> RunRecord:
        self._check()
        try:
            return self.runs[run_id.rsplit("/", 1)[-1]]
        except KeyError:
            raise RunNotFound(f"run {run_id} does not exist") from None

    def artifact(self, record: RunRecord, name: str) -> Any:
        self._check()
        return self.artifacts[record.run_id][name]

    def summary(self, record: RunRecord) -> dict[str, Any]:
        self._check()
        return {"holdout_metrics": self.artifacts.get(record.run_id, {}).get("holdout_metrics")}


class FakeDecisionStore:
    """The decision and worker reports in memory, with a lock shared by its users."""

    def __init__(self) -> None:
        self.decision: dict[str, Any] | None = None
        self.reports: dict[int, WorkerReport] = {}
        self.writes = 0
        self.fail_writes = False
        self._lock = threading.Lock()

    def read(self) -> Decision:
        if self.decision == "garbage":
            raise DecisionUnreadable("the fake decision is unreadable")
        return Decision.from_dict(self.decision) if self.decision else Decision()

    def signature(self) -> int | None:
        return self.writes if self.decision else None

    def write(self, decision: Decision) -> None:
        from service.decisions import DecisionWriteError

        if self.fail_writes:
            raise DecisionWriteError("the fake store is full")
        decision.updated_at = time.time()
        self.decision = decision.to_dict()
        self.writes += 1

    @contextlib.contextmanager
    def selection_lock(self, timeout: float | None) -> Iterator[None]:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise SelectionBusy("a selection is already running")
        try:
            yield
        finally:
            self._lock.release()

    def write_worker(self, report: WorkerReport) -> None:
        self.reports[report.pid] = report

    def workers(self, max_age: float) -> list[WorkerReport]:
        return [r for r in self.reports.values() if time.time() - r.seen_at <= max_age]
