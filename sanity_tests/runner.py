"""Run checks against one candidate and collect a report, as ``check_estimator`` does.

A check that raises :class:`CheckFailure` fails with its message; a check that
raises anything else also fails ("raised ValueError: ..."), so a bug in a check
rejects the candidate instead of crashing the gate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sanity_tests import behaviour, comparison, integrity, latency, measured, metadata, quality
from sanity_tests.context import CheckFailure, Measure, RunContext, Thresholds
from service.servable import schema_versions
from service.training import probes

log = logging.getLogger(__name__)

#: A check returns nothing, or the measures it judged by; it raises CheckFailure to fail.
Check = Callable[[Any, RunContext], "Sequence[Measure] | None"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its name, verdict, message, duration and measures."""

    name: str
    passed: bool
    message: str
    seconds: float
    measures: tuple[Measure, ...] = ()


@dataclass(frozen=True)
class Report:
    """The results of one run of checks, in the order they ran."""

    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when every check passed (an empty report passes)."""
        return all(result.passed for result in self.results)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        """The failed results, in order."""
        return tuple(result for result in self.results if not result.passed)

    @property
    def failed_names(self) -> list[str]:
        """The names of the failed checks, in order."""
        return [result.name for result in self.failed]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict: ``passed``, ``failed`` (names) and ``results``."""
        return {"passed": self.passed, "failed": self.failed_names,
                "results": [asdict(result) for result in self.results]}

    def format(self) -> str:
        """Return a human-readable table: PASS/FAIL, name, milliseconds, message."""
        width = max([len(r.name) for r in self.results] + [5])
        lines = [f"{'':4}  {'check':<{width}}  {'ms':>8}  message"]
        for r in self.results:
            verdict = "PASS" if r.passed else "FAIL"
            lines.append(f"{verdict:4}  {r.name:<{width}}  {r.seconds * 1000:8.1f}  {r.message}")
        total = len(self.results)
        lines.append(f"{total - len(self.failed)} of {total} checks passed")
        return "\n".join(lines)

    def format_measures(self) -> str:
        """Return claimed against measured, one row per measure, with each check's decision."""
        rows = [("check", "measure", "claimed", "measured", "95% interval", "decision", "rule")]
        for r in self.results:
            for m in r.measures:
                interval = ("-" if m.low is None or m.high is None
                            else f"[{m.low:.4f}, {m.high:.4f}]")
                rows.append((r.name, m.name, _number(m.claimed), _number(m.measured), interval,
                             "PASS" if r.passed else "FAIL", m.rule))
        if len(rows) == 1:
            return "no measures"
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths))
                         .rstrip() for row in rows)


def flat_measures(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return every check's measures from a report's JSON results, each with its check's decision.

    For listings (``/admin/runs``): one row per measure, ``check`` and
    ``passed`` beside the measure's own fields.
    """
    return [{"check": result["name"], "passed": result["passed"], **measure}
            for result in results for measure in result.get("measures", ())]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def check_name(check: Check) -> str:
    """Return the name a check is reported under (its function name)."""
    inner = getattr(check, "func", check)  # functools.partial
    return getattr(inner, "__name__", repr(check))


def run_checks(checks: Sequence[Check], model: Any, context: RunContext, *,
               stop_on_failure: bool = False) -> Report:
    """Run ``checks`` in order on ``model`` and return the report; never raises for a check."""
    results = []
    for check in checks:
        name = check_name(check)
        start = time.perf_counter()
        measures: tuple[Measure, ...] = ()
        try:
            measures = tuple(check(model, context) or ())
        except CheckFailure as exc:
            passed, message = False, str(exc) or "failed without a message"
            measures = exc.measures
        except Exception as exc:  # a check bug must reject the candidate, not crash the gate
            log.warning("check %s raised on run %s", name, context.run_id, exc_info=True)
            passed, message = False, f"raised {type(exc).__name__}: {exc}"
        else:
            passed, message = True, ""
        results.append(CheckResult(name, passed, message, time.perf_counter() - start, measures))
        if stop_on_failure and not passed:
            break
    return Report(tuple(results))


#: Checks that read only the run's small artifacts; call them with ``model=None``.
RUN_CHECKS: tuple[Check, ...] = (
    quality.check_metrics_present,
    quality.check_ndcg_floor,
    quality.check_beats_baseline,
    measured.check_probes_present,
    integrity.check_library_versions,
    integrity.check_run_schema_version,
)

#: Checks on the loaded model; integrity first, so later failures are explained by earlier ones.
MODEL_CHECKS: tuple[Check, ...] = (
    integrity.check_fitted_estimator,
    integrity.check_schema_version,
    integrity.check_no_load_warnings,
    integrity.check_array_shapes,
    integrity.check_finite_arrays,
    integrity.check_catalogue_matches_run,
    behaviour.check_golden_users_lists,
    behaviour.check_deterministic,
    behaviour.check_ranking_matches_scoring,
    behaviour.check_cold_start,
    behaviour.check_taste_labels,
    behaviour.check_lists_differ,
    metadata.check_new_events_scored,
    metadata.check_new_events_recommended,
    measured.check_probes_known,
    measured.check_measured_quality,
    comparison.check_no_regression,
    comparison.check_list_changes,
    latency.check_latency,
)


def checks_fingerprint(thresholds: Thresholds) -> str:
    """Return a sha256 over every module of this package, the model schemas and the thresholds.

    A verdict remembered under another fingerprint was reached by other checks,
    for another model schema or with other thresholds, so the caller
    re-evaluates it. Every ``.py`` file here counts, so a new check module
    invalidates old verdicts without a list to keep.
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for module in sorted(package.rglob("*.py")):
        digest.update(str(module.relative_to(package)).encode() + b"\0")
        digest.update(module.read_bytes() + b"\0")
    # The probe measure the checks recompute lives with the flow that stores its claim.
    digest.update(Path(probes.__file__).read_bytes() + b"\0")
    digest.update(json.dumps(schema_versions(), sort_keys=True).encode() + b"\0")
    digest.update(json.dumps(asdict(thresholds), sort_keys=True).encode())
    return digest.hexdigest()
