"""What a request may recommend: the model's items, minus the unavailable, plus new ones.

A :class:`CatalogueView` is built once per (model, catalogue) pair, off the
request path, and never changes. It holds

* the codes of each model item's city and category, and posting lists (item
  indices, which are in start order) per city, per category and per pair, so
  a filtered request touches only the items that can match;
* ``available``: False for a model item the live catalogue marks sold out or
  cancelled, or no longer lists;
* which of its city and category codes the model ranks per user
  (``ranked_cities_``, ``ranked_categories_``);
* a block of *new* items, listed after the fit, with factors predicted from
  their metadata (``service.item_features``). They are numbered after the
  model's items: index ``n_model + j`` is new item ``j``.

:func:`recommend` answers exactly as the model would over that catalogue: it
reads the user's fit-time ranking (for one city, that city's row; for one
city and one category, that pair's) where the ranking can answer, and scores
only the candidates where it cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.candidate_blocks import Block, BlockCache, gather
from service.catalogued import top_indices
from service.filters import ItemFilter
from service.servable import Recommendation


def codes(values: np.ndarray, vocabulary: dict[str, int]) -> np.ndarray:
    """Return each value's code in ``vocabulary`` (lower-cased), adding the values it lacks."""
    lowered = np.char.lower(np.asarray(values).astype(str))
    for value in np.unique(lowered).tolist():
        vocabulary.setdefault(value, len(vocabulary))
    return np.array([vocabulary[v] for v in lowered.tolist()], dtype=np.int32)


def _postings(codes: np.ndarray, keep: np.ndarray) -> dict[int, np.ndarray]:
    """Return ``{code: ascending item indices}`` over the kept items."""
    kept = np.flatnonzero(keep).astype(np.int32)
    order = np.argsort(codes[kept], kind="stable")
    kept, sorted_codes = kept[order], codes[kept][order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    return {int(part_codes[0]): part for part, part_codes in
            zip(np.split(kept, bounds), np.split(sorted_codes, bounds)) if part.size}


@dataclass(frozen=True)
class NewItems:
    """Items the model never saw, with what scoring them needs; all arrays are in one order."""

    item_ids: np.ndarray
    starts_at: np.ndarray
    city_codes: np.ndarray
    category_codes: np.ndarray
    factors: np.ndarray
    bias: np.ndarray
    cluster_scores: np.ndarray   # (n_clusters, n_new)
    popularity: np.ndarray

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])


@dataclass(frozen=True)
class CatalogueView:
    """The model's items with their filter index, availability and the new items."""

    n_model: int
    starts_at: np.ndarray
    city_codes: np.ndarray
    category_codes: np.ndarray
    cities: dict[str, int]
    categories: dict[str, int]
    available: np.ndarray | None
    by_city: dict[int, np.ndarray]
    by_category: dict[int, np.ndarray]
    by_pair: dict[int, np.ndarray]
    new: NewItems | None = None
    #: True when this module scores the model itself (see scores_by_factors).
    by_factors: bool = False
    #: ``{city code: row in the model's user_city_ranking_}`` for the cities it ranks.
    ranked_cities: dict[int, int] = field(default_factory=dict)
    #: ``{category code: column in the model's user_city_category_ranking_}``.
    ranked_categories: dict[int, int] = field(default_factory=dict)
    #: The item ids of model and new items together, for the answer.
    item_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=str))
    #: Each filter's candidates with their factors (service.candidate_blocks).
    blocks: BlockCache = field(default_factory=BlockCache, init=False, repr=False,
                               compare=False)

    @property
    def plain(self) -> bool:
        """True when the view changes nothing: every model item available, no new item."""
        return self.available is None and self.new is None

    def wanted(self, names: tuple[str, ...], vocabulary: dict[str, int]) -> np.ndarray | None:
        """Return the codes a filter's names match (unknown names match nothing), or None."""
        if not names:
            return None
        return np.array([vocabulary[name] for name in names if name in vocabulary],
                        dtype=np.int32)


