"""The manager: the selection policy and each worker's watcher.

Selection (one worker at a time, under the decision store's lock) walks the
successful runs newest first, remembers a verdict for every run it judges,
stops at the first that passes, at the run already serving, or after
``MAX_WALKBACK`` runs, and writes the decision. Every worker's watcher reads
the decision and swaps in the run it names from the shared copy, so N
workers evaluate each candidate once and all serve the same run.

Availability first: the slot changes only after a candidate passed, its
shared copy and the decision were written, and the copy opened. Any failure
on the way leaves the model that serves in place.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from sanity_tests import Thresholds, checks_fingerprint
from service import loader, metrics
from service.decisions import Decision, DecisionStore, DecisionWriteError, SelectionBusy
from service.gate import Evaluation, Verdict, evaluate_within
from service.runs import RunNotFound, RunRecord, RunSource, StoreUnavailable
from service.slot import ModelSlot, ServedModel
from service.stores import SharedDecisionStore, fleet_status, open_decision_store

logger = logging.getLogger(__name__)


#: A worker reports what it serves at least this often (seconds); a report
#: older than three times this is from a worker that is gone.
WORKER_REPORT_EVERY = 5.0


class SelectionError(RuntimeError):
    """A selection could not finish; what serves is unchanged."""


class PinRefused(ValueError):
    """A pin was refused; ``status`` is the HTTP status that fits the reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _candidate_entry(record: RunRecord, verdict: Verdict | None, *, remembered: bool,
                     note: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"run_id": record.run_id, "finished_at": record.finished_at}
    if verdict is None:
        entry.update(verdict=note or "serving", remembered=remembered)
    else:
        entry.update(verdict="passed" if verdict.passed else "rejected", remembered=remembered,
                     failed_checks=verdict.failed_checks, reason=verdict.reason)
    return entry


def _failed(before: str | None, error: str) -> str:
    return f"selection failed, still serving run {before}: {error}"


