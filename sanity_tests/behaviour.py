"""Behaviour checks: ask the model for lists, as a request would, and judge them.

"Now" is ``context.as_of``: an item is upcoming when ``item_starts_at_ > as_of``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from sanity_tests.context import CheckFailure, RunContext
from service.contract import iso_timestamp
from service.recommender import category_totals
from service.training.probes import id_index, lookup

#: A user id no run can know; it must be served the cold-start list.
COLD_PROBE = "__lineup_cold_probe__"
_SHOWN = 5  # examples quoted per problem before "..."
_SCORE_TOLERANCE = 1e-5  # float32 scores computed in a different order differ in the last bits


def golden_user_ids(context: RunContext) -> list[str]:
    """Return the golden users' ids, failing when the run stored none."""
    ids = [str(user["user_id"]) for user in context.golden_users if "user_id" in user]
    if not ids:
        raise CheckFailure(f"run {context.run_id} stored no golden users; cannot test behaviour")
    return ids


def _recommend(model: Any, user_id: str, context: RunContext, **options: Any) -> Any:
    return model.recommend(user_id, n=context.thresholds.n, as_of=context.as_of, **options)


def list_problems(model: Any, rec: Any, context: RunContext) -> dict[str, str]:
    """Return ``{problem: detail}`` for one recommendation; empty when it is a good list."""
    n = context.thresholds.n
    item_ids = [str(i) for i in np.asarray(rec.item_ids).ravel()]
    scores = np.asarray(rec.scores, dtype=float).ravel()
    items = np.asarray(rec.items).ravel()
    problems: dict[str, str] = {}
    if len(item_ids) != n:
        problems[f"a wrong-length list (want {n})"] = f"{len(item_ids)} items"
    if len(items) != len(item_ids) or len(scores) != len(item_ids):
        problems["mismatched items/item_ids/scores lengths"] = (
            f"{len(items)}/{len(item_ids)}/{len(scores)}")
    duplicates = sorted({i for i in item_ids if item_ids.count(i) > 1})
    if duplicates:
        problems["duplicate items"] = ", ".join(duplicates[:3])
    # A search in an index made once per model, not a dict of the catalogue per user.
    index = lookup(context.remember("item_index", model, lambda: id_index(model.item_ids_)),
                   item_ids)
    unknown = [i for i, at in zip(item_ids, index) if at < 0]
    if unknown:
        problems["unknown items"] = ", ".join(unknown[:3])
    starts = model.item_starts_at_
    past = [i for i, at in zip(item_ids, index) if at >= 0 and not starts[at] > context.as_of]
    if past:
        problems["events that are not upcoming"] = ", ".join(past[:3])
    if len(items) == len(item_ids) and not unknown and np.issubdtype(items.dtype, np.integer):
        if index.tolist() != [int(i) for i in items]:
            problems["items indices disagree with item_ids"] = "items != index of item_ids"
    if not np.isfinite(scores).all():
        problems["non-finite scores"] = str(int((~np.isfinite(scores)).sum()))
    return problems


def _summarise(per_user: dict[str, dict[str, str]], total: int, what: str) -> str:
    """Group per-user problems: "3 of 50 golden users got <problem>: u17 (4), u203 (0)"."""
    by_problem: dict[str, list[tuple[str, str]]] = {}
    for user_id, problems in per_user.items():
        for problem, detail in problems.items():
            by_problem.setdefault(problem, []).append((user_id, detail[:200]))
    parts = []
    for problem, pairs in by_problem.items():
        users = [user for user, _ in pairs]
        details = {detail for _, detail in pairs}
        if len(pairs) > 1 and len(details) == 1:  # one cause: say it once
            shown = f"all with {details.pop()}: {', '.join(users[:_SHOWN])}"
        else:
            shown = ", ".join(f"{user} ({detail})" for user, detail in pairs[:_SHOWN])
        more = f" and {len(pairs) - _SHOWN} more" if len(pairs) > _SHOWN else ""
        parts.append(f"{len(pairs)} of {total} {what} got {problem}"
                     f"{',' if shown.startswith('all with') else ':'} {shown}{more}")
    return "; ".join(parts)


