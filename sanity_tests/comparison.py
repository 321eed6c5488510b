"""Compare the candidate with the model serving now, on the same real users, before a swap.

The users are the run's probe users (its golden users, then the most
recently active). For both models: the lists a request would get now
(overlap@10, catalogue coverage, share of cold-start answers) and the probe
measure, paired user by user. Without a serving model (the first selection,
or the serving run judged again) only the candidate's side is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sanity_tests.context import CheckFailure, Measure, RunContext
from sanity_tests.measured import measured_values, probe_users
from service.training import probes


def paired_gain(model: Any, context: RunContext) -> Measure:
    """Return the probe measure of candidate minus serving model, paired on the same users."""
    serving = measured_values(context.serving_model, context)
    gain = measured_values(model, context) - serving
    low, high = probes.bootstrap_interval(gain)
    return Measure(f"{probes.MEASURE} candidate - serving", float(gain.mean()), low, high,
                   rule="a gain when low > 0")


def check_no_regression(model: Any, context: RunContext) -> list[Measure]:
    """Reject a candidate surely worse than the serving model on the same users.

    Rejected when the 95% interval of the paired difference lies wholly below
    minus ``regression_tolerance`` of the serving model's measure.
    """
    if context.serving_model is None:
        return []
    serving = float(measured_values(context.serving_model, context).mean())
    tolerance = context.thresholds.regression_tolerance
    floor = -tolerance * serving
    gain = paired_gain(model, context)
    gain = Measure(gain.name, gain.measured, gain.low, gain.high, None,
                   f"reject when high < {floor:.4f} ({tolerance:.0%} of serving's {serving:.4f}, "
                   f"LINEUP_REGRESSION_TOLERANCE)")
    if gain.high < floor:
        raise CheckFailure(
            f"regresses from the serving model: {probes.MEASURE} "
            f"{serving + gain.measured:.4f} against serving's {serving:.4f} on the same "
            f"{len(probe_users(context)[0])} users, paired difference {gain.measured:+.4f} "
            f"[{gain.low:+.4f}, {gain.high:+.4f}], wholly below {floor:+.4f}", [gain])
    return [gain]


def _lists(model: Any, users: list[str], context: RunContext) -> dict[str, Any]:
    """Return the lists a request would get now, their catalogue coverage and cold share."""
    recs = model.recommend_batch(users, context.thresholds.n, context.as_of)
    lists = [set(np.asarray(rec.item_ids).astype(str).tolist()) for rec in recs]
    upcoming = int((np.asarray(model.item_starts_at_) > context.as_of).sum())
    shown = set().union(*lists) if lists else set()
    return {"lists": lists,
            "coverage": len(shown) / upcoming if upcoming else 0.0,
            "cold": float(np.mean([rec.strategy != "personalised" for rec in recs]))}


def check_list_changes(model: Any, context: RunContext) -> list[Measure]:
    """Reject lists that change beyond the configured bounds without a measured gain.

    Bounds: the mean overlap@10 with the serving model's lists for the same
    users at least ``min_overlap``, and the share of cold-start answers
    rising by at most ``max_cold_start_rise``. A candidate beyond them passes
    only when the paired probe measure shows a gain (interval above zero).
    """
    users, _ = probe_users(context)
    candidate = _lists(model, users, context)
    measures = [Measure("catalogue coverage@10 (candidate)", candidate["coverage"]),
                Measure("cold-start share (candidate)", candidate["cold"])]
    if context.serving_model is None:
        return measures
    serving = _lists(context.serving_model, users, context)
    n = context.thresholds.n
    overlap = np.array([len(a & b) / max(len(a), len(b), 1) for a, b in
                        zip(candidate["lists"], serving["lists"], strict=True)])
    low, high = probes.bootstrap_interval(overlap)
    bounds = context.thresholds
    rise = candidate["cold"] - serving["cold"]
    gain = paired_gain(model, context)
    measures += [
        Measure(f"overlap@{n} with serving", float(overlap.mean()), low, high,
                rule=f"changed when below {bounds.min_overlap:g} (LINEUP_MIN_OVERLAP)"),
        Measure("catalogue coverage@10 (serving)", serving["coverage"]),
        Measure("cold-start share (serving)", serving["cold"]),
        Measure("cold-start share rise", rise,
                rule=f"changed when above {bounds.max_cold_start_rise:g} "
                     f"(LINEUP_MAX_COLD_START_RISE)"),
        gain,
    ]
    changes = []
    if overlap.mean() < bounds.min_overlap:
        changes.append(f"mean overlap@{n} with the serving lists is {overlap.mean():.3f}, "
                       f"below {bounds.min_overlap:g}")
    if rise > bounds.max_cold_start_rise:
        changes.append(f"the share of cold-start answers rises from {serving['cold']:.3f} to "
                       f"{candidate['cold']:.3f}, more than {bounds.max_cold_start_rise:g}")
    if changes and not gain.low > 0:
        raise CheckFailure(
            f"lists change beyond the bounds for the same {len(users)} users without a "
            f"measured gain ({'; '.join(changes)}; paired {gain.name} {gain.measured:+.4f} "
            f"[{gain.low:+.4f}, {gain.high:+.4f}])", measures)
    return measures
