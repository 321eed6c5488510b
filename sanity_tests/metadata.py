"""Metadata checks: events the model never saw must be scored, finitely, and reach people.

They judge models with a metadata map (``feature_weights_``, the
EventRecommender); a servable without one serves no new events and passes.

A run whose metadata map is broken serves as well as any until the live
catalogue lists a new event; then it scores it NaN, or so low that it is
never recommended. These checks list probe events the way the live
catalogue would (``service.catalogue.overlay``): copies of the category,
city and start of the events the golden users are recommended, under ids no
run knows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sanity_tests.behaviour import golden_user_ids
from sanity_tests.context import CheckFailure, RunContext

#: Probe events listed per check; their ids can collide with no real event.
PROBES = 100
PROBE_PREFIX = "__lineup_probe_"


def _scores_metadata(model: Any) -> bool:
    """True for a model that has, or declares, a metadata map (others serve no new events)."""
    declared = getattr(model, "declared_arrays", None)
    return (getattr(model, "feature_weights_", None) is not None
            or (callable(declared) and "feature_weights_" in declared()))


def _probe_sources(model: Any, context: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """Return the upcoming items and those the probe events copy, the golden users' first."""
    upcoming = np.flatnonzero(model.item_starts_at_ > context.as_of)
    if not upcoming.size:
        raise CheckFailure(f"no event is upcoming at {context.as_of}; cannot probe new events")
    # The golden users' own favourites first: a new event like them should reach them.
    liked = [model.recommend(u, n=3, as_of=context.as_of).items for u in golden_user_ids(context)]
    source = np.concatenate(liked + [upcoming]).astype(np.intp)
    _, first = np.unique(source, return_index=True)
    return upcoming, source[np.sort(first)][:PROBES]


def _alike(model: Any, source: np.ndarray) -> bool:
    """True when the probe events' metadata tokens are all the same, e.g. ratings without items.

    The map then gives every new event one score, a copy of a favourite
    the same as any other: there is nothing to rank it by, nothing buried.
    """
    from service import item_features

    meta = item_features.metadata_of(
        model.item_ids_[source], None, model.item_categories_[source],
        model.item_cities_[source], model.item_starts_at_[source])
    return len(set(zip(*item_features.tokens(meta)))) <= 1


def _probe_view(model: Any, context: RunContext, upcoming: np.ndarray, source: np.ndarray):
    """Return the view of the upcoming catalogue plus probe events, and the probes' rows."""
    from service.catalogue import overlay
    from service.training.data import Catalogue

    probe_ids = np.array([f"{PROBE_PREFIX}{i:04d}" for i in range(source.size)])
    every = np.concatenate([upcoming, source])
    catalogue = Catalogue(
        item_id=np.concatenate([model.item_ids_[upcoming], probe_ids]),
        title=np.concatenate([model.item_titles_[upcoming], probe_ids]),
        category=model.item_categories_[every], starts_at=model.item_starts_at_[every],
        city=model.item_cities_[every])
    return overlay(model, catalogue)


def check_new_events_scored(model: Any, context: RunContext) -> None:
    """Require probe events to get finite factors and scores from the metadata map."""
    if not _scores_metadata(model):
        return
    for name in ("feature_vocab_", "feature_weights_"):
        if getattr(model, name, None) is None:
            raise CheckFailure(f"{name} is missing: the model has no metadata map, so it cannot "
                               "score events listed after its fit; retrain")
    view, _ = _probe_view(model, context, *_probe_sources(model, context))
    new = view.new
    if new is None or not len(new):
        raise CheckFailure("no probe event was taken as new; the catalogue overlay is broken")
    bad = int((~np.isfinite(new.factors).all(axis=1) | ~np.isfinite(new.bias)).sum())
    if bad:
        raise CheckFailure(f"{bad} of {len(new)} probe events got non-finite factors or bias "
                           "from the metadata map (feature_weights_); new events would score NaN")


def check_new_events_recommended(model: Any, context: RunContext) -> None:
    """Require some golden user to rank a probe event in the upper half of what is upcoming.

    Probes carry no performer or venue, so they miss the content a real new
    event has, and rarely reach a top 10; a map that buries new events (a
    sunk intercept, a sign flipped) puts every one of them at the bottom.
    Where the probes' metadata is all alike (a ratings file without an items
    file: one category, no city, no start), a copy of a favourite is like any
    new item and there is nothing to judge.
    """
    from service.catalogue_view import recommend

    if not _scores_metadata(model):
        return
    upcoming, source = _probe_sources(model, context)
    if _alike(model, source):
        return
    view, _ = _probe_view(model, context, upcoming, source)
    user_ids = golden_user_ids(context)
    for user_id in user_ids:
        upper = recommend(model, view, user_id, max(1, upcoming.size // 2), context.as_of)
        if not np.isfinite(upper.scores).all():
            raise CheckFailure(f"golden user {user_id} got non-finite scores with new events "
                               "listed")
        if np.any(upper.items >= view.n_model):
            return
    raise CheckFailure(
        f"none of {len(user_ids)} golden users ranks any of {len(view.new)} new events copied "
        f"from their own favourites in the upper half of the {upcoming.size} upcoming; the "
        "metadata map buries new events, and events listed after the fit would never be "
        "recommended")
