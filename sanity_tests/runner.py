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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sanity_tests import behaviour, integrity, latency, metadata, quality
from sanity_tests.context import CheckFailure, RunContext, Thresholds
from service.servable import schema_versions

log = logging.getLogger(__name__)

Check = Callable[[Any, RunContext], None]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its name, verdict, message and duration."""

    name: str
    passed: bool
    message: str
    seconds: float


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
        try:
            check(model, context)
        except CheckFailure as exc:
            passed, message = False, str(exc) or "failed without a message"
        except Exception as exc:  # a check bug must reject the candidate, not crash the gate
            log.warning("check %s raised on run %s", name, context.run_id, exc_info=True)
            passed, message = False, f"raised {type(exc).__name__}: {exc}"
        else:
            passed, message = True, ""
        results.append(CheckResult(name, passed, message, time.perf_counter() - start))
        if stop_on_failure and not passed:
            break
    return Report(tuple(results))


#: Checks that read only the run's small artifacts; call them with ``model=None``.
RUN_CHECKS: tuple[Check, ...] = (
    quality.check_metrics_present,
    quality.check_ndcg_floor,
    quality.check_beats_baseline,
    quality.check_no_regression,
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
    behaviour.check_golden_users_lists,
    behaviour.check_deterministic,
    behaviour.check_ranking_matches_scoring,
    behaviour.check_cold_start,
    behaviour.check_lists_differ,
    metadata.check_new_events_scored,
    metadata.check_new_events_recommended,
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
    digest.update(json.dumps(schema_versions(), sort_keys=True).encode() + b"\0")
    digest.update(json.dumps(asdict(thresholds), sort_keys=True).encode())
    return digest.hexdigest()
