"""The hyperparameter search: which points, in which order, inside a time budget.

The event model has seven axes: the SVD rank (``n_components``), the recency
half-life in days (``inf``: no decay), the half-life counted in each user's
own later interactions (``user_half_life``, ``inf``: off) and the share of
an old interaction's weight it keeps (``user_decay_floor``), the popularity
prior's weight, the damping of each item column by its count
(``count_exponent``) and the interaction weighting (raw strength, binary, log).
The item-to-item servables share five of them (not the rank nor the
damping); ``item_knn`` adds the similarity's shrinkage and the neighbours
kept per item, ``ease`` the ridge penalty ``l2``. Each servable searched
(:func:`servables`) gets its own tasks, and the flow's join chooses across
them (:func:`choose`). A full grid is hundreds of fits, so each
``foreach`` task runs a coordinate descent from the estimator's defaults
(undecayed where items do not expire, :func:`start`): every value of one
axis with the others fixed at the best so far, then the next axis, in
passes until a pass changes nothing or the task's time budget is spent
(on ratings not before one whole pass, :func:`min_passes`).
The budget counts the task's own processor time, not the clock's, so what
else the machine runs changes little which points are tried (two audits
side by side once made each search stop halfway; now at most its last
points differ). The tasks take the axes in different (rotated) orders, so
they walk different paths.
BLAS is held to one thread per task so that tasks running side by side do
not fight over the cores.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from threadpoolctl import threadpool_limits

from service.servable import DEFAULT_SERVABLE, SERVABLES
from service.training.data import WEIGHTINGS

logger = logging.getLogger(__name__)

#: Half-lives (days) tried when they are shorter than the training span; ``inf`` always.
HALF_LIVES = (7.0, 14.0, 30.0, 90.0, 365.0, 1461.0)


def parse_list(text: str, kind: type = float) -> list:
    """Parse a comma-separated list ("16,32,64", "7,14,inf", "raw,log")."""
    return [kind(part.strip()) for part in str(text).split(",") if part.strip()]


def listed_or_auto(text: str, auto: Sequence[float]) -> list[float]:
    """Parse a comma-separated list, or return ``auto``'s values for "auto"."""
    return list(auto) if str(text).strip().lower() == "auto" else parse_list(text)


def half_lives(text: str, span_days: float) -> list[float]:
    """Return the half-lives to try: the listed ones, or "auto": those of HALF_LIVES < span, inf.

    "auto" adapts to the data's rhythm: days for an events log of weeks,
    years for a ratings file of decades.
    """
    return listed_or_auto(text, [days for days in HALF_LIVES if days < span_days] + [math.inf])


#: Item-count damping exponents tried by "auto" where items do not expire; 0: none.
COUNT_EXPONENTS = (0.0, 0.2, 0.35, 0.5)


def count_exponents(text: str, items_expire: bool, default: float) -> list[float]:
    """Return the count exponents to try: the listed ones, or "auto".

    "auto" tries COUNT_EXPONENTS where items do not expire (a ratings file:
    on MovieLens 100k 0.2 beats the estimator's 0.35 by 0.007 NDCG@10 per
    user) and keeps ``default`` where they do (events with start times).
    There the damping also sets how high an event with few interactions
    ranks against old hits, a trade that the validation's NDCG@10 makes
    against new events (docs/training.md, "New events").
    """
    return listed_or_auto(text, [default] if items_expire else COUNT_EXPONENTS)


def start(defaults: dict[str, Any], space: dict[str, Sequence[Any]],
          items_expire: bool) -> dict[str, Any]:
    """Return the point a servable's walk starts from: its defaults, undecayed where items last.

    A half-life in days is the rhythm of events that expire; where items do
    not (a ratings file spanning years), a default of 14 days rates every
    old rating near zero, and a walk that starts there spends its budget
    climbing out. On MovieLens 1M, with 5 to 7 points per task, the walk
    that first swept the half-lives reached no decay at its sixth point and
    the user's own half-life of 3 at its seventh (validated 0.078 per user),
    or not at all when the fits were a little slower (0.061); the other walk
    varied every other axis at 14 days (0.011 to 0.017).
    """
    point = {axis: defaults[axis] for axis in space}
    if not items_expire and math.inf in space.get("half_life_days", ()):
        point["half_life_days"] = math.inf
    return point


