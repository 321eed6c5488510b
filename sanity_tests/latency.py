"""Latency check: time single recommend() calls, as requests make them."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import numpy as np

from sanity_tests.context import CheckFailure, RunContext

_WARMUP = 10        # untimed calls first, so one-off caches do not count
_KNOWN_USERS = 50   # known users mixed in with the golden ones


def latency_users(model: Any, context: RunContext) -> list[str]:
    """Return the users to cycle through: the golden users and some other known users."""
    golden = [str(user["user_id"]) for user in context.golden_users if "user_id" in user]
    known = np.asarray(model.user_ids_)
    step = max(1, len(known) // _KNOWN_USERS)
    users = golden + [str(u) for u in known[::step][:_KNOWN_USERS]]
    if not users:
        raise CheckFailure("no golden or known users to time recommend() with")
    return users


def check_latency(model: Any, context: RunContext) -> None:
    """Require the p99 of single recommend() calls to stay under the latency budget."""
    thresholds = context.thresholds
    budget, calls, n = thresholds.latency_budget_ms, thresholds.latency_calls, thresholds.n
    users = itertools.cycle(latency_users(model, context))
    for user_id in itertools.islice(users, min(_WARMUP, calls)):
        model.recommend(user_id, n=n, as_of=context.as_of)
    # Once this many calls are over budget the p99 must be too (one spare for rounding):
    # stop early, so a very slow model does not eat the gate's time limit.
    give_up = calls - math.floor(0.99 * (calls - 1)) + 1
    timings, slow = [], 0
    for user_id in itertools.islice(users, calls):
        start = time.perf_counter()
        model.recommend(user_id, n=n, as_of=context.as_of)
        elapsed = (time.perf_counter() - start) * 1000.0
        timings.append(elapsed)
        slow += elapsed > budget
        if slow >= give_up and len(timings) < calls:
            p50 = float(np.percentile(timings, 50))
            raise CheckFailure(
                f"recommend() too slow: {slow} of the first {len(timings)} calls took over "
                f"{budget:.1f} ms (p50 {p50:.1f} ms), so p99 of {calls} calls exceeds the budget "
                f"(LINEUP_LATENCY_BUDGET_MS); stopped early")
    if not timings:
        return
    p50, p99 = (float(v) for v in np.percentile(timings, [50, 99]))
    if p99 > budget:
        raise CheckFailure(
            f"recommend() p99 {p99:.1f} ms over the {budget:.1f} ms budget "
            f"(p50 {p50:.1f} ms, max {max(timings):.1f} ms, {len(timings)} calls, n={n}; "
            f"LINEUP_LATENCY_BUDGET_MS)")
