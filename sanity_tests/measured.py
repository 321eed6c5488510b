"""Measure the artifact itself: recompute the run's probe measure on the loaded model.

The run's metrics are claims about a model fitted before the holdout. These
checks hold the model about to serve to the claim the flow measured on it
at fit time (``gate_probes``, see service/training/probes.py), on the same
users and items, and to the popularity baseline on those users: a model
changed after evaluation cannot pass on the run's word.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sanity_tests.context import CheckFailure, Measure, RunContext
from service.contract import PROBES_ARTIFACT
from service.training import probes

#: The model's arrays the probe measure needs (service/training/probes.py).
SCORED_BY = ("user_ids_", "item_ids_", "item_popularity_")
#: A run must probe at least this many users for an interval to mean anything.
MIN_PROBE_USERS = 20
_SHOWN = 3


def probe_users(context: RunContext) -> tuple[list[str], list[list[str]]]:
    """Return the probe users and each one's own items; fail when the run stored none."""
    stored = context.probes
    if not stored or not stored.get("users"):
        raise CheckFailure(
            f"run {context.run_id} stored no {PROBES_ARTIFACT}; the gate cannot measure its "
            f"model; retrain with the current flow (it stores them in its evaluate step)")
    return [str(u) for u in stored["users"]], [[str(i) for i in row] for row in stored["items"]]


def check_probes_present(model: Any, context: RunContext) -> None:
    """Require the probes the gate measures the model on, before the model is loaded."""
    users, items = probe_users(context)
    lengths = {name: len(context.probes.get(name) or ())
               for name in ("items", "model", "popularity")}
    if any(length != len(users) for length in lengths.values()):
        raise CheckFailure(f"{PROBES_ARTIFACT} is inconsistent: {len(users)} users but "
                           + ", ".join(f"{n} {name}" for name, n in lengths.items()))
    if len(users) < MIN_PROBE_USERS:
        raise CheckFailure(f"{PROBES_ARTIFACT} holds {len(users)} users, fewer than "
                           f"{MIN_PROBE_USERS}; too few to measure the model")


def _unknown(ids: list[str], positions: np.ndarray, what: str) -> str | None:
    missing = [i for i, at in zip(ids, positions) if at < 0]
    if not missing:
        return None
    return (f"{len(missing)} of {len(ids)} probe {what} ("
            + ", ".join(missing[:_SHOWN]) + (" ..." if len(missing) > _SHOWN else "") + ")")


def check_probes_known(model: Any, context: RunContext) -> None:
    """Require every probe user and item in the model: it was fitted on this run's data."""
    users, items = probe_users(context)
    flat = sorted({item for row in items for item in row})
    problems = [_unknown(users, probes.user_rows(model, users), "users"),
                _unknown(flat, probes.item_columns(model, flat), "items")]
    problems = [p for p in problems if p]
    if problems:
        raise CheckFailure(
            f"{' and '.join(problems)} are unknown to the model; the flow drew them from the "
            f"data the served model was fitted on, so this model was fitted on other data or "
            f"lost part of its users or catalogue")


def _measured(model: Any, context: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-user probe measures of ``model`` and of its popularity (once per context)."""
    if not callable(getattr(model, "score_catalogue", None)):
        raise CheckFailure("the model has no score_catalogue(); it is not a servable, so the "
                           "gate cannot measure it on the probe users' items")
    missing = [name for name in SCORED_BY if getattr(model, name, None) is None]
    if missing:
        raise CheckFailure(f"the model has no {', '.join(missing)}, so the gate cannot "
                           f"measure it on the probe users' items")
    users, items = probe_users(context)
    return context.remember("probe", model, lambda: probes.measure(model, users, items))


def measured_values(model: Any, context: RunContext) -> np.ndarray:
    """Return the per-user probe measure of ``model`` (computed once per context)."""
    return _measured(model, context)[0]


def _difference(name: str, values: np.ndarray, claimed: float | None, rule: str) -> Measure:
    low, high = probes.bootstrap_interval(values)
    return Measure(name, float(values.mean()), low, high, claimed, rule)


def check_measured_quality(model: Any, context: RunContext) -> list[Measure]:
    """Require the model's measured probe NDCG near its claim and above popularity.

    The comparisons are paired on the same users: rejected when the 95%
    interval of measured minus claimed lies wholly below minus
    ``claim_tolerance`` of the claim, for the model or for its own popularity
    (the cold-start lists' order), or when that of measured minus popularity
    does not rise above ``baseline_margin``. The artifact the flow measured
    reproduces its claims to float rounding.
    """
    measured, measured_popularity = _measured(model, context)
    claimed = np.asarray(context.probes["model"], dtype=np.float64)
    popularity = np.asarray(context.probes["popularity"], dtype=np.float64)
    tolerance = context.thresholds.claim_tolerance
    margin = context.thresholds.baseline_margin
    floor = -tolerance * float(claimed.mean())
    popularity_floor = -tolerance * float(popularity.mean())
    low, high = probes.bootstrap_interval(measured)
    measures = [
        Measure(probes.MEASURE, float(measured.mean()), low, high, float(claimed.mean()),
                "measured on the loaded model; claimed by the flow at fit time"),
        _difference(f"{probes.MEASURE} measured - claimed", measured - claimed, 0.0,
                    f"reject when high < {floor:.4f} ({tolerance:.0%} of the claim, "
                    f"LINEUP_CLAIM_TOLERANCE)"),
        _difference(f"{probes.MEASURE} measured - popularity", measured - popularity,
                    float(claimed.mean() - popularity.mean()),
                    f"reject when high <= {margin:g} (LINEUP_BASELINE_MARGIN)"),
        _difference(f"{probes.MEASURE} popularity measured - claimed",
                    measured_popularity - popularity, 0.0,
                    f"reject when high < {popularity_floor:.4f} ({tolerance:.0%} of the claim, "
                    f"LINEUP_CLAIM_TOLERANCE)"),
    ]
    problems = []
    if measures[1].high < floor:
        problems.append(
            f"measured {probes.MEASURE} {measures[0].measured:.4f} "
            f"[{low:.4f}, {high:.4f}] is far below the {measures[0].claimed:.4f} the run "
            f"claims for it (paired difference {measures[1].measured:+.4f} "
            f"[{measures[1].low:+.4f}, {measures[1].high:+.4f}])")
    if measures[2].high <= margin:
        problems.append(
            f"measured {probes.MEASURE} {measures[0].measured:.4f} does not beat popularity's "
            f"{float(popularity.mean()):.4f} on the same {measured.size} users (paired "
            f"difference {measures[2].measured:+.4f} "
            f"[{measures[2].low:+.4f}, {measures[2].high:+.4f}])")
    if measures[3].high < popularity_floor:
        problems.append(
            f"the model's popularity ranks the probe users' items at "
            f"{float(measured_popularity.mean()):.4f}, far below the "
            f"{float(popularity.mean()):.4f} the run measured on it (paired difference "
            f"{measures[3].measured:+.4f} [{measures[3].low:+.4f}, {measures[3].high:+.4f}]): "
            f"every cold-start list follows it")
    if problems:
        raise CheckFailure("; ".join(problems) + "; the model changed after evaluation or "
                           "does not rank its own users' recent events", measures)
    return measures
