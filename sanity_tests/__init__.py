"""Lineup's sanity suite: the checks a candidate model must pass before it serves.

In the spirit of scikit-learn's ``check_estimator``: each check is a small
``check_<what>(model, context)`` that raises :class:`CheckFailure` with an
actionable message, and :func:`run_checks` runs them into a :class:`Report`.
``RUN_CHECKS`` need only the run's stored artifacts (call with ``model=None``);
``MODEL_CHECKS`` inspect the loaded model, measure it on the run's probes and
compare it with the model serving now.
"""

from sanity_tests.behaviour import (
    COLD_PROBE,
    check_cold_start,
    check_deterministic,
    check_golden_users_lists,
    check_lists_differ,
    check_ranking_matches_scoring,
    check_taste_labels,
)
from sanity_tests.comparison import check_list_changes, check_no_regression
from sanity_tests.context import CheckFailure, Measure, RunContext, Thresholds
from sanity_tests.integrity import (
    check_array_shapes,
    check_catalogue_matches_run,
    check_finite_arrays,
    check_fitted_estimator,
    check_library_versions,
    check_no_load_warnings,
    check_run_schema_version,
    check_schema_version,
)
from sanity_tests.latency import check_latency
from sanity_tests.metadata import check_new_events_recommended, check_new_events_scored
from sanity_tests.quality import (
    check_beats_baseline,
    check_metrics_present,
    check_ndcg_floor,
)
from sanity_tests.measured import (
    check_measured_quality,
    check_probes_known,
    check_probes_present,
)
from sanity_tests.runner import (
    MODEL_CHECKS,
    RUN_CHECKS,
    CheckResult,
    Report,
    check_name,
    checks_fingerprint,
    flat_measures,
    run_checks,
)

__all__ = [
    "COLD_PROBE",
    "MODEL_CHECKS",
    "RUN_CHECKS",
    "CheckFailure",
    "CheckResult",
    "Measure",
    "Report",
    "RunContext",
    "Thresholds",
    "check_array_shapes",
    "check_beats_baseline",
    "check_catalogue_matches_run",
    "check_cold_start",
    "check_deterministic",
    "check_finite_arrays",
    "check_fitted_estimator",
    "check_golden_users_lists",
    "check_latency",
    "check_library_versions",
    "check_list_changes",
    "check_lists_differ",
    "check_measured_quality",
    "check_metrics_present",
    "check_name",
    "check_ndcg_floor",
    "check_new_events_recommended",
    "check_new_events_scored",
    "check_no_load_warnings",
    "check_no_regression",
    "check_probes_known",
    "check_probes_present",
    "check_ranking_matches_scoring",
    "check_run_schema_version",
    "check_schema_version",
    "check_taste_labels",
    "checks_fingerprint",
    "flat_measures",
    "run_checks",
]