def _each_user(model: Any, context: RunContext, user_ids: list[str],
               judge: Callable[[str], dict[str, str]]) -> dict[str, dict[str, str]]:
    per_user = {}
    for user_id in user_ids:
        try:
            problems = judge(user_id)
        except Exception as exc:  # one user's crash is reported with the user's id
            problems = {"an exception from recommend()": f"{type(exc).__name__}: {exc}"}
        if problems:
            per_user[user_id] = problems
    return per_user


def check_golden_users_lists(model: Any, context: RunContext) -> None:
    """Require n unique, known, upcoming, unseen items with finite scores for every golden user.

    A golden user's ``holdout_items`` are what they bought or rated in the
    run's holdout, rows the served model was refitted on: seen, so never
    recommended to them again. A model that lost its seen items (or another
    run's) ranks them high, the user's own newest taste.
    """
    user_ids = golden_user_ids(context)
    seen = {str(user["user_id"]): {str(item) for item in user.get("holdout_items", ())}
            for user in context.golden_users if "user_id" in user}

    def judge(user_id: str) -> dict[str, str]:
        rec = _recommend(model, user_id, context)
        problems = list_problems(model, rec, context)
        again = [str(item) for item in np.asarray(rec.item_ids).ravel()
                 if str(item) in seen[user_id]]
        if again:
            problems["items they already bought or rated"] = ", ".join(again[:3])
        return problems

    per_user = _each_user(model, context, user_ids, judge)
    if per_user:
        raise CheckFailure(_summarise(per_user, len(user_ids), "golden users")
                           + f" (n={context.thresholds.n}, as of {iso_timestamp(context.as_of)})")


def check_deterministic(model: Any, context: RunContext) -> None:
    """Require the same list and scores when a golden user is recommended to twice."""
    def judge(user_id: str) -> dict[str, str]:
        first, second = (_recommend(model, user_id, context) for _ in range(2))
        same = (np.array_equal(np.asarray(first.item_ids), np.asarray(second.item_ids))
                and np.allclose(np.asarray(first.scores, dtype=float),
                                np.asarray(second.scores, dtype=float), equal_nan=True)
                and first.strategy == second.strategy)
        return {} if same else {"a different list the second time": "differs"}

    user_ids = golden_user_ids(context)
    per_user = _each_user(model, context, user_ids, judge)
    if per_user:
        raise CheckFailure(_summarise(per_user, len(user_ids), "golden users")
                           + "; recommend() must be deterministic for a given model and as_of")


def _disagreement(ranked: Any, scored: Any) -> dict[str, str]:
    """Return how a list read from a ranking differs from the scored one; empty when it does not.

    Both lists are the user's top n, so their scores agree; items may differ
    only where scores tie at the cut.
    """
    ranked_scores = np.asarray(ranked.scores, dtype=float)
    scored_scores = np.asarray(scored.scores, dtype=float)
    if ranked_scores.shape != scored_scores.shape or not np.allclose(
            ranked_scores, scored_scores, rtol=_SCORE_TOLERANCE, atol=_SCORE_TOLERANCE):
        return {"ranked scores that scoring does not give":
                f"{np.round(ranked_scores[:3], 4).tolist()} vs "
                f"{np.round(scored_scores[:3], 4).tolist()}"}
    cut = scored_scores[-1] if scored_scores.size else np.inf
    clear = scored_scores > cut + _SCORE_TOLERANCE  # above any tie at the cut
    ranked_ids = set(np.asarray(ranked.item_ids)[clear].tolist())
    scored_ids = set(np.asarray(scored.item_ids)[clear].tolist())
    if ranked_ids != scored_ids:
        return {"ranked items that scoring does not give":
                ", ".join(sorted(ranked_ids - scored_ids)[:3])}
    return {}