def min_passes(text: str, items_expire: bool) -> int:
    """Return the whole passes a walk completes before its budget may stop it: a count, or "auto".

    "auto" gives one pass on ratings and none where items expire. A walk cut
    short tunes only the axes it reached: on MovieLens 1M a point costs about
    3 s of CPU, so in 10 s an event-model task scored 6 points and an
    ``ease`` task 2, of the 20 or so a pass over every axis takes. Where
    items expire, the daily events flow keeps to its budget: the default
    sample trains in under a minute.
    """
    text = str(text).strip().lower()
    if text == "auto":
        return 0 if items_expire else 1
    if not text.isdecimal():
        raise ValueError("not a count of passes (0 or more) nor 'auto'")
    return int(text)


def weightings(text: str) -> list[str]:
    """Parse the interaction weightings to try; ValueError for a name no model knows."""
    names = parse_list(text, str)
    unknown = [name for name in names if name not in WEIGHTINGS]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not one of {', '.join(WEIGHTINGS)}")
    return names


def servables(text: str, items_expire: bool) -> list[str]:
    """Return the servables to search: the listed ones, or "auto".

    "auto" searches every registered servable on ratings and the event model
    alone where items expire (events with start times). There its scoring of
    new events from their metadata, local demand and per-city rows are what
    the business needs, and a validation of known items' NDCG@10 does not
    see them. On ratings :func:`choose` serves another servable only where
    it beats the event model on every validation split (EASE on MovieLens
    latest-small and Ciao, docs/training.md).
    """
    if str(text).strip().lower() == "auto":
        return [DEFAULT_SERVABLE] if items_expire else list(SERVABLES)
    names = parse_list(text, str)
    unknown = [name for name in names if name not in SERVABLES]
    if unknown or not names:
        raise ValueError(f"--model {text!r}: not a registered servable "
                         f"({', '.join(SERVABLES)}) or 'auto'")
    return names


def choose(results: Sequence[dict[str, Any]], metric: str,
           default: str = DEFAULT_SERVABLE) -> dict[str, Any]:
    """Return the point to serve: the default servable's best, or a challenger that beats it.

    Each servable's best is its point with the best ``metric`` (ties: fewer
    components). The default servable's best is kept unless another's is
    better on every validation split by at least what the split resolves,
    one user's hit at the top (``1 / users``); a split where neither scores
    that much cannot tell them apart and is passed over. Of the challengers
    that beat it, the best wins. The default (the event model) answers what
    a validation of known items does not see: new events from their
    metadata, cities, segments. And each user's next items and the next
    weeks are different questions: on MovieLens 100k's first 90% of time,
    EASE validated 0.173 against the event model's 0.148 on each user's last
    5, and 0.181 against 0.181 on the 83 users of the time window. Kept, the
    event model scored 0.271 on the last 10% of time, where EASE scored
    0.230 (docs/training.md).
    """
    def key(result: dict[str, Any]) -> tuple:
        return result[metric], -result.get("n_components", 0)

    best: dict[str, dict[str, Any]] = {}
    for result in results:
        if result["model"] not in best or key(result) > key(best[result["model"]]):
            best[result["model"]] = result
    champion = best.get(default) or max(best.values(), key=key)
    # Each split's (metric, users) keys, "ndcg@10 0" with "users 0"; one split: the plain ones.
    splits = [(name, "users" + name[len(metric):]) for name in champion
              if name.startswith(f"{metric} ")] or [(metric, "users")]

    def beats(challenger: dict[str, Any]) -> bool:
        told = False
        for name, users in splits:
            resolution = 1.0 / max(champion[users], 1.0)
            ours, theirs = (max(point[name], resolution) for point in (challenger, champion))
            if ours == theirs == resolution:
                continue
            if ours - theirs < resolution:
                return False
            told = True
        return told

    return max([champion] + [result for result in best.values() if beats(result)], key=key)


