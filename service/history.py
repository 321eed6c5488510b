"""The run history: every recent run beside its metrics and Lineup's verdict.

This is the "compare historical runs" view, for ``GET /admin/runs`` and
``lineup runs``.
"""

from __future__ import annotations

from typing import Any

from sanity_tests import flat_measures
from service.decisions import DecisionStore
from service.runs import RunSource


def run_history(source: RunSource, store: DecisionStore, *,
                limit: int = 20) -> list[dict[str, Any]]:
    """Return the recent runs, newest first, each with metrics and verdict."""
    decision = store.read()
    serving = decision.serving_run_id
    history = []
    for record in source.recent(limit):
        entry: dict[str, Any] = {
            "run_id": record.run_id, "pathspec": record.pathspec, "state": record.state,
            "created_at": record.created_at, "finished_at": record.finished_at,
        }
        if record.successful:
            summary = source.summary(record)
            entry.update(holdout_metrics=summary["holdout_metrics"],
                         baseline_metrics=summary["baseline_metrics"],
                         data_fingerprint=summary["data_fingerprint"])
        verdict = decision.verdicts.get(record.run_id)
        if record.run_id == serving:
            entry["verdict"] = "serving"
        elif verdict is None:
            entry["verdict"] = "not evaluated"
        else:
            entry["verdict"] = "passed" if verdict.passed else "rejected"
        if verdict is not None:
            entry.update(failed_checks=verdict.failed_checks, reason=verdict.reason,
                         measures=flat_measures(verdict.checks))
        history.append(entry)
    return history
