"""The decision store: which run serves, the pin, and every verdict.

One worker at a time selects (under :meth:`DecisionStore.selection_lock`) and
writes the decision; every worker reads it and serves the run it names. The
file is replaced atomically, so a crash, a full disk or a read-only folder
never loses the decision that was there before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from service.records import Decision, WorkerReport

logger = logging.getLogger(__name__)

#: Verdicts kept on disk; older ones are re-evaluated if ever reached again.
MAX_VERDICTS = 500


class DecisionStoreError(RuntimeError):
    """The decision store failed; the decision that was there before is unchanged."""


class DecisionUnreadable(DecisionStoreError):
    """The decision exists but cannot be read or parsed; nobody should act on it."""


class DecisionWriteError(DecisionStoreError):
    """The decision could not be written; the previous one is still in place."""


class SelectionBusy(RuntimeError):
    """Another selection holds the lock and did not finish in time."""


class DecisionStore(Protocol):
    """Where the decision lives, shared by every worker that follows it.

    Implementations: :class:`FileDecisionStore` (a state folder on one host)
    and the in-memory fake of the tests. ``create_app`` and the CLI get theirs
    from :func:`service.backends.decision_store`.
    """

    def read(self) -> Decision:
        """Return the decision, or an empty one; raise DecisionUnreadable."""

    def signature(self) -> Hashable | None:
        """Return a cheap marker that changes whenever the decision does."""

    def write(self, decision: Decision) -> None:
        """Replace the decision atomically; raise DecisionWriteError."""

    def selection_lock(self, timeout: float | None) -> AbstractContextManager[None]:
        """Hold the one selection lock; raise SelectionBusy when not had in time."""

    def write_worker(self, report: WorkerReport) -> None:
        """Record what one worker serves (best effort); raise OSError."""

    def workers(self, max_age: float) -> list[WorkerReport]:
        """Return the reports written within ``max_age`` seconds."""


class FileDecisionStore:
    """Read and write ``decision.json`` in the state folder, atomically."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "decision.json"
        self.lock_path = self.state_dir / "selection.lock"
        self._thread_lock = threading.Lock()

    def read(self) -> Decision:
        """Return the decision on disk, or an empty one when there is none yet."""
        try:
            return Decision.from_dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return Decision()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # A decision we cannot read is not a decision to act on; the
            # caller keeps serving what it has.
            raise DecisionUnreadable(f"cannot read {self.path}: {exc}") from exc

    def signature(self) -> tuple[int, int] | None:
        """Return a cheap change marker (mtime, size) of the decision file."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def write(self, decision: Decision) -> None:
        """Replace the decision on disk atomically; raise DecisionWriteError on failure."""
        decision.updated_at = time.time()
        if len(decision.verdicts) > MAX_VERDICTS:
            newest = sorted(decision.verdicts.items(),
                            key=lambda kv: kv[1].evaluated_at, reverse=True)
            decision.verdicts = dict(newest[:MAX_VERDICTS])
        payload = json.dumps(decision.to_dict(), indent=1, sort_keys=True)
        tmp_name = None
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".decision-", dir=self.state_dir)
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
            tmp_name = None
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise DecisionWriteError(f"cannot write {self.path}: {reason}") from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def write_worker(self, report: WorkerReport) -> None:
        """Record what one worker serves (best effort, atomic)."""
        folder = self.state_dir / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{report.pid}.tmp"
        tmp.write_text(json.dumps(report.to_dict()))
        os.replace(tmp, folder / f"{report.pid}.json")

    def workers(self, max_age: float) -> list[WorkerReport]:
        """Return the recent reports of live workers, oldest pid first."""
        reports = []
        for path in sorted((self.state_dir / "workers").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                report = WorkerReport.from_dict(json.loads(path.read_text()))
                if time.time() - report.seen_at <= max_age:
                    reports.append(report)
        return reports

    @contextlib.contextmanager
    def selection_lock(self, timeout: float | None) -> Iterator[None]:
        """Hold the selection lock across threads and worker processes.

        ``timeout=0`` tries once; ``None`` waits for ever. Raises SelectionBusy
        when the lock is not had in time. When the state folder cannot hold a
        lock file, only this process is serialised, and that is logged.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise SelectionBusy("a selection is already running in this worker")
        try:
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                handle = open(self.lock_path, "a+")  # noqa: SIM115 - closed below
            except OSError as exc:
                logger.warning("no selection lock file (%s); serialising this worker only", exc)
                yield
                return
            try:
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise SelectionBusy("a selection is already running") from None
                        time.sleep(0.05)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            finally:
                handle.close()
        finally:
            self._thread_lock.release()