class ModelManager:
    """Select, remember and serve models for one worker process."""

    def __init__(self, settings: Mapping[str, Any], *, source: RunSource | None = None,
                 store: DecisionStore | SharedDecisionStore | None = None,
                 slot: ModelSlot | None = None) -> None:
        self.settings = settings
        self.source = source or RunSource(settings)
        self.store = store or open_decision_store(settings)
        self.slot = slot or ModelSlot()
        self.last_error: dict[str, Any] | None = None
        self._sync_lock = threading.Lock()
        self._seen_signature: object = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: tuple[str | None, float] = (None, 0.0)
        self._report_error: dict[str, Any] | None = None

    # -- what every worker does ---------------------------------------------

    def _record_error(self, message: str) -> None:
        logger.error("%s", message)
        self.last_error = {"at": time.time(), "message": message}

    def _open(self, serving: Mapping[str, Any]) -> ServedModel:
        """Open the shared copy of the decided run, making it if it is missing."""
        record = RunRecord(run_id=serving["run_id"], pathspec=serving["pathspec"],
                           state="successful", created_at=None,
                           finished_at=serving.get("finished_at"))
        path = loader.shared_copy_path(self.settings["STATE_DIR"], record.run_id)
        if not path.exists():
            model, _ = loader.load_from_run(self.source, record)
            loader.write_shared_copy(model, path)
        return loader.serve(loader.open_shared_copy(path), record, serving.get("holdout_metrics"),
                            forced=bool(serving.get("forced")))

    def sync(self, *, force: bool = False) -> bool:
        """Serve the run the decision on disk names; return True if the slot changed."""
        with self._sync_lock:
            try:
                signature = self.store.signature()
                if signature is None or (signature == self._seen_signature and not force):
                    return False
                decision = self.store.read()
            except DecisionWriteError as exc:
                self._record_error(str(exc))
                if self.slot.get() is not None:
                    return False  # keep serving; catch up when the store is back
                # A worker that starts while the shared store is unreachable
                # serves the decision its instance last read.
                decision, signature = self.store.cached(), None
            serving = decision.serving
            current = self.slot.get()
            if serving is None or (current is not None and current.run_id == serving["run_id"]
                                   and current.forced == bool(serving.get("forced"))):
                self._seen_signature = signature
                return False
            try:
                old = self.slot.swap(self._open(serving))
            except Exception as exc:  # keep serving what we have; try again next tick
                self._record_error(f"cannot load decided run {serving['run_id']}: "
                                   f"{type(exc).__name__}: {exc}")
                return False
            self._seen_signature = signature
            metrics.SWAPS.inc()
            if old is not None:
                metrics.SERVING_RUN.labels(old.run_id).set(0)
            metrics.SERVING_RUN.labels(serving["run_id"]).set(1)
            return True

    def start(self) -> None:
        """Serve the decided run, then start this worker's watcher thread.

        Call after gunicorn forks and before the worker accepts connections:
        the first sync is done here, not in the thread, so a new worker (after
        a restart or a crash) never answers 503 while a run is decided.
        """
        if self._thread is not None:
            return
        self._tick(self.sync)
        self._tick(self._report)  # siblings' /readyz wait for this worker's report
        self._thread = threading.Thread(target=self._watch, name="lineup-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the watcher thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self) -> None:
        """Follow the decision every WATCH_INTERVAL; select every POLL_INTERVAL."""
        self._tick(lambda: self.poll(force=True))
        next_poll = time.monotonic() + float(self.settings["POLL_INTERVAL"])
        while not self._stop.wait(float(self.settings["WATCH_INTERVAL"])):
            self._tick(self.sync)
            self._tick(self._report)
            if time.monotonic() >= next_poll:
                self._tick(self.poll)
                next_poll = time.monotonic() + float(self.settings["POLL_INTERVAL"])

    def _tick(self, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # the watcher must outlive any one failure
            self._record_error(f"watcher: {type(exc).__name__}: {exc}")

    def _report(self) -> None:
        """Write what this worker serves, so the status can show every worker."""
        served = self.slot.get()
        run_id = served.run_id if served else None
        if served is not None and served.finished_at is not None:
            metrics.MODEL_AGE.set(time.time() - served.finished_at)
        last_run, last_at = self._reported
        if run_id == last_run and time.time() - last_at < WORKER_REPORT_EVERY:
            return
        report = {"pid": os.getpid(), "run_id": run_id, "seen_at": time.time(),
                  "loaded_at": served.loaded_at if served else None,
                  "last_error": self.last_error}
        # A failed report (a full or read-only state folder) is tried again next
        # period, not next tick, and its error is cleared once a report is written.
        self._reported = (run_id, report["seen_at"])
        try:
            self.store.write_worker(report)
        except OSError as exc:
            self._record_error(f"cannot report what this worker serves: {exc}")
            self._report_error = self.last_error
            return
        if self._report_error is not None and self.last_error is self._report_error:
            self.last_error = None
        self._report_error = None

    def poll(self, *, force: bool = False) -> dict[str, Any] | None:
        """Select if no worker did within the poll interval; never wait for the lock."""
        if not force:
            last = self.store.read().last_selection
            if last and time.time() - last["finished_at"] < float(self.settings["POLL_INTERVAL"]):
                return None
        try:
            return self.reload(reason="poll", wait=0)
        except SelectionBusy:
            return None
        except SelectionError:
            return None  # recorded in last_error; serving is unchanged

    # -- selection (one worker at a time) -----------------------------------

    def reload(self, *, reason: str = "admin", wait: float | None = None) -> dict[str, Any]:
        """Run a selection now and return what it did.

        A caller that waited while another selection ran gets that
        selection's result (``joined``), as it saw every run this one would.
        """
        requested_at = time.time()
        with self.store.selection_lock(timeout=wait):
            decision = self._read_for_update()
            last = decision.last_selection
            if reason != "poll" and last and self._started_after(last, requested_at):
                self.sync()
                if last["error"]:
                    raise SelectionError(_failed(last["before"], last["error"]))
                return {**last, "joined": True}
            result = self._select(decision, reason)
        self.sync()
        return result

    def _started_after(self, selection: Mapping[str, Any], requested_at: float) -> bool:
        """True when ``selection`` surely started after a request made at ``requested_at``.

        Another instance's start time is by its own clock: it must be later by
        more than the clock skew (else this instance selects again, which
        remembered verdicts make cheap).
        """
        same_clock = selection.get("instance") in (None, self.settings["INSTANCE_ID"])
        margin = 0.0 if same_clock else float(self.settings["CLOCK_SKEW"])
        return selection["started_at"] >= requested_at + margin

    def _read_for_update(self) -> Decision:
        try:
            return self.store.read()
        except DecisionWriteError as exc:
            self._record_error(str(exc))
            raise SelectionError(str(exc)) from exc

    def _fingerprint(self) -> str:
        return checks_fingerprint(Thresholds.from_settings(self.settings))

    def _judge(self, decision: Decision, record: RunRecord,
               fingerprint: str) -> tuple[Verdict, Evaluation | None]:
        """Return the run's verdict, remembered or fresh (and recorded)."""
        remembered = decision.verdicts.get(record.run_id)
        if remembered and remembered.get("fingerprint") == fingerprint:
            verdict = Verdict.from_dict(remembered)
            if not verdict.transient:
                return verdict, None
        evaluation = evaluate_within(self.source, record, self.settings, self.slot.get())
        verdict = evaluation.verdict
        decision.verdicts[record.run_id] = verdict.to_dict()
        for check in verdict.checks:
            metrics.CHECK_SECONDS.labels(check["name"]).observe(check["seconds"])
            if not check["passed"]:
                metrics.REJECTIONS.labels(check["name"]).inc()
        if verdict.passed:
            logger.info("run %s passed every check in %.2f s", record.run_id, verdict.seconds)
        else:
            for check in verdict.checks:
                if not check["passed"]:
                    logger.warning("run %s rejected by %s: %s", record.run_id, check["name"],
                                   check["message"])
        return verdict, evaluation

    def _prepare(self, record: RunRecord, evaluation: Evaluation | None) -> None:
        """Make sure the shared copy of a passed run exists before it is decided."""
        path = loader.shared_copy_path(self.settings["STATE_DIR"], record.run_id)
        if path.exists():
            return
        model = evaluation.model if evaluation is not None else None
        if model is None:
            model, _ = loader.load_from_run(self.source, record)
        loader.write_shared_copy(model, path)

    def _serving_entry(self, record: RunRecord, *, forced: bool) -> dict[str, Any]:
        summary = self.source.summary(record)
        return {"run_id": record.run_id, "pathspec": record.pathspec,
                "finished_at": record.finished_at, "since": time.time(), "forced": forced,
                "holdout_metrics": summary["holdout_metrics"]}

    def _select(self, decision: Decision, reason: str) -> dict[str, Any]:
        started = time.time()
        before = decision.serving_run_id
        fingerprint = self._fingerprint()
        looked: list[dict[str, Any]] = []
        chosen: tuple[RunRecord, Evaluation | None] | None = None
        error = None
        try:
            if decision.pin:
                candidates = [self.source.get(decision.pin["run_id"])]
            else:
                candidates = self.source.candidates(limit=int(self.settings["MAX_WALKBACK"]))
            for record in candidates:
                # Nothing newer passed: the serving run stays, unless it was never
                # judged by these checks (an upgrade, new thresholds, a forced pin).
                judged = decision.verdicts.get(record.run_id, {}).get("fingerprint")
                if record.run_id == before and not decision.pin and judged == fingerprint:
                    looked.append(_candidate_entry(record, None, remembered=True))
                    break
                if decision.pin and decision.pin.get("force"):
                    looked.append(_candidate_entry(record, None, remembered=False, note="forced"))
                    chosen = (record, None)
                    break
                verdict, evaluation = self._judge(decision, record, fingerprint)
                looked.append(_candidate_entry(record, verdict, remembered=evaluation is None))
                if verdict.passed:
                    chosen = (record, evaluation)
                    break
            if chosen is not None and chosen[0].run_id != before:
                record, evaluation = chosen
                self._prepare(record, evaluation)
                forced = bool(decision.pin and decision.pin.get("force"))
                decision.serving = self._serving_entry(record, forced=forced)
        except (StoreUnavailable, RunNotFound, loader.LoadError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finished = time.time()
        metrics.SELECTION_SECONDS.observe(finished - started)
        decision.generation += 1
        result = {
            "selection": decision.generation, "reason": reason, "pid": os.getpid(),
            "instance": self.settings["INSTANCE_ID"],
            "started_at": started, "finished_at": finished,
            "seconds": round(finished - started, 4),
            "before": before, "after": decision.serving_run_id,
            "changed": decision.serving_run_id != before,
            "pinned": decision.pin["run_id"] if decision.pin else None,
            "candidates": looked, "error": error,
        }
        decision.last_selection = result
        try:
            self.store.write(decision)
        except DecisionWriteError as exc:
            self._record_error(f"{exc}; still serving run {before}")
            raise SelectionError(str(exc)) from exc
        if error:
            self._record_error(_failed(before, error))
            raise SelectionError(_failed(before, error))
        self.last_error = None
        logger.info("selection %d (%s): run %s -> run %s after %d candidate(s) in %.2f s",
                    decision.generation, reason, before, decision.serving_run_id, len(looked),
                    finished - started)
        return result

    # -- pins ---------------------------------------------------------------

    def pin(self, run_id: str, *, force: bool = False) -> dict[str, Any]:
        """Serve exactly ``run_id`` until unpinned; refuse, changing nothing, if it cannot."""
        with self.store.selection_lock(timeout=None):
            decision = self._read_for_update()
            try:
                record = self.source.get(run_id)
            except RunNotFound as exc:
                raise PinRefused(str(exc), 404) from exc
            if not record.successful:
                raise PinRefused(f"run {record.run_id} is {record.state}; only a successful "
                                 "run can be pinned", 409)
            if not force:
                verdict, _ = self._judge(decision, record, self._fingerprint())
                if not verdict.passed:
                    self._write_verdicts_only(decision)
                    raise PinRefused(f"run {record.run_id} failed its checks: {verdict.reason}",
                                     422)
            else:
                logger.warning("run %s pinned with force: its checks are skipped", record.run_id)
            decision.pin = {"run_id": record.run_id, "force": force, "at": time.time()}
            result = self._select(decision, "pin")
        self.sync()
        return result

    def unpin(self) -> dict[str, Any]:
        """Return to automatic selection."""
        with self.store.selection_lock(timeout=None):
            decision = self._read_for_update()
            decision.pin = None
            result = self._select(decision, "unpin")
        self.sync()
        return result

    def _write_verdicts_only(self, decision: Decision) -> None:
        """Keep a fresh verdict from a refused pin; the rest is unchanged."""
        try:
            self.store.write(decision)
        except DecisionWriteError as exc:
            self._record_error(str(exc))

    # -- what operators see -------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Describe what serves here and in the decision, and the recent verdicts."""
        served = self.slot.get()
        try:
            decision = self.store.read()
        except DecisionWriteError as exc:
            self._record_error(str(exc))
            decision = Decision()
        now = time.time()
        stale_after = float(self.settings["STALE_AFTER_HOURS"]) * 3600
        serving = None
        if served is not None:
            age = now - served.finished_at if served.finished_at else None
            serving = {
                "run_id": served.run_id, "pathspec": served.pathspec,
                "since": (decision.serving or {}).get("since"), "loaded_at": served.loaded_at,
                "finished_at": served.finished_at, "forced": served.forced,
                "age_seconds": round(age, 1) if age is not None else None,
                "stale": bool(age is not None and age > stale_after),
                "holdout_metrics": served.holdout_metrics,
            }
        verdicts = sorted(decision.verdicts.values(), key=lambda v: v.get("evaluated_at", 0),
                          reverse=True)[:20]
        return {
            "ready": served is not None,
            "serving": serving,
            "decided_run_id": decision.serving_run_id,
            "pin": decision.pin,
            "last_selection": decision.last_selection,
            "verdicts": [{k: v[k] for k in ("run_id", "passed", "failed_checks", "reason",
                                            "evaluated_at") if k in v} for v in verdicts],
            "last_error": self.last_error,
            "worker_pid": os.getpid(),
            "workers": self.store.workers(max_age=3 * WORKER_REPORT_EVERY),
            "instance": self.settings["INSTANCE_ID"],
            "instances": self._fleet(decision),
        }

    def _fleet(self, decision: Decision) -> list[dict[str, Any]]:
        try:
            return fleet_status(self.store, self.settings["INSTANCE_ID"],
                                decision.serving_run_id, 3 * WORKER_REPORT_EVERY)
        except DecisionWriteError as exc:  # the store is unreachable: say so, show the rest
            self._record_error(str(exc))
            return []
