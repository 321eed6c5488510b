"""Filters on recommendations: exact against brute force, parsed strictly, and over HTTP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.catalogue_view import build_view, recommend
from service.filters import FilterError, ItemFilter, parse_filter
from service.training.data import parse_timestamp

AS_OF = parse_timestamp("2026-11-27T00:00:00Z")


def _brute_force(model, user_id, n, item_filter, taste=None):
    """The top n by scoring every upcoming item and dropping those outside the filter."""
    everything = model.recommend(user_id, n=model.item_ids_.shape[0], as_of=AS_OF, taste=taste,
                                 **({"use_ranking": False} if model.known_user(user_id) else {}))
    items = everything.items
    ok = ((model.item_starts_at_[items] > item_filter.starts_after)
          & (model.item_starts_at_[items] < item_filter.starts_before))
    if item_filter.cities:
        ok &= np.isin(np.char.lower(model.item_cities_[items]), item_filter.cities)
    if item_filter.categories:
        ok &= np.isin(np.char.lower(model.item_categories_[items]), item_filter.categories)
    return items[ok][:n], everything.scores[ok][:n]


FILTERS = [
    ItemFilter(cities=("london",)),
    ItemFilter(cities=("berlin", "paris"), categories=("rock", "jazz")),
    ItemFilter(categories=("football",)),
    ItemFilter(starts_after=AS_OF + 3 * 86_400, starts_before=AS_OF + 10 * 86_400),
    ItemFilter(cities=("madrid",), categories=("classical",),
               starts_before=AS_OF + 20 * 86_400),
    ItemFilter(cities=("atlantis",)),
    ItemFilter(cities=("london",), starts_after=AS_OF + 2 * 86_400,
               starts_before=AS_OF + 12 * 86_400),
    ItemFilter(cities=("london",), categories=("rock",)),
    ItemFilter(cities=("paris",), categories=("jazz",), starts_after=AS_OF + 5 * 86_400),
]


@pytest.mark.parametrize("use_ranking", [True, False, None], ids=["rankings", "block", "requests"])
@pytest.mark.parametrize("item_filter", FILTERS)
def test_filtered_lists_are_the_top_n_of_the_matching_items(fitted_model, item_filter,
                                                            use_ranking):
    # Both ways a known user's list is made: from a fit-time ranking (a one-city
    # filter reads that city's row, with one category that pair's), and from the
    # block; and as a request chooses.
    view = build_view(fitted_model)
    for user_id in ("u-000001", "u-000007", "u-000042", "nobody", "u-999999"):
        for n in (3, 10, 60):
            got = recommend(fitted_model, view, user_id, n, AS_OF, item_filter=item_filter,
                            use_ranking=use_ranking)
            want_items, want_scores = _brute_force(fitted_model, user_id, n, item_filter)
            np.testing.assert_allclose(got.scores, want_scores, rtol=1e-5, atol=1e-5)
            # Items agree except where scores tie at the cut.
            clear = want_scores > (want_scores[-1] + 1e-5 if want_scores.size else math.inf)
            assert set(got.items[clear]) == set(want_items[clear])
            assert len(got.items) == min(n, len(want_items))


def test_another_servable_is_filtered_exactly_too(small_world):
    from service.knn import ItemKNNRecommender

    log, catalogue = small_world
    knn = ItemKNNRecommender().fit(log, items=catalogue)
    view = build_view(knn)
    for item_filter in FILTERS[:3]:
        for user_id in ("u-000001", "nobody"):
            got = recommend(knn, view, user_id, 10, AS_OF, item_filter=item_filter)
            want_items, want_scores = _brute_force(knn, user_id, 10, item_filter)
            np.testing.assert_allclose(got.scores, want_scores, rtol=1e-5, atol=1e-5)
            assert len(got.items) == len(want_items)


def test_an_unknown_city_gives_an_empty_list(fitted_model):
    got = recommend(fitted_model, build_view(fitted_model), "u-000001", 10, AS_OF,
                    item_filter=ItemFilter(cities=("atlantis",)))
    assert got.items.size == 0 and got.strategy == "personalised"


@pytest.mark.parametrize("given, expected", [
    ({}, None),
    ({"city": ["London", "paris, Berlin"]}, ItemFilter(cities=("berlin", "london", "paris"))),
    ({"category": ["Rock"], "starts_after": ["2026-12-01"]},
     ItemFilter(categories=("rock",), starts_after=parse_timestamp("2026-12-01T00:00:00Z"))),
    ({"starts_before": ["2026-12-01t18:00:00z"]},
     ItemFilter(starts_before=parse_timestamp("2026-12-01T18:00:00Z"))),
])
def test_parse_filter(given, expected):
    assert parse_filter(given) == expected


@pytest.mark.parametrize("given", [
    {"city": [" , "]}, {"starts_after": ["tomorrow"]}, {"starts_before": ["1764547200"]},
    {"starts_after": ["1.5e9"]}, {"starts_before": ["nan"]},
    {"starts_after": ["2026-12-01", "2026-12-02"]}, {"category": ["x"] * 51},
    {"category": [",".join(str(i) for i in range(51))]},
])
def test_parse_filter_refuses_bad_values(given):
    with pytest.raises(FilterError):
        parse_filter(given)


def test_candidate_blocks_stay_within_their_budget_and_drop_the_least_recently_used():
    from service.candidate_blocks import BlockCache, gather

    factors, bias = np.arange(40, dtype=np.float32).reshape(20, 2), np.zeros(20, np.float32)
    built = []

    def build(items):
        built.append(tuple(items))
        return gather(np.array(items, dtype=np.int32), factors, bias)

    one = build([1, 4, 9])
    cache = BlockCache(budget=2 * one.nbytes)
    built.clear()
    first = cache.get("a", lambda: build([1, 4, 9]))
    np.testing.assert_array_equal(first.factors, factors[[1, 4, 9]])
    assert first.items[first.window(2, 10)].tolist() == [4, 9]
    cache.get("b", lambda: build([2, 3, 5]))
    assert cache.get("a", lambda: build([0, 0, 0])) is first  # a hit builds nothing
    cache.get("c", lambda: build([6, 7, 8]))  # over budget: "b" was used least recently
    assert cache.get("a", lambda: build([0, 0, 0])) is first
    cache.get("b", lambda: build([2, 3, 5]))
    assert built == [(1, 4, 9), (2, 3, 5), (6, 7, 8), (2, 3, 5)]
    whole = gather(np.arange(20, dtype=np.int32), factors, bias)
    assert whole.factors is factors  # every item: the model's own array, no copy

    # Filters that match nothing make empty blocks: the count bounds them.
    empty = BlockCache(max_blocks=3)
    for city in range(10):
        empty.get(("atlantis", city), lambda: build([]))
    assert len(empty._blocks) == 3 and ("atlantis", 9) in empty._blocks
