"""Readiness of the whole instance: every gunicorn worker holds a model, or none is ready.

A probe reaches one worker, but the traffic it admits goes to any worker of
the instance (they share one listening socket). So a worker answers 200 only
when it holds a model and so does every sibling: an instance is not ready
until all its workers are. The alternative, a worker that refuses
connections until it has a model, would block gunicorn's worker start
(post_worker_init) for as long as the first selection takes, past gunicorn's
timeout, and an empty datastore would then look like a dead process to the
liveness probe.

Siblings are the master's live children; each says what it holds in the
worker reports of the state folder (written within a watch interval of a
swap, see service.status.WorkerReporter).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from service.records import WorkerReport


def sibling_pids() -> set[int] | None:
    """Return the pids of the master's live workers, or None if the system cannot say."""
    master = os.getppid()
    try:
        return {int(pid) for pid in
                Path(f"/proc/{master}/task/{master}/children").read_text().split()}
    except (OSError, ValueError):
        return None


def workers_without_a_model(reports: Iterable[WorkerReport], siblings: set[int],
                            expected: int) -> list[str]:
    """Name the workers that cannot serve yet: the siblings with no model or no report."""
    holding = {report.pid for report in reports if report.run_id}
    missing = [f"worker {pid}" for pid in sorted(siblings - holding)]
    if len(siblings) < expected:
        missing.append(f"{expected - len(siblings)} worker(s) not started")
    return missing
