"""The live catalogue: check an items file, then lay it over the model that serves.

Between retrains the business lists new events and takes others off sale. An
items CSV (the training format, plus an ``available`` or ``status`` column)
is read every few minutes; :func:`check` refuses one that would hurt (no
events, or far fewer on sale than the catalogue it replaces), and
:func:`overlay` turns an accepted one into what a request reads: the model's
items that are still on sale, and the new ones scored from their metadata
(``service.item_features``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from service import item_features
from service.catalogue_view import CatalogueView, NewItems, build_view, codes, scores_by_factors
from service.training.data import Catalogue


class CatalogueRefused(ValueError):
    """A catalogue failed its checks; the one serving stays."""


@dataclass(frozen=True)
class LiveCatalogue:
    """An accepted catalogue laid over one model: what requests on that model read."""

    run_id: str
    view: CatalogueView
    item_json: tuple[str, ...]
    loaded_at: float
    source: str
    events: int
    on_sale: int
    new_events: int


def on_sale_upcoming(catalogue: Catalogue, as_of: float) -> int:
    """Count the events of a catalogue that are on sale and not started at ``as_of``."""
    upcoming = np.asarray(catalogue.starts_at) > as_of
    if catalogue.available is not None:
        upcoming &= np.asarray(catalogue.available, dtype=bool)
    return int(upcoming.sum())


def check(catalogue: Catalogue, as_of: float, previous_on_sale: int | None,
          max_shrink: float) -> None:
    """Refuse a catalogue with no upcoming event on sale, or one that shrinks too much at once.

    ``load_items`` already refused a bad schema, bad timestamps and duplicate
    ids, naming the row. The shrink bound compares the upcoming events on
    sale with those of the catalogue that serves: a file cut short by a failed
    export must not take most of the events off the service.
    """
    count = on_sale_upcoming(catalogue, as_of)
    if count == 0:
        raise CatalogueRefused(f"the catalogue has {len(catalogue)} events and none is upcoming "
                               "and on sale; refusing it")
    if previous_on_sale and count < (1.0 - max_shrink) * previous_on_sale:
        raise CatalogueRefused(
            f"the catalogue has {count} upcoming events on sale against {previous_on_sale} in "
            f"the one serving, a drop of {1 - count / previous_on_sale:.0%} "
            f"(LINEUP_CATALOGUE_MAX_SHRINK allows {max_shrink:.0%}); refusing it")


def _new_items(model, catalogue: Catalogue, order: np.ndarray, cities: dict[str, int],
               categories: dict[str, int]) -> NewItems:
    """Score the catalogue's rows ``order`` (events the model never saw) from their metadata."""
    city = (np.asarray(catalogue.city)[order] if catalogue.city is not None
            else np.full(order.size, ""))
    category = np.asarray(catalogue.category)[order]
    ids = np.asarray(catalogue.item_id)[order]
    meta = item_features.metadata_of(ids, catalogue, category, city,
                                     np.asarray(catalogue.starts_at)[order])
    factors, bias = item_features.new_item_factors(
        item_features.tokens(meta), model.feature_vocab_, model.feature_weights_,
        content_dims=model.content_dims, content_weight=model.new_content_weight,
        segment_vocab=model.segment_vocab_, segment_weight=model.segment_weight,
        launch_prior=model.launch_prior_)
    n_clusters = int(model.cluster_item_scores_.shape[0])
    return NewItems(
        item_ids=ids, starts_at=meta.starts_at, city_codes=codes(city, cities),
        category_codes=codes(category, categories),
        factors=factors, bias=bias,
        cluster_scores=np.zeros((n_clusters, order.size), dtype=np.float32),
        popularity=np.zeros(order.size, dtype=np.float32))


def overlay(model, catalogue: Catalogue) -> tuple[CatalogueView, np.ndarray]:
    """Return the view of ``catalogue`` over ``model`` and the catalogue rows of its new items.

    The rows are in the new items' order (by start, then id).

    A model item the catalogue no longer lists, or marks off sale, is
    unavailable; a listed item the model never saw is new. Model items keep
    the metadata they were trained with.
    """
    ids = np.asarray(catalogue.item_id)
    on_sale = (np.ones(ids.shape, dtype=bool) if catalogue.available is None
               else np.asarray(catalogue.available, dtype=bool))
    order = np.argsort(ids)
    at = np.minimum(np.searchsorted(ids[order], model.item_ids_), max(ids.size - 1, 0))
    listed = ids[order][at] == model.item_ids_
    available = listed & on_sale[order][at]
    known = np.isin(ids, model.item_ids_)
    rows = np.flatnonzero(~known & on_sale)
    rows = rows[np.lexsort((ids[rows], np.asarray(catalogue.starts_at)[rows]))]
    view = build_view(model, available=available)
    if not rows.size or not scores_by_factors(model):  # another servable: no metadata map
        return view, rows[:0]
    new = _new_items(model, catalogue, rows, view.cities, view.categories)
    return replace(view, new=new, item_ids=np.concatenate([view.item_ids, new.item_ids])), rows
