"""What operators see: each worker's report, and the status of ``/admin/status``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from service import metrics
from service.decisions import DecisionStore, DecisionStoreError
from service.records import Decision, WorkerReport
from service.slot import ModelSlot

logger = logging.getLogger(__name__)

#: A worker reports what it serves at least this often (seconds); a report
#: older than three times this is from a worker that is gone.
WORKER_REPORT_EVERY = 5.0

#: Verdicts the status shows, newest first.
STATUS_VERDICTS = 20


class ErrorLog:
    """This worker's last error, logged once and shown until cleared."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None

    def record(self, message: str) -> None:
        """Log an error (once while it repeats) and remember it for the status and report."""
        if self.last is None or self.last["message"] != message:
            logger.error("%s", message)
        self.last = {"at": time.time(), "message": message}

    def clear(self) -> None:
        """Forget the last error: what failed works again."""
        self.last = None


class WorkerReporter:
    """Write what this worker serves to the store, at least every WORKER_REPORT_EVERY."""

    def __init__(self, store: DecisionStore, slot: ModelSlot, errors: ErrorLog) -> None:
        self.store = store
        self.slot = slot
        self.errors = errors
        self._reported: tuple[str | None, float] = (None, 0.0)
        self._report_error: dict[str, Any] | None = None

    def report(self) -> None:
        """Report if what serves changed or the last report is getting old."""
        served = self.slot.get()
        run_id = served.run_id if served else None
        if served is not None and served.finished_at is not None:
            metrics.MODEL_AGE.set(time.time() - served.finished_at)
        last_run, last_at = self._reported
        if run_id == last_run and time.time() - last_at < WORKER_REPORT_EVERY:
            return
        report = WorkerReport(pid=os.getpid(), run_id=run_id, seen_at=time.time(),
                              loaded_at=served.loaded_at if served else None,
                              last_error=self.errors.last)
        # A failed report (a full or read-only state folder) is tried again next
        # period, not next tick, and its error is cleared once a report is written.
        self._reported = (run_id, report.seen_at)
        try:
            self.store.write_worker(report)
        except OSError as exc:
            self.errors.record(f"cannot report what this worker serves: {exc}")
            self._report_error = self.errors.last
            return
        if self._report_error is not None and self.errors.last is self._report_error:
            self.errors.clear()
        self._report_error = None


def why_not_ready(decision: Decision | None, errors: ErrorLog) -> str:
    """Say why no model serves in this worker, with what to fix when it is known."""
    if errors.last is not None:
        return errors.last["message"]
    last = decision.last_selection if decision is not None else None
    if last is None:
        return "the first selection has not finished yet"
    if last.error:
        return f"the last selection failed: {last.error}"
    if decision is not None and decision.serving is not None:
        return f"run {decision.serving.run_id} is decided and this worker is opening it"
    if not last.candidates:
        return "no successful training run exists yet; train one (lineup train)"
    rejected = "; ".join(f"run {c['run_id']}: {c.get('reason')}" for c in last.candidates[:3])
    return f"none of the {len(last.candidates)} newest runs passed its checks ({rejected})"


def describe(settings: Mapping[str, Any], slot: ModelSlot, store: DecisionStore,
             errors: ErrorLog, read: Callable[[], Decision]) -> dict[str, Any]:
    """Describe what serves here and in the decision, the recent verdicts and every worker."""
    served = slot.get()
    try:
        decision = read()
    except DecisionStoreError as exc:
        errors.record(str(exc))
        decision = Decision()
    now = time.time()
    stale_after = float(settings["STALE_AFTER_HOURS"]) * 3600
    serving = None
    if served is not None:
        age = now - served.finished_at if served.finished_at else None
        serving = {
            "run_id": served.run_id, "pathspec": served.pathspec,
            "since": decision.serving.since if decision.serving else None,
            "loaded_at": served.loaded_at, "finished_at": served.finished_at,
            "forced": served.forced,
            "age_seconds": round(age, 1) if age is not None else None,
            "stale": bool(age is not None and age > stale_after),
            "holdout_metrics": served.holdout_metrics,
        }
    verdicts = sorted(decision.verdicts.values(), key=lambda v: v.evaluated_at,
                      reverse=True)[:STATUS_VERDICTS]
    last = decision.last_selection
    return {
        "ready": served is not None,
        "serving": serving,
        "decided_run_id": decision.serving_run_id,
        "pin": decision.pin.to_dict() if decision.pin else None,
        "last_selection": last.to_dict() if last else None,
        "verdicts": [verdict.summary() for verdict in verdicts],
        "last_error": errors.last,
        "worker_pid": os.getpid(),
        "workers": [report.to_dict() for report in
                    store.workers(max_age=3 * WORKER_REPORT_EVERY)],
    }