def orders(space: dict[str, Sequence[Any]], tasks: int) -> list[list[str]]:
    """Return one axis order per task: the space's order rotated by the task's index.

    Each task runs its own coordinate descent from the defaults; starting on a
    different axis, the tasks explore different paths through the space.
    """
    axes = list(space)
    return [axes[i % len(axes):] + axes[:i % len(axes)] for i in range(max(1, int(tasks)))]


def same_model(point: dict[str, Any]) -> dict[str, Any]:
    """Return ``point`` with a value that cannot change the model set to its neutral one.

    Without a user half-life (``inf``) nothing decays, so a decay floor
    changes nothing: every such point is the one with floor 0, scored once.
    """
    if "user_decay_floor" in point and not math.isfinite(point.get("user_half_life", 0.0)):
        return {**point, "user_decay_floor": 0.0}
    return point


def run(space: dict[str, Sequence[Any]], start: dict[str, Any], order: Sequence[str],
        score: Callable[[dict[str, Any]], dict[str, Any]], budget_seconds: float,
        metric: str, min_passes: int = 0) -> list[dict[str, Any]]:
    """Coordinate descent from ``start``: try each value of each axis in ``order``, keep the best.

    ``start`` is a scored point (``{**params, **metrics}``, see :func:`timed`),
    so parallel tasks do not all score it again. Passes repeat until one
    changes nothing or the budget (seconds of this process's CPU time) is
    spent. Points that make the same model (:func:`same_model`) are scored
    once. The first point is always scored and the budget runs from its end
    (a process's first fit pays for imports and warm-up); after that a point
    is started only when the previous one's CPU time still fits, or while the
    walk has not completed ``min_passes`` passes. Returns the newly
    scored points, each ``{**point, **score(point), "seconds": s}``.
    """
    axes = list(space)

    def key_of(model: dict[str, Any]) -> tuple:
        return tuple(sorted(model.items()))

    results: dict[tuple, dict[str, Any]] = {key_of(same_model({a: start[a] for a in axes})): start}
    began = None
    last = 0.0
    passes = 0

    def scored(point: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal began, last
        model = same_model(point)
        key = key_of(model)
        if key not in results:
            if (passes >= min_passes and began is not None
                    and time.process_time() - began + last > budget_seconds):
                return None
            tick = time.process_time()
            results[key] = timed(score, model)
            now = time.process_time()
            last = 0.0 if began is None else now - tick
            began = now if began is None else began
            logger.info("%s", results[key])
        # The walk keeps its own coordinates: a floor it carries through points
        # without a user half-life applies again when it tries one.
        return {**results[key], **point}

    with threadpool_limits(limits=1):
        best = start
        moved = True
        while moved:
            moved = False
            for axis in order:
                for value in space[axis]:
                    result = scored(dict({a: best[a] for a in axes}, **{axis: value}))
                    if result is None:
                        logger.info("time budget %.0f s spent after %d points",
                                    budget_seconds, len(results))
                        return list(results.values())[1:]
                    if result[metric] > best[metric]:
                        best, moved = result, True
            passes += 1
    return list(results.values())[1:]


def timed(score: Callable[[dict[str, Any]], dict[str, Any]],
          point: dict[str, Any]) -> dict[str, Any]:
    """Return ``{**point, **score(point), "seconds": how long it took}``, with one BLAS thread."""
    with threadpool_limits(limits=1):
        tick = time.monotonic()
        metrics = score(point)
    return {**point, **metrics, "seconds": round(time.monotonic() - tick, 3)}
