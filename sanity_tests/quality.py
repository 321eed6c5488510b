"""Quality checks on the run's stored holdout metrics; they need no model.

These run before the model is loaded, so a weak run is rejected cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sanity_tests.context import CheckFailure, RunContext
from service.contract import METRIC_KEYS, PRIMARY_METRIC

NDCG = PRIMARY_METRIC


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _problems(name: str, metrics: Mapping[str, Any] | None, keys: tuple[str, ...]) -> list[str]:
    if metrics is None:
        return [f"{name} is missing"]
    problems = []
    missing = [key for key in keys if key not in metrics]
    if missing:
        problems.append(f"{name} lacks {', '.join(missing)}")
    bad = [f"{key}={metrics[key]!r}" for key in keys
           if key in metrics and not _finite(metrics[key])]
    if bad:
        problems.append(f"{name} has non-finite {', '.join(bad)}")
    return problems


def check_metrics_present(model: Any, context: RunContext) -> None:
    """Require finite holdout and baseline metrics, so the other checks can judge the run."""
    problems = (_problems("holdout_metrics", context.holdout_metrics, METRIC_KEYS)
                + _problems("baseline_metrics", context.baseline_metrics, (NDCG,)))
    if problems:
        raise CheckFailure(
            f"run {context.run_id}: {'; '.join(problems)}; the training flow must store "
            f"{', '.join(METRIC_KEYS)} for the model and ndcg@10 for the popularity baseline")


def _ndcg(name: str, metrics: Mapping[str, Any] | None) -> float:
    if metrics is None or not _finite(metrics.get(NDCG)):
        raise CheckFailure(f"{name} has no finite {NDCG}; cannot judge the run")
    return float(metrics[NDCG])


def check_ndcg_floor(model: Any, context: RunContext) -> None:
    """Require holdout NDCG@10 at or above the configured floor."""
    ndcg = _ndcg("holdout_metrics", context.holdout_metrics)
    floor = context.thresholds.ndcg_floor
    if ndcg < floor:
        raise CheckFailure(
            f"holdout {NDCG} {ndcg:.4f} is below the floor {floor:.4f} "
            f"(LINEUP_NDCG_FLOOR); the model barely ranks the holdout events")


def check_beats_baseline(model: Any, context: RunContext) -> None:
    """Require holdout NDCG@10 strictly above the run's own popularity baseline."""
    ndcg = _ndcg("holdout_metrics", context.holdout_metrics)
    baseline = _ndcg("baseline_metrics", context.baseline_metrics)
    if not ndcg > baseline:
        raise CheckFailure(
            f"holdout {NDCG} {ndcg:.4f} does not beat the popularity baseline {baseline:.4f} "
            f"on the same holdout; serving popularity would be as good")


def check_no_regression(model: Any, context: RunContext) -> None:
    """Require NDCG@10 within the tolerance of the serving model's, when one is serving."""
    serving = context.serving_metrics
    if serving is None or not _finite(serving.get(NDCG)):
        return  # nothing serving (or nothing to compare with): no regression possible
    ndcg = _ndcg("holdout_metrics", context.holdout_metrics)
    tolerance = context.thresholds.regression_tolerance
    required = float(serving[NDCG]) * (1.0 - tolerance)
    if ndcg < required:
        raise CheckFailure(
            f"holdout {NDCG} {ndcg:.4f} regresses from the serving model's "
            f"{float(serving[NDCG]):.4f}: below {required:.4f} "
            f"(tolerance {tolerance:.0%}, LINEUP_REGRESSION_TOLERANCE)")
