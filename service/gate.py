"""The sanity gate: judge one candidate run with the ``sanity_tests`` suite.

Cheap checks on the run's stored metrics come first, so a bad run is
rejected before its model is loaded. This is the one place that catches
broadly: whatever goes wrong with one candidate (an unreadable artifact, a
check that raises or hangs) becomes a rejection with a reason, never an
error that could reach the model slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sanity_tests import (
    MODEL_CHECKS,
    RUN_CHECKS,
    CheckResult,
    Report,
    RunContext,
    Thresholds,
    checks_fingerprint,
    run_checks,
)
from service.contract import (
    BASELINE_DIFFERENCE_ARTIFACT,
    CATALOGUE_ARTIFACT,
    INTERVALS_ARTIFACT,
    PROBES_ARTIFACT,
)
from service.loader import LoadError, load_from_run
from service.records import Verdict
from service.runs import RunRecord, RunSource
from service.slot import ServedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """A verdict and, when the run passed, its loaded model and metrics."""

    verdict: Verdict
    model: Any = None
    holdout_metrics: dict[str, float] | None = None
    report: Report | None = None


def _failure(name: str, exc: BaseException, started: float) -> CheckResult:
    return CheckResult(name=name, passed=False, message=f"{type(exc).__name__}: {exc}",
                       seconds=time.perf_counter() - started)


def _verdict(record: RunRecord, report: Report, fingerprint: str, seconds: float) -> Verdict:
    failed = report.failed
    return Verdict(
        run_id=record.run_id,
        passed=report.passed,
        failed_checks=[result.name for result in failed],
        reason="passed every check" if report.passed else "; ".join(
            f"{result.name}: {result.message}" for result in failed),
        evaluated_at=time.time(),
        seconds=round(seconds, 4),
        fingerprint=fingerprint,
        checks=list(report.to_dict()["results"]),
    )


def _optional(source: RunSource, record: RunRecord, name: str) -> Any:
    """Read an artifact apart from the summary (operators' listings never need it); None if absent.

    The probes' absence is check_probes_present's to report; a catalogue's
    means a ratings file.
    """
    try:
        return source.artifact(record, name)
    except KeyError:
        return None


def build_context(record: RunRecord, summary: Mapping[str, Any],
                  probes: Mapping[str, Any] | None, thresholds: Thresholds,
                  serving: ServedModel | None) -> RunContext:
    """Return what the checks know about the run; the serving model when it is another run's."""
    return RunContext(
        run_id=record.run_id,
        pathspec=record.pathspec,
        holdout_metrics=summary["holdout_metrics"],
        baseline_metrics=summary["baseline_metrics"],
        library_versions=summary["library_versions"],
        golden_users=summary["golden_users"] or (),
        schema_version=summary["schema_version"],
        model_class=summary["model_class"],
        as_of=time.time(),
        thresholds=thresholds,
        holdout_intervals=summary.get(INTERVALS_ARTIFACT),
        baseline_difference=summary.get(BASELINE_DIFFERENCE_ARTIFACT),
        probes=probes,
        serving_model=(serving.model
                       if serving is not None and serving.run_id != record.run_id else None),
    )


def evaluate(source: RunSource, record: RunRecord, settings: Mapping[str, Any],
             serving: ServedModel | None = None) -> Evaluation:
    """Run the cheap checks, then load the model and run the full checks.

    The full checks measure the loaded model on the run's probes and compare
    it with ``serving``, the model serving now, on the same users.
    """
    started = time.perf_counter()
    thresholds = Thresholds.from_settings(settings)
    fingerprint = checks_fingerprint(thresholds)

    def rejected(*results: CheckResult) -> Evaluation:
        report = Report(results=tuple(results))
        return Evaluation(_verdict(record, report, fingerprint, time.perf_counter() - started),
                          report=report)

    step = time.perf_counter()
    try:
        summary = source.summary(record)
        probes = _optional(source, record, PROBES_ARTIFACT)
    except Exception as exc:
        return rejected(_failure("read_run", exc, step))
    context = build_context(record, summary, probes, thresholds, serving)
    cheap = run_checks(RUN_CHECKS, None, context)
    if not cheap.passed:
        return rejected(*cheap.results)

    step = time.perf_counter()
    try:
        catalogue = _optional(source, record, CATALOGUE_ARTIFACT)
    except Exception as exc:  # transient, as the summary's read: judged again later
        return rejected(*cheap.results, _failure("read_run", exc, step))
    step = time.perf_counter()
    try:
        model, load_warnings = load_from_run(source, record)
    except LoadError as exc:
        return rejected(*cheap.results, _failure("load_model", exc, step))
    loaded = CheckResult(name="load_model", passed=True, message="",
                         seconds=time.perf_counter() - step)
    context = replace(context, load_warnings=tuple(load_warnings), catalogue=catalogue)
    full = run_checks(MODEL_CHECKS, model, context)
    report = Report(results=cheap.results + (loaded,) + full.results)
    verdict = _verdict(record, report, fingerprint, time.perf_counter() - started)
    return Evaluation(verdict, model=model if report.passed else None,
                      holdout_metrics=dict(summary["holdout_metrics"] or {}), report=report)


def evaluate_within(source: RunSource, record: RunRecord, settings: Mapping[str, Any],
                    serving: ServedModel | None = None) -> Evaluation:
    """Evaluate with the per-candidate time limit ``CHECK_TIMEOUT``.

    The evaluation runs in a daemon thread. A candidate that overruns is
    rejected and the thread is abandoned (Python cannot kill it); it holds no
    lock and touches no shared state, so serving is never blocked by it.
    """
    limit = float(settings["CHECK_TIMEOUT"])
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["evaluation"] = evaluate(source, record, settings, serving)
        except BaseException as exc:  # the last line of defence for one candidate
            outcome["error"] = exc

    started = time.perf_counter()
    worker = threading.Thread(target=target, name=f"evaluate-{record.run_id}", daemon=True)
    worker.start()
    worker.join(limit)
    fingerprint = checks_fingerprint(Thresholds.from_settings(settings))
    if worker.is_alive():
        exc = TimeoutError(f"checks did not finish within {limit:g} s")
        report = Report(results=(_failure("time_limit", exc, started),))
        logger.warning("run %s: abandoned after %.1f s", record.run_id, limit)
        return Evaluation(_verdict(record, report, fingerprint, limit), report=report)
    if "error" in outcome:
        report = Report(results=(_failure("evaluation", outcome["error"], started),))
        return Evaluation(_verdict(record, report, fingerprint, time.perf_counter() - started),
                          report=report)
    return outcome["evaluation"]


def decided_serving_model(settings: Mapping[str, Any], source: RunSource) -> ServedModel | None:
    """Load the decision's serving run, to compare a candidate with it outside a worker."""
    from service.backends import decision_store
    from service.loader import serve

    serving = decision_store(settings).read().serving
    if serving is None:
        return None
    record = source.get(serving.run_id)
    model, _ = load_from_run(source, record)
    return serve(model, record, serving.holdout_metrics)
