"""The hyperparameter search: which points, in which order, inside a time budget.

The space has four axes: the SVD rank (``n_components``), the recency
half-life in days (``inf``: no decay), the popularity prior's weight and the
interaction weighting (raw strength, binary, log). The points come in a
fixed order for a given seed: the estimator's defaults first, then every
one-axis change of them (so each axis is explored even if the budget ends
early), then random points of the full product. The flow deals them out
round-robin to its ``foreach`` tasks; each task fits and scores its share
until its time budget is spent, with BLAS held to one thread so that tasks
running side by side do not fight over the cores.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)

#: Half-lives (days) tried when they are shorter than the training span; ``inf`` always.
HALF_LIVES = (7.0, 14.0, 30.0, 90.0, 365.0, 1461.0)


def parse_list(text: str, kind: type = float) -> list:
    """Parse a comma-separated list ("16,32,64", "7,14,inf", "raw,log")."""
    return [kind(part.strip()) for part in str(text).split(",") if part.strip()]


def half_lives(text: str, span_days: float) -> list[float]:
    """Return the half-lives to try: the listed ones, or "auto": those of HALF_LIVES < span, inf.

    "auto" adapts to the data's rhythm: days for an events log of weeks,
    years for a ratings file of decades.
    """
    if str(text).strip().lower() != "auto":
        return parse_list(text)
    return [days for days in HALF_LIVES if days < span_days] + [math.inf]


def points(space: dict[str, Sequence[Any]], default: dict[str, Any],
           seed: int) -> list[dict[str, Any]]:
    """Return each point of the space once: default, its one-axis changes, the rest shuffled."""
    ordered = [dict(default)]
    for axis, values in space.items():
        ordered += [dict(default, **{axis: value}) for value in values
                    if value != default[axis]]
    rest = [dict(zip(space, combo)) for combo in itertools.product(*space.values())]
    np.random.default_rng(seed).shuffle(rest)
    seen, unique = set(), []
    for point in ordered + rest:
        key = tuple(sorted(point.items()))
        if key not in seen:
            seen.add(key)
            unique.append(point)
    return unique


def deal(ordered: list[dict[str, Any]], tasks: int) -> list[list[dict[str, Any]]]:
    """Deal the points round-robin to ``tasks`` shares, so each starts with early points."""
    tasks = max(1, min(int(tasks), len(ordered)))
    return [ordered[i::tasks] for i in range(tasks)]


def run(share: list[dict[str, Any]], score: Callable[[dict[str, Any]], dict[str, Any]],
        budget_seconds: float) -> list[dict[str, Any]]:
    """Score the share's points in order until the budget is spent (at least one point).

    A point is started only when the last point's duration still fits in the
    budget. Each result is ``{**point, **score(point), "seconds": s}``.
    """
    results: list[dict[str, Any]] = []
    began = time.monotonic()
    last = 0.0
    with threadpool_limits(limits=1):
        for point in share:
            elapsed = time.monotonic() - began
            if results and elapsed + last > budget_seconds:
                break
            tick = time.monotonic()
            metrics = score(point)
            last = time.monotonic() - tick
            results.append({**point, **metrics, "seconds": round(last, 3)})
            logger.info("%s: %s", point, metrics)
    if len(results) < len(share):
        logger.info("time budget %.0f s spent after %d of %d points", budget_seconds,
                    len(results), len(share))
    return results
