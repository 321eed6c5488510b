"""The inputs every check receives: the run's facts and the gate's thresholds.

A check is ``check_<what>(model, context) -> None``. It raises
:class:`CheckFailure` with a message an operator can act on; returning means
the check passed. ``model`` is ``None`` for the run checks, which read only the
small artifacts stored beside the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Measure:
    """One number a check measured, beside what the run claimed and the rule applied.

    ``low``/``high`` bound the 95% bootstrap interval of ``measured`` (of the
    difference, for a difference); ``claimed`` is the run's stored figure,
    None when the run claims nothing; ``rule`` says when the check rejects.
    """

    name: str
    measured: float | None
    low: float | None = None
    high: float | None = None
    claimed: float | None = None
    rule: str = ""


class CheckFailure(Exception):
    """Raised by a check when the candidate fails it; the message says why.

    ``measures`` are the numbers the check judged by, reported beside the
    message, as a passing check returns them.
    """

    def __init__(self, message: str, measures: Sequence[Measure] = ()) -> None:
        super().__init__(message)
        self.measures = tuple(measures)


@dataclass(frozen=True)
class Thresholds:
    """The numbers a candidate is held to; defaults match ``service.config``."""

    ndcg_floor: float = 0.02            # holdout NDCG@10 must be >= this
    regression_tolerance: float = 0.2   # paired: candidate may be surely worse by this share
    latency_budget_ms: float = 50.0     # p99 of single recommend() calls
    claim_tolerance: float = 0.01       # probe NDCGs may be surely below claims by this share
    baseline_margin: float = 0.0        # "beats popularity": paired interval above this
    min_overlap: float = 0.2            # mean overlap@10 with the serving lists, without a gain
    max_cold_start_rise: float = 0.1    # rise in the share of cold-start answers, without a gain
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
            claim_tolerance=float(settings.get("CLAIM_TOLERANCE", defaults.claim_tolerance)),
            baseline_margin=float(settings.get("BASELINE_MARGIN", defaults.baseline_margin)),
            min_overlap=float(settings.get("MIN_OVERLAP", defaults.min_overlap)),
            max_cold_start_rise=float(
                settings.get("MAX_COLD_START_RISE", defaults.max_cold_start_rise)),
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
    load_warnings: Sequence[str] = ()   # warnings raised while unpickling, "Category: message"
    model_class: str | None = None   # the servable the run trained (None: the default)
    # Bootstrap intervals the flow stored (issue 10); None for runs without them.
    holdout_intervals: Mapping[str, Sequence[float]] | None = None
    baseline_difference: Mapping[str, Mapping[str, float]] | None = None
    probes: Mapping[str, Any] | None = None   # the gate_probes artifact
    catalogue: Any = None   # the items the run fitted the model with (None: a ratings file)
    serving_model: Any = None   # the model serving now, when it is another run's
    #: Values a check computed that a later check reuses (the probe measure).
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def remember(self, name: str, model: Any, compute: Callable[[], Any]) -> Any:
        """Return ``compute()`` for ``model``, computed once per context (checks share it)."""
        key = f"{name}:{id(model)}"
        kept = self.memo.get(key)
        if kept is None or kept[0] is not model:  # an id is reused once its object is freed
            kept = self.memo[key] = (model, compute())
        return kept[1]
