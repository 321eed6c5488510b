"""The decision on disk: which run serves, the pin, and every verdict.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Verdicts kept on disk; older ones are re-evaluated if ever reached again.
MAX_VERDICTS = 500


class DecisionWriteError(RuntimeError):
    """The decision could not be written; the previous one is still on disk."""


class SelectionBusy(RuntimeError):
    """Another selection holds the lock and did not finish in time."""


@dataclass
class Decision:
    """What serves and why, as written by the last selection."""

    generation: int = 0
    serving: dict[str, Any] | None = None
    pin: dict[str, Any] | None = None
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_selection: dict[str, Any] | None = None
    updated_at: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """Build a decision from its JSON form, ignoring unknown keys."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "generation": self.generation,
            "serving": self.serving,
            "pin": self.pin,
            "verdicts": self.verdicts,
            "last_selection": self.last_selection,
            "updated_at": self.updated_at,
        }

    @property
    def serving_run_id(self) -> str | None:
        """The run id that serves, or None before any run passed."""
        return self.serving["run_id"] if self.serving else None


class DecisionStore:
    """Read and write ``decision.json`` in the state folder, atomically."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "decision.json"
        self.lock_path = self.state_dir / "selection.lock"
        self._thread_lock = threading.Lock()

    def read(self) -> Decision:
        """Return the decision on disk, or an empty one when there is none yet."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Decision()
        except (OSError, ValueError) as exc:
            # A decision we cannot read is not a decision to act on; the
            # caller keeps serving what it has.
            raise DecisionWriteError(f"cannot read {self.path}: {exc}") from exc
        return Decision.from_dict(data)

    def signature(self) -> tuple[int, int] | None:
        """Return a cheap change marker (mtime, size) of the decision file."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def cached(self) -> Decision:
        """Return the decision on disk: on one host it is its own cache."""
        return self.read()

    @staticmethod
    def trim_verdicts(decision: Decision) -> None:
        """Keep the newest MAX_VERDICTS verdicts; older runs are judged again if reached."""
        if len(decision.verdicts) > MAX_VERDICTS:
            newest = sorted(decision.verdicts.items(),
                            key=lambda kv: kv[1].get("evaluated_at", 0), reverse=True)
            decision.verdicts = dict(newest[:MAX_VERDICTS])

    def write(self, decision: Decision) -> None:
        """Replace the decision on disk atomically; raise DecisionWriteError on failure."""
        decision.updated_at = time.time()
        self.trim_verdicts(decision)
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

    def write_worker(self, report: dict[str, Any]) -> None:
        """Record what one worker serves (best effort, atomic)."""
        folder = self.state_dir / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{report['pid']}.tmp"
        tmp.write_text(json.dumps(report))
        os.replace(tmp, folder / f"{report['pid']}.json")

    def workers(self, max_age: float) -> list[dict[str, Any]]:
        """Return the recent reports of live workers, oldest pid first."""
        reports = []
        for path in sorted((self.state_dir / "workers").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                report = json.loads(path.read_text())
                if time.time() - report["seen_at"] <= max_age:
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
