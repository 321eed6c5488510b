"""Quality checks on the run's stored holdout metrics and intervals; they need no model.

These run before the model is loaded, so a weak run is rejected cheaply. They
judge the run's claims; sanity_tests.measured holds the loaded model to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sanity_tests.context import CheckFailure, Measure, RunContext
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


def _interval(context: RunContext) -> tuple[float | None, float | None]:
    """Return the stored 95% interval of holdout NDCG@10, (None, None) without one."""
    stored = (context.holdout_intervals or {}).get(NDCG)
    if stored is None or len(stored) != 2 or not all(_finite(v) for v in stored):
        return None, None
    return float(stored[0]), float(stored[1])


def check_ndcg_floor(model: Any, context: RunContext) -> list[Measure]:
    """Require holdout NDCG@10 at or above the configured floor."""
    ndcg = _ndcg("holdout_metrics", context.holdout_metrics)
    floor = context.thresholds.ndcg_floor
    low, high = _interval(context)
    claim = Measure(f"holdout {NDCG}", None, low, high, ndcg,
                    f"reject when below {floor:g} (LINEUP_NDCG_FLOOR)")
    if ndcg < floor:
        raise CheckFailure(
            f"holdout {NDCG} {ndcg:.4f} is below the floor {floor:.4f} "
            f"(LINEUP_NDCG_FLOOR); the model barely ranks the holdout events", [claim])
    return [claim]


def check_beats_baseline(model: Any, context: RunContext) -> list[Measure]:
    """Require the run's holdout NDCG@10 not surely below its popularity baseline's.

    With the flow's paired interval (model minus popularity on the same
    users), the run fails only when the interval's upper end is below
    ``baseline_margin``; a run without one falls back to the point estimates.
    """
    ndcg = _ndcg("holdout_metrics", context.holdout_metrics)
    baseline = _ndcg("baseline_metrics", context.baseline_metrics)
    margin = context.thresholds.baseline_margin
    paired = (context.baseline_difference or {}).get(NDCG) or {}
    if all(_finite(paired.get(key)) for key in ("mean", "low", "high")):
        difference = Measure(f"holdout {NDCG} - popularity", None, float(paired["low"]),
                             float(paired["high"]), float(paired["mean"]),
                             f"reject when high < {margin:g} (LINEUP_BASELINE_MARGIN)")
        if difference.high < margin:
            raise CheckFailure(
                f"holdout {NDCG} {ndcg:.4f} does not beat the popularity baseline "
                f"{baseline:.4f}: the paired difference {difference.claimed:+.4f} "
                f"[{difference.low:+.4f}, {difference.high:+.4f}] lies below {margin:g}",
                [difference])
        return [difference]
    difference = Measure(f"holdout {NDCG} - popularity", None, claimed=ndcg - baseline,
                         rule="no interval stored: reject when not above 0")
    if not ndcg > baseline:
        raise CheckFailure(
            f"holdout {NDCG} {ndcg:.4f} does not beat the popularity baseline {baseline:.4f} "
            f"on the same holdout (point estimates; the run stored no paired interval); "
            f"serving popularity would be as good", [difference])
    return [difference]
