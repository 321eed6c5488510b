"""The inputs every check receives: the run's facts and the gate's thresholds.

A check is ``check_<what>(model, context) -> None``. It raises
:class:`CheckFailure` with a message an operator can act on; returning means
the check passed. ``model`` is ``None`` for the run checks, which read only the
small artifacts stored beside the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class CheckFailure(Exception):
    """Raised by a check when the candidate fails it; the message says why."""


@dataclass(frozen=True)
class Thresholds:
    """The numbers a candidate is held to; defaults match ``service.config``."""

    ndcg_floor: float = 0.02            # holdout NDCG@10 must be >= this
    regression_tolerance: float = 0.2   # candidate ndcg >= serving ndcg * (1 - tolerance)
    latency_budget_ms: float = 50.0     # p99 of single recommend() calls
    n: int = 10                         # list length the behaviour checks ask for
    latency_calls: int = 300

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Thresholds:
        """Build thresholds from ``service.config.load()``; missing keys keep defaults."""
        defaults = cls()
        return cls(
            ndcg_floor=float(settings.get("NDCG_FLOOR", defaults.ndcg_floor)),
            regression_tolerance=float(
                settings.get("REGRESSION_TOLERANCE", defaults.regression_tolerance)),
            latency_budget_ms=float(settings.get("LATENCY_BUDGET_MS", defaults.latency_budget_ms)),
        )


@dataclass(frozen=True)
class RunContext:
    """What the gate knows about one candidate run, beyond the model itself."""

    run_id: str
    pathspec: str
    holdout_metrics: Mapping[str, float] | None
    baseline_metrics: Mapping[str, float] | None
    library_versions: Mapping[str, str] | None
    golden_users: Sequence[Mapping[str, Any]]   # [{"user_id": str, "holdout_items": [str]}]
    schema_version: int | None
    as_of: float   # epoch seconds: "now" for the behaviour checks; upcoming = starts_at > as_of
    thresholds: Thresholds = Thresholds()
    serving_metrics: Mapping[str, float] | None = None   # holdout_metrics of the serving model
    load_warnings: Sequence[str] = ()   # warnings raised while unpickling, "Category: message"
    model_class: str | None = None   # the servable the run trained (None: the default)