def check_ranking_matches_scoring(model: Any, context: RunContext) -> None:
    """Require each golden and probe user's list from the fit-time ranking to be the scored one.

    A model that ranks per city too (``user_city_ranking_``, read for a
    one-city filter) and per city and category (``user_city_category_ranking_``)
    must agree there as well, for each golden user, city and category.
    """
    from service.catalogue_view import build_view, recommend
    from service.filters import ItemFilter

    def judge(user_id: str) -> dict[str, str]:
        return _disagreement(_recommend(model, user_id, context),
                             _recommend(model, user_id, context, use_ranking=False))

    # The probe users too: the gate measures the factors on them, so their
    # ranking, which requests read, must follow the factors as well.
    probed = [str(user) for user in (context.probes or {}).get("users", ())]
    golden = golden_user_ids(context)
    user_ids = list(dict.fromkeys(golden + probed))
    per_user = _each_user(model, context, user_ids, judge)
    if per_user:
        raise CheckFailure(_summarise(per_user, len(user_ids), "golden and probe users")
                           + "; the fit-time ranking disagrees with the model's factors")
    cities = [str(city) for city in getattr(model, "ranked_cities_", ())]
    if not cities:
        return
    view = build_view(model)
    categories = [(), *((str(category),) for category in
                        getattr(model, "ranked_categories_", ()))]

    def judge_segments(user_id: str) -> dict[str, str]:
        for city in cities:
            for category in categories:
                segment = ItemFilter(cities=(city,), categories=category)
                lists = [recommend(model, view, user_id, context.thresholds.n, context.as_of,
                                   item_filter=segment, use_ranking=use)
                         for use in (True, False)]
                problems = _disagreement(*lists)
                if problems:
                    where = " ".join((city, *category))
                    return {f"{problem} in {where}": detail
                            for problem, detail in problems.items()}
        return {}

    per_user = _each_user(model, context, golden, judge_segments)
    if per_user:
        raise CheckFailure(_summarise(per_user, len(golden), "golden users")
                           + "; the per-city ranking (user_city_ranking_ or "
                           "user_city_category_ranking_) disagrees with the model's factors")


def check_cold_start(model: Any, context: RunContext) -> None:
    """Require an unknown user to get a good cold_start list."""
    rec = _recommend(model, COLD_PROBE, context)
    problems = list_problems(model, rec, context)
    if rec.strategy != "cold_start":
        problems["strategy"] = f"{rec.strategy!r}, expected 'cold_start'"
    if problems:
        detail = "; ".join(f"{problem}: {detail}" for problem, detail in problems.items())
        raise CheckFailure(f"unknown user {COLD_PROBE!r} got a bad list: {detail}")


def check_taste_labels(model: Any, context: RunContext) -> None:
    """Require each taste cluster's label to name the category its scores favour.

    ``taste=rock`` answers an unknown user with the cluster labelled "rock"; a
    label moved to another cluster, or a cluster's scores moved to other
    items, answers rock fans with another taste. Labels are the dominant
    category, de-duplicated ("rock-2"), or "cluster-N" where that is unknown.
    """
    labels = getattr(model, "cluster_labels_", None)
    scores = getattr(model, "cluster_item_scores_", None)
    if labels is None or scores is None:
        return  # a servable without taste clusters
    categories, totals = category_totals(np.asarray(scores, dtype=np.float64),
                                         model.item_categories_)
    wrong = []
    for cluster, label in enumerate(str(label) for label in labels):
        # The label as it stands, less a de-duplication suffix, or "unknown"'s
        # stand-in: a category of its own may end in "-18" or start "cluster-".
        named = {label, re.sub(r"-\d+$", "", label)} | (
            {"unknown"} if label.startswith("cluster-") else set())
        best = totals[cluster].max()
        at = np.flatnonzero(np.isin(categories, list(named)))
        if not at.size or totals[cluster, at].max() < best - _SCORE_TOLERANCE * abs(best):
            wrong.append(f"{label!r} (its scores favour "
                         f"{str(categories[int(np.argmax(totals[cluster]))])!r})")
    if wrong:
        raise CheckFailure(f"{len(wrong)} of {len(labels)} taste clusters are mislabelled: "
                           + ", ".join(wrong[:_SHOWN]) + "; taste= lists would answer "
                           "with another taste")


def check_lists_differ(model: Any, context: RunContext) -> None:
    """Fail when every golden user gets the very same list (personalisation is dead)."""
    user_ids = golden_user_ids(context)
    lists = {tuple(str(i) for i in _recommend(model, u, context).item_ids) for u in user_ids}
    if len(user_ids) > 1 and len(lists) == 1:
        shown = ", ".join(next(iter(lists))[:_SHOWN])
        raise CheckFailure(
            f"all {len(user_ids)} golden users got the identical list ({shown} ...); "
            f"the model is not personalising")
