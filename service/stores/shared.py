"""The fleet's decision, kept beside the runs and written with compare-and-swap.

An implementation of the :class:`service.decisions.DecisionStore` protocol:
workers select and follow exactly as on one host. What differs:

- ``write`` succeeds only if the decision is still the version this thread
  read. On a conflict (two instances acted at once, or a lease was lost) the
  other write stands, this one's verdicts are merged into it, and the caller
  hears :class:`DecisionConflict`: no update is ever silently lost.
- ``selection_lock`` holds the fleet's lease (:mod:`service.stores.lease`),
  not a file lock, so a killed instance blocks the others for one lease term.
- Every decision read is also written to the instance's state folder, the
  cache a worker starts from while the store is unreachable.
- Worker reports go to the state folder (this instance's workers) and to the
  store (every instance's, for the fleet's status).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from service.decisions import (DecisionUnreadable, DecisionWriteError, FileDecisionStore,
                               SelectionBusy)
from service.records import Decision, Verdict, WorkerReport
from service.stores.lease import SelectionLease
from service.stores.media import Medium, StoreUnreachable, VersionConflict

logger = logging.getLogger(__name__)

DECISION_KEY = "decision.json"
REPORTS_PREFIX = "instances"
#: Seconds between two looks at the store's decision by one worker; a
#: command reaches every instance within this plus one watch interval.
LOOK_EVERY = 1.0


class DecisionConflict(DecisionWriteError):
    """Another instance wrote the decision first; its decision stands."""


def merge_verdicts(ours: Mapping[str, Verdict],
                   theirs: Mapping[str, Verdict]) -> dict[str, Verdict]:
    """Return ``theirs`` with every verdict of ``ours`` that is newer or missing there."""
    merged = dict(theirs)
    for run_id, verdict in ours.items():
        known = merged.get(run_id)
        if known is None or verdict.evaluated_at > known.evaluated_at:
            merged[run_id] = verdict
    return merged


class SharedDecisionStore:
    """One decision for every instance that shares ``medium``."""

    def __init__(self, medium: Medium, state_dir: str | os.PathLike[str], *, instance: str,
                 lease_term: float, skew: float) -> None:
        self.medium, self.instance = medium, instance
        self.where = medium.where
        # The state folder: this instance's worker reports and the decision's cache.
        self.local = FileDecisionStore(state_dir)
        self.lease = SelectionLease(medium, instance=instance, term=lease_term, skew=skew)
        self._thread_lock = threading.Lock()
        self._read_version = threading.local()
        self._looked: tuple[float, str | None] = (0.0, None)
        self._cached_version: str | None = None
        #: When this process last read the store's decision (its version), by its clock.
        self.seen_at: float | None = None

    # -- the decision ----------------------------------------------------------

    def signature(self) -> str | None:
        """Return the decision's version, looking at most every LOOK_EVERY seconds."""
        looked_at, version = self._looked
        if time.monotonic() - looked_at < LOOK_EVERY:
            return version
        # A failed look counts too: an unreachable store is asked (and its
        # error recorded) once a second, not at every watch tick.
        self._looked = (time.monotonic(), version)
        version = self.medium.version(DECISION_KEY)
        self._looked = (time.monotonic(), version)
        self.seen_at = time.time()
        return version

    def read(self) -> Decision:
        """Return the store's decision, and cache it locally.

        Before the store has one, the state folder's decision is the start:
        an instance upgraded from an instance-local decision keeps its pin
        and verdicts, and the first write creates the shared one from it.
        """
        found = self.medium.get(DECISION_KEY)
        self.seen_at = time.time()
        if found is None:
            self._read_version.value = None
            try:
                return self.local.read()
            except DecisionUnreadable:
                return Decision()
        body, version = found
        self._read_version.value = version
        try:
            decision = Decision.from_dict(json.loads(body))
        except (ValueError, TypeError, KeyError) as exc:
            raise DecisionUnreadable(f"cannot read {self.where}/{DECISION_KEY}: {exc}") from exc
        self._cache(decision, version)
        return decision

    def cached(self) -> Decision:
        """Return the last decision this instance read, for a worker that starts offline."""
        return self.local.read()

    def _cache(self, decision: Decision, version: str) -> None:
        if version == self._cached_version:
            return
        try:
            self.local.write(Decision.from_dict(decision.to_dict()))
            self._cached_version = version
        except DecisionWriteError as exc:  # a cache: losing it costs a reload
            logger.warning("cannot cache the decision: %s", exc)

    def write(self, decision: Decision) -> None:
        """Write ``decision`` if it is still the version this thread read.

        On a conflict the newer decision stands with our verdicts merged in,
        and DecisionConflict says so.
        """
        decision.updated_at = time.time()
        expect = getattr(self._read_version, "value", None)
        try:
            version = self.medium.put(DECISION_KEY, self._encode(decision), expect)
        except VersionConflict:
            self._keep_verdicts(decision.verdicts)
            raise DecisionConflict(
                "another instance changed the decision during this selection; its decision "
                "stands and this selection's verdicts were kept") from None
        self._read_version.value = version
        self._looked = (0.0, None)
        self._cache(decision, version)

    @staticmethod
    def _encode(decision: Decision) -> bytes:
        FileDecisionStore.trim_verdicts(decision)
        return json.dumps(decision.to_dict(), indent=1, sort_keys=True).encode()

    def _keep_verdicts(self, verdicts: Mapping[str, Verdict]) -> None:
        for _ in range(5):
            current = self.read()
            current.verdicts = merge_verdicts(verdicts, current.verdicts)
            try:
                self.medium.put(DECISION_KEY, self._encode(current), self._read_version.value)
                return
            except VersionConflict:
                continue
        logger.error("could not merge this selection's verdicts after 5 conflicts")

    @contextlib.contextmanager
    def selection_lock(self, timeout: float | None) -> Iterator[None]:
        """Hold the fleet's selection lease (and this process's lock) for one selection."""
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise SelectionBusy("a selection is already running in this worker")
        try:
            self.lease.acquire(timeout)
            try:
                yield
            finally:
                self.lease.release()
        finally:
            self._thread_lock.release()

    # -- what each worker reports ------------------------------------------------

    def write_worker(self, report: WorkerReport) -> None:
        """Record what one worker serves: in the state folder, then in the store."""
        self.local.write_worker(report)
        shared = {**report.to_dict(), "instance": self.instance,
                  "decision_seen_at": self.seen_at}
        try:
            self.medium.put_any(f"{REPORTS_PREFIX}/{self.instance}/{report.pid}.json",
                                json.dumps(shared).encode())
        except StoreUnreachable as exc:
            raise OSError(f"cannot report to {self.where}: {exc}") from exc

    def workers(self, max_age: float) -> list[WorkerReport]:
        """Return the recent reports of this instance's live workers."""
        return self.local.workers(max_age)

    def reports(self, max_age: float) -> list[dict[str, Any]]:
        """Return every instance's worker reports of the last ``max_age`` seconds.

        Each is a worker report with its ``instance`` and ``decision_seen_at``.
        """
        now, recent = time.time(), []
        for _, body in self.medium.list(REPORTS_PREFIX):
            with contextlib.suppress(ValueError, KeyError):
                report = json.loads(body)
                if now - report["seen_at"] <= max_age:
                    recent.append(report)
        return recent
