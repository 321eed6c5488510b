"""Selection: walk the candidates with the policy, judge them with the gate, write the decision.

One worker at a time selects, under the decision store's lock. Availability
first: the decision names a new run only after it passed and its shared copy
was written; any failure on the way leaves the decision, and so what every
worker serves, as it was.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from sanity_tests import Thresholds, checks_fingerprint
from service import loader, metrics
from service.decisions import DecisionStore, DecisionStoreError
from service.gate import Evaluation, evaluate_within
from service.policy import Judge, Outcome, next_step
from service.records import Decision, Pin, Selection, ServingEntry
from service.runs import RunNotFound, RunRecord, RunSource, StoreUnavailable
from service.slot import ServedModel

logger = logging.getLogger(__name__)

Evaluate = Callable[[RunSource, RunRecord, Mapping[str, Any], ServedModel | None], Evaluation]


class SelectionError(RuntimeError):
    """A selection could not finish; what serves is unchanged."""


class PinRefused(ValueError):
    """A pin was refused; ``status`` is the HTTP status that fits the reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def failed_message(before: str | None, error: str) -> str:
    """Say that a selection failed and what still serves."""
    return f"selection failed, still serving run {before}: {error}"


class Selector:
    """Run selections, pins and unpins against one run source and decision store."""

    def __init__(self, settings: Mapping[str, Any], source: RunSource, store: DecisionStore,
                 serving: Callable[[], ServedModel | None], *,
                 evaluate: Evaluate | None = None) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self._serving = serving  # this worker's slot, for comparing a candidate with it
        self._evaluate = evaluate  # None: the gate's evaluate_within

    def fingerprint(self) -> str:
        """Return the fingerprint of today's checks and thresholds."""
        return checks_fingerprint(Thresholds.from_settings(self.settings))

    def read_for_update(self) -> Decision:
        """Read the decision under the lock; an unreadable one fails the selection."""
        try:
            return self.store.read()
        except DecisionStoreError as exc:
            raise SelectionError(str(exc)) from exc

    def judge(self, decision: Decision, record: RunRecord) -> Evaluation:
        """Run the gate on one run, record its verdict in ``decision`` and log it."""
        evaluate = self._evaluate or evaluate_within
        evaluation = evaluate(self.source, record, self.settings, self._serving())
        verdict = evaluation.verdict
        decision.verdicts[record.run_id] = verdict
        for check in verdict.checks:
            metrics.CHECK_SECONDS.labels(check["name"]).observe(check["seconds"])
            if not check["passed"]:
                metrics.REJECTIONS.labels(check["name"]).inc()
                logger.warning("run %s rejected by %s: %s", record.run_id, check["name"],
                               check["message"])
        if verdict.passed:
            logger.info("run %s passed every check in %.2f s", record.run_id, verdict.seconds)
        return evaluation

    def _walk(self, decision: Decision, candidates: list[RunRecord], pin: Pin | None,
              evaluations: dict[str, Evaluation]) -> Outcome:
        """Ask the policy what to do until it has an outcome, judging as it asks."""
        fingerprint = self.fingerprint()
        while True:
            step = next_step(candidates, serving_run_id=decision.serving_run_id, pin=pin,
                             verdicts=decision.verdicts, fingerprint=fingerprint,
                             max_walkback=int(self.settings["MAX_WALKBACK"]),
                             judged_now=evaluations.keys())
            if isinstance(step, Outcome):
                return step
            assert isinstance(step, Judge)
            evaluations[step.record.run_id] = self.judge(decision, step.record)

    def _prepare(self, record: RunRecord, evaluation: Evaluation | None) -> None:
        """Make sure the shared copy of a chosen run exists before it is decided."""
        path = loader.shared_copy_path(self.settings["STATE_DIR"], record.run_id)
        if path.exists():
            return
        model = evaluation.model if evaluation is not None else None
        if model is None:
            model, _ = loader.load_from_run(self.source, record)
        loader.write_shared_copy(model, path)

    def _candidates(self, decision: Decision) -> list[RunRecord]:
        if decision.pin:
            return [self.source.get(decision.pin.run_id)]
        return self.source.candidates(limit=int(self.settings["MAX_WALKBACK"]))

    def select(self, decision: Decision, reason: str) -> Selection:
        """Walk, decide and write; call under the selection lock."""
        started = time.time()
        before = decision.serving_run_id
        evaluations: dict[str, Evaluation] = {}
        outcome = Outcome(None)
        error = None
        try:
            outcome = self._walk(decision, self._candidates(decision), decision.pin, evaluations)
            if outcome.chosen is not None and outcome.chosen.run_id != before:
                self._prepare(outcome.chosen, evaluations.get(outcome.chosen.run_id))
                summary = self.source.summary(outcome.chosen)
                decision.serving = ServingEntry(
                    run_id=outcome.chosen.run_id, pathspec=outcome.chosen.pathspec,
                    finished_at=outcome.chosen.finished_at, since=time.time(),
                    forced=outcome.forced, holdout_metrics=summary["holdout_metrics"])
        except (StoreUnavailable, RunNotFound, loader.LoadError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finished = time.time()
        metrics.SELECTION_SECONDS.observe(finished - started)
        decision.generation += 1
        selection = Selection(
            selection=decision.generation, reason=reason, pid=os.getpid(),
            started_at=started, finished_at=finished, seconds=round(finished - started, 4),
            before=before, after=decision.serving_run_id,
            changed=decision.serving_run_id != before,
            pinned=decision.pin.run_id if decision.pin else None,
            candidates=[entry.to_dict() for entry in outcome.looked], error=error,
            instance=self.settings["INSTANCE_ID"])
        decision.last_selection = selection
        try:
            self.store.write(decision)
        except DecisionStoreError as exc:
            raise SelectionError(f"{exc}; still serving run {before}") from exc
        if error:
            raise SelectionError(failed_message(before, error))
        logger.info("selection %d (%s): run %s -> run %s after %d candidate(s) in %.2f s",
                    decision.generation, reason, before, decision.serving_run_id,
                    len(outcome.looked), finished - started)
        return selection

    def reload(self, *, reason: str, wait: float | None) -> dict[str, Any]:
        """Select now and return what the selection did.

        A caller that waited while another selection ran gets that
        selection's result (``joined``), as it saw every run this one would.
        """
        requested_at = time.time()
        with self.store.selection_lock(timeout=wait):
            decision = self.read_for_update()
            last = decision.last_selection
            if reason != "poll" and last and self._started_after(last, requested_at):
                if last.error:
                    raise SelectionError(failed_message(last.before, last.error))
                return {**last.to_dict(), "joined": True}
            return self.select(decision, reason).to_dict()

    def _started_after(self, selection: Selection, requested_at: float) -> bool:
        """True when ``selection`` surely started after a request made at ``requested_at``.

        Another instance's start time is by its own clock: it must be later by
        more than the clock skew (else this instance selects again, which
        remembered verdicts make cheap).
        """
        same_clock = selection.instance in (None, self.settings["INSTANCE_ID"])
        margin = 0.0 if same_clock else float(self.settings["CLOCK_SKEW"])
        return selection.started_at >= requested_at + margin

    def pin(self, run_id: str, *, force: bool = False) -> dict[str, Any]:
        """Serve exactly ``run_id`` until unpinned; refuse, changing nothing, if it cannot."""
        with self.store.selection_lock(timeout=None):
            decision = self.read_for_update()
            try:
                record = self.source.get(run_id)
            except RunNotFound as exc:
                raise PinRefused(str(exc), 404) from exc
            if not record.successful:
                raise PinRefused(f"run {record.run_id} is {record.state}; only a successful "
                                 "run can be pinned", 409)
            pin = Pin(run_id=record.run_id, force=force, at=time.time())
            if force:
                logger.warning("run %s pinned with force: its checks are skipped", record.run_id)
            elif self._walk(decision, [record], pin, {}).chosen is None:
                verdict = decision.verdicts[record.run_id]
                self._write_verdicts_only(decision)
                raise PinRefused(f"run {record.run_id} failed its checks: {verdict.reason}", 422)
            decision.pin = pin
            return self.select(decision, "pin").to_dict()

    def unpin(self) -> dict[str, Any]:
        """Return to automatic selection."""
        with self.store.selection_lock(timeout=None):
            decision = self.read_for_update()
            decision.pin = None
            return self.select(decision, "unpin").to_dict()

    def _write_verdicts_only(self, decision: Decision) -> None:
        """Keep a fresh verdict from a refused pin; the rest is unchanged."""
        try:
            self.store.write(decision)
        except DecisionStoreError as exc:
            logger.error("cannot keep the verdict of a refused pin: %s", exc)