def _member(codes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Return ``np.isin(codes, wanted)`` for small code sets (isin sorts: 10 µs a call)."""
    if wanted.size == 1:
        return codes == wanted[0]
    table = np.zeros(int(max(codes.max(initial=0), wanted.max(initial=0))) + 1, dtype=bool)
    table[wanted] = True
    return table[codes]


def build_view(model, available: np.ndarray | None = None) -> CatalogueView:
    """Index the model's items; new items are added with the view's vocabularies (catalogue)."""
    cities: dict[str, int] = {}
    categories: dict[str, int] = {}
    city_codes = codes(model.item_cities_, cities)
    category_codes = codes(model.item_categories_, categories)
    keep = np.ones(city_codes.shape, dtype=bool) if available is None else available
    pair = city_codes.astype(np.int64) * 65_536 + category_codes
    by_factors = scores_by_factors(model)
    ranked = model.ranked_cities_.tolist() if by_factors else []
    ranked_categories = model.ranked_categories_.tolist() if by_factors else []
    return CatalogueView(
        n_model=int(model.item_ids_.shape[0]), starts_at=np.asarray(model.item_starts_at_),
        city_codes=city_codes, category_codes=category_codes, cities=cities,
        categories=categories, available=available, by_city=_postings(city_codes, keep),
        by_category=_postings(category_codes, keep), by_pair=_postings(pair, keep),
        item_ids=np.asarray(model.item_ids_), by_factors=by_factors,
        ranked_cities={cities[name]: row for row, name in enumerate(ranked) if name in cities},
        ranked_categories={categories[name]: column for column, name
                           in enumerate(ranked_categories) if name in categories})


def _window(view: CatalogueView, item_filter: ItemFilter, first: int) -> tuple[int, int]:
    """Return the model item index range [lo, hi) upcoming and inside the time window."""
    if item_filter.starts_after == -math.inf and item_filter.starts_before == math.inf:
        return first, view.n_model
    lo = max(first, int(view.starts_at.searchsorted(item_filter.starts_after, "right")))
    hi = (view.n_model if item_filter.starts_before == math.inf
          else int(view.starts_at.searchsorted(item_filter.starts_before, "left")))
    return lo, max(lo, hi)


#: A known user's filtered list is scored outright when the filter leaves at most
#: this many items: cheaper than looking for n matches in the fit-time ranking.
SCORE_DIRECTLY_UP_TO = 512


def _candidates(view: CatalogueView, cities: np.ndarray | None,
                categories: np.ndarray | None) -> np.ndarray:
    """Return the ascending model item indices that match and are available (any start time)."""
    if cities is None and categories is None:
        span = np.arange(view.n_model)
        return span if view.available is None else span[view.available]
    if cities is not None and categories is not None:
        keys = (cities[:, None].astype(np.int64) * 65_536 + categories[None, :]).ravel()
        lists = [view.by_pair.get(int(key)) for key in keys]
    elif cities is not None:
        lists = [view.by_city.get(int(code)) for code in cities]
    else:
        lists = [view.by_category.get(int(code)) for code in categories]
    parts = [part for part in lists if part is not None]
    if not parts:
        return np.empty(0, dtype=np.int32)
    return parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts))


def _block(view: CatalogueView, model, item_filter: ItemFilter) -> Block:
    """Return the block of every available model item in the filter's cities and categories.

    Keyed by the filter's names, so a request that finds its block also finds
    their codes there: nothing about the names is resolved twice.
    """
    def build() -> Block:
        cities = view.wanted(item_filter.cities, view.cities)
        categories = view.wanted(item_filter.categories, view.categories)
        # Names the catalogue lacks match nothing: one known city is a one-city filter.
        one_city = cities is not None and cities.size == 1
        one_category = categories is not None and categories.size == 1
        return gather(_candidates(view, cities, categories),
                      model.item_factors_, model.item_bias_, cities=cities,
                      categories=categories,
                      ranked_city=view.ranked_cities.get(int(cities[0])) if one_city else None,
                      ranked_category=(view.ranked_categories.get(int(categories[0]))
                                       if one_city and one_category else None),
                      popularity=model.item_popularity_)

    return view.blocks.get((item_filter.cities, item_filter.categories), build)


def _matches(view: CatalogueView, items: np.ndarray, lo: int, hi: int,
             cities: np.ndarray | None, categories: np.ndarray | None) -> np.ndarray:
    """Return which of the model items (-1 is padding) are in [lo, hi), match and are available."""
    ok = items >= lo  # lo >= 0: padding never passes
    if hi < view.n_model:
        ok &= items < hi
    if cities is None and categories is None and view.available is None:
        return ok
    safe = np.where(ok, items, 0)
    if cities is not None:
        ok &= _member(view.city_codes[safe], cities)
    if categories is not None:
        ok &= _member(view.category_codes[safe], categories)
    if view.available is not None:
        ok &= view.available[safe]
    return ok


def _new_candidates(view: CatalogueView, item_filter: ItemFilter, as_of: float,
                    cities: np.ndarray | None, categories: np.ndarray | None) -> np.ndarray:
    new = view.new
    if new is None or not len(new):
        return np.empty(0, dtype=np.intp)
    ok = new.starts_at > max(as_of, item_filter.starts_after)
    if item_filter.starts_before < math.inf:  # no bound keeps an item without a start (inf)
        ok &= new.starts_at < item_filter.starts_before
    if cities is not None:
        ok &= _member(new.city_codes, cities)
    if categories is not None:
        ok &= _member(new.category_codes, categories)
    return ok.nonzero()[0]


def _merge(items: np.ndarray, scores: np.ndarray, n: int, strategy: str,
           view: CatalogueView) -> Recommendation:
    top = top_indices(scores, n)
    chosen = items[top].astype(np.intp)
    return Recommendation(chosen, view.item_ids[chosen], scores[top].astype(np.float64), strategy)


def recommend(model, view: CatalogueView, user_id: str, n: int, as_of: float, *,
              taste: str | None = None, item_filter: ItemFilter | None = None,
              use_ranking: bool | None = None) -> Recommendation:
    """Return the model's top n over the view's catalogue inside the filter, best first.

    Exact: never an item outside the filter or unavailable, and shorter than
    n only when fewer items qualify. A known user's list is read from a
    fit-time ranking when it can answer exactly and ``use_ranking`` is True,
    or None (requests) and the filter is one ranked city, with at most one
    ranked category, or more than SCORE_DIRECTLY_UP_TO items match; False
    always scores the candidates
    (the gate compares the two).
    """
    item_filter = item_filter or ItemFilter()
    # Array methods, not np.searchsorted and np.flatnonzero: their dispatch costs
    # about 0.8 µs a call, a tenth of a filtered request's own work.
    first = int(view.starts_at.searchsorted(as_of, side="right"))
    lo, hi = _window(view, item_filter, first)
    read_segment = use_ranking is not False and view.plain and len(item_filter.cities) == 1 \
        and len(item_filter.categories) <= 1
    if read_segment:
        listed = _from_segment_ranking(model, view, user_id, item_filter, first, lo, hi, n)
        if listed is not None:
            return listed
    if not view.by_factors:
        return _through_model(model, view, user_id, n, as_of, taste, lo, hi,
                              view.wanted(item_filter.cities, view.cities),
                              view.wanted(item_filter.categories, view.categories))
    block = _block(view, model, item_filter)
    cities, categories = block.cities, block.categories
    fresh = _new_candidates(view, item_filter, as_of, cities, categories)
    row = model._user_row(user_id)
    part = block.window(lo, hi)
    candidates = block.items[part]
    own_row = block.ranked_city is not None and (categories is None
                                                 or block.ranked_category is not None)
    if use_ranking is None:  # a segment's own row, with nothing to match, beats any block
        use_ranking = candidates.size > SCORE_DIRECTLY_UP_TO or own_row
    if read_segment and own_row:  # that row was read above, and could not answer
        use_ranking = False
    if row >= 0 and use_ranking and first >= model.ranked_from_:
        ranking, ranked_scores, match_cities, match_categories = _ranked_row(
            model, block, row, cities, categories)
        kept = _matches(view, ranking, lo, hi, match_cities, match_categories).nonzero()[0][:n]
        if kept.size >= n or ranking[-1] < 0:  # exact: see EventRecommender.read_ranking
            old = ranking[kept].astype(np.intp)
            old_scores = (model.score_items(row, old) if ranked_scores is None
                          else ranked_scores[kept])
            if not fresh.size:  # the ranking is best first already
                return Recommendation(old, view.item_ids[old],
                                      old_scores.astype(np.float64), "personalised")
            return _with_new(view, model, row, old, old_scores, fresh, n)
    if row >= 0:
        scores = block.scores(part, model.user_factors_[row])
        seen = model.seen_indices_[model.seen_indptr_[row]:model.seen_indptr_[row + 1]]
        if seen.size and candidates.size:  # both ascending: searches, not isin's sort
            # Most seen items lie outside the candidates' span: two scalar searches
            # leave the few inside it, often none.
            seen = seen[seen.searchsorted(candidates[0]):
                        seen.searchsorted(candidates[-1], "right")]
            if seen.size:
                at = np.minimum(candidates.searchsorted(seen), candidates.size - 1)
                scores[at[candidates[at] == seen]] = -np.inf
        return _with_new(view, model, row, candidates, scores, fresh, n)
    strategy, scores, new_scores = "cold_start", model.item_popularity_, None
    if taste is not None:
        match = np.flatnonzero(np.char.lower(model.cluster_labels_) == taste.strip().lower())
        if match.size:
            strategy, scores = "cold_start_taste", model.cluster_item_scores_[match[0]]
            new_scores = None if view.new is None else view.new.cluster_scores[match[0]]
    if new_scores is None and view.new is not None:
        new_scores = view.new.popularity
    if strategy == "cold_start":  # the block's popularity order answers for every such user
        best = block.most_popular(part, n).astype(np.intp)
        if not fresh.size:
            return Recommendation(best, view.item_ids[best],
                                  scores[best].astype(np.float64), strategy)
        candidates = np.sort(best)  # the model items that can still make the top n
    items = np.concatenate([candidates, fresh + view.n_model]) if fresh.size else candidates
    values = np.asarray(scores[candidates], dtype=np.float64)
    if fresh.size:
        values = np.concatenate([values, np.asarray(new_scores[fresh], dtype=np.float64)])
    return _merge(items, values, n, strategy, view)


def _ranked_row(model, block: Block, row: int, cities: np.ndarray | None,
                categories: np.ndarray | None):
    """Return the fit-time row a known user's list is read from, its scores, and what to match.

    The scores are None for a city and category's row, which stores none: the
    few items read are scored. The row's items must still match the cities
    and categories returned (None: any).
    """
    if block.ranked_city is not None and block.ranked_category is not None:
        return (model.user_city_category_ranking_[row, block.ranked_city, block.ranked_category],
                None, None, None)
    if block.ranked_city is not None:  # the city's row: no city to match
        return (model.user_city_ranking_[row, block.ranked_city],
                model.user_city_ranking_scores_[row, block.ranked_city], None, categories)
    return model.user_ranking_[row], model.user_ranking_scores_[row], cities, categories


def _from_segment_ranking(model, view: CatalogueView, user_id: str, item_filter: ItemFilter,
                          first: int, lo: int, hi: int, n: int) -> Recommendation | None:
    """Read a known user's list for one ranked city (and category) from their row, or None.

    For a view that changes nothing (no item unavailable, none new) the row
    is the answer: the filters a frontend sends most cost what an unfiltered
    request does.
    """
    city = view.ranked_cities.get(view.cities.get(item_filter.cities[0], -1))
    if city is None or first < model.ranked_from_:
        return None
    column = None
    if item_filter.categories:
        column = view.ranked_categories.get(view.categories.get(item_filter.categories[0], -1))
        if column is None:
            return None
    row = model._user_row(user_id)
    if row < 0:
        return None
    if column is None:
        return model.read_ranking(row, model.user_city_ranking_[row, city],
                                  model.user_city_ranking_scores_[row, city], lo, hi, n)
    return model.read_ranking(row, model.user_city_category_ranking_[row, city, column], None,
                              lo, hi, n)


def scores_by_factors(model) -> bool:
    """True for a model this module scores itself (factors, a fit-time ranking, a metadata map)."""
    return all(hasattr(model, name) for name in (
        "user_factors_", "item_factors_", "item_bias_", "user_ranking_", "user_city_ranking_",
        "user_city_ranking_scores_", "user_city_category_ranking_", "feature_weights_"))


def _through_model(model, view: CatalogueView, user_id: str, n: int, as_of: float,
                   taste: str | None, lo: int, hi: int, cities: np.ndarray | None,
                   categories: np.ndarray | None) -> Recommendation:
    """Filter another servable's full upcoming list: exact, at the price of ranking it all."""
    upcoming = max(view.n_model - int(np.searchsorted(view.starts_at, as_of, side="right")), 1)
    every = model.recommend(user_id, upcoming, as_of, taste=taste)
    keep = np.flatnonzero(_matches(view, np.asarray(every.items), lo, hi, cities,
                                   categories))[:n]
    return Recommendation(np.asarray(every.items)[keep], np.asarray(every.item_ids)[keep],
                          np.asarray(every.scores)[keep], every.strategy)


def _with_new(view: CatalogueView, model, row: int, items: np.ndarray, scores: np.ndarray,
              fresh: np.ndarray, n: int) -> Recommendation:
    """Merge a known user's model items with the new items, scored by the user's factors."""
    if fresh.size:
        new = view.new
        new_scores = new.factors[fresh] @ model.user_factors_[row] + new.bias[fresh]
        items = np.concatenate([items, fresh + view.n_model])
        scores = np.concatenate([np.asarray(scores, dtype=np.float32), new_scores])
    return _merge(np.asarray(items), np.asarray(scores), n, "personalised", view)
