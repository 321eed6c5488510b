"""EventRecommender: the estimator contract and what a list may contain."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge

from service import item_features
from service.catalogued import top_indices
from service.recommender import (
    EventRecommender, PopularityRecommender, Recommendation, TopPerSegment)


@pytest.fixture
def now(fitted_model):
    """The instant just after the small world's last interaction."""
    return fitted_model.fitted_as_of_ + 1.0


def _bought(model, row):
    return model.seen_indices_[model.seen_indptr_[row]:model.seen_indptr_[row + 1]]


def test_recommend_before_fit_raises():
    with pytest.raises(NotFittedError):
        EventRecommender().recommend("u-000001")


def test_init_only_stores_keyword_params():
    model = EventRecommender(n_components=8, popularity_weight=0.2)
    assert model.get_params()["n_components"] == 8
    with pytest.raises(TypeError):
        EventRecommender(8)  # keyword-only


def test_excludes_bought_and_past_items(fitted_model, now):
    buyers = np.flatnonzero(np.diff(fitted_model.seen_indptr_) > 0)[:200]
    assert buyers.size
    for row in buyers:
        rec = fitted_model.recommend(str(fitted_model.user_ids_[row]), 10, now)
        assert rec.strategy == "personalised"
        assert not np.isin(rec.items, _bought(fitted_model, row)).any()
        assert (fitted_model.item_starts_at_[rec.items] > now).all()


def test_later_as_of_drops_started_events(fitted_model, now):
    user = str(fitted_model.user_ids_[0])
    first = fitted_model.recommend(user, 10, now)
    later = now + 3 * 86_400
    rec = fitted_model.recommend(user, 10, later)
    assert (fitted_model.item_starts_at_[rec.items] > later).all()
    assert len(rec.items) == len(first.items) == 10


def test_cold_user_gets_most_popular_upcoming(fitted_model, now):
    rec = fitted_model.recommend("never-seen", 10, now)
    assert rec.strategy == "cold_start"
    upcoming = np.flatnonzero(fitted_model.item_starts_at_ > now)
    best = upcoming[np.argsort(-fitted_model.item_popularity_[upcoming], kind="stable")][:10]
    assert set(rec.items) == set(best)
    assert (np.diff(rec.scores) <= 0).all()


def test_taste_hint_for_unknown_user(fitted_model, now):
    label = str(fitted_model.cluster_labels_[1])
    rec = fitted_model.recommend("never-seen", 10, now, taste=label.upper())
    assert rec.strategy == "cold_start_taste"
    scores = fitted_model.cluster_item_scores_[1]
    upcoming = np.flatnonzero(fitted_model.item_starts_at_ > now)
    assert set(rec.items) == set(upcoming[np.argsort(-scores[upcoming], kind="stable")][:10])


def test_unknown_taste_falls_back_and_known_users_ignore_taste(fitted_model, now):
    assert fitted_model.recommend("never-seen", 5, now, taste="polka").strategy == "cold_start"
    user = str(fitted_model.user_ids_[3])
    label = str(fitted_model.cluster_labels_[0])
    with_taste = fitted_model.recommend(user, 5, now, taste=label)
    assert with_taste.strategy == "personalised"
    assert np.array_equal(with_taste.items, fitted_model.recommend(user, 5, now).items)


def test_cluster_labels_are_readable_and_unique(fitted_model):
    labels = fitted_model.cluster_labels_.tolist()
    assert len(labels) == len(set(labels)) == 4
    categories = set(fitted_model.item_categories_.tolist())
    assert all(label.rsplit("-", 1)[0] in categories or label in categories for label in labels)


@pytest.mark.parametrize("n", [1, 10, 37])
def test_returns_n_unique_items(fitted_model, now, n):
    rec = fitted_model.recommend(str(fitted_model.user_ids_[5]), n, now)
    assert isinstance(rec, Recommendation)
    assert len(rec.items) == len(set(rec.items.tolist())) == n
    assert np.array_equal(rec.item_ids, fitted_model.item_ids_[rec.items])
    assert len(rec.scores) == n and np.isfinite(rec.scores).all()


def test_returns_fewer_when_fewer_exist(fitted_model, now):
    row = int(np.argmax(np.diff(fitted_model.seen_indptr_)))
    user = str(fitted_model.user_ids_[row])
    upcoming = set(np.flatnonzero(fitted_model.item_starts_at_ > now).tolist())
    available = upcoming - set(_bought(fitted_model, row).tolist())
    rec = fitted_model.recommend(user, len(fitted_model.item_ids_) + 50, now)
    assert set(rec.items.tolist()) == available
    assert len(rec.items) == len(available)
    assert len(fitted_model.recommend(user, 0, now).items) == 0


def test_deterministic_fit_and_recommend(small_world, fitted_model, now):
    log, catalogue = small_world
    again = EventRecommender(n_components=16, n_clusters=4).fit(log, items=catalogue)
    np.testing.assert_array_equal(again.item_factors_, fitted_model.item_factors_)
    np.testing.assert_array_equal(again.user_clusters_, fitted_model.user_clusters_)
    for user in fitted_model.user_ids_[:20]:
        first, second = (m.recommend(str(user), 10, now) for m in (fitted_model, again))
        assert np.array_equal(first.items, second.items)
        assert np.array_equal(first.scores, second.scores)


def test_the_factors_span_nearly_the_same_space_whatever_the_seed(small_world, fitted_model):
    # The randomized SVD's seed should not pick the model: the projection onto the
    # item factors moved by up to 0.046 between seeds 0 and 1 with 4 power
    # iterations, and by 0.015 with SVD_POWER_ITERATIONS (7).
    log, catalogue = small_world
    other = EventRecommender(n_components=16, n_clusters=4, random_state=1).fit(
        log, items=catalogue)
    first, second = (m.item_factors_.astype(np.float64) for m in (fitted_model, other))
    assert np.abs(first @ first.T - second @ second.T).max() < 0.03


def test_batch_equals_single(fitted_model, now):
    users = [str(u) for u in fitted_model.user_ids_[:30]] + ["never-seen"]
    batch = fitted_model.recommend_batch(users, 10, now)
    for user, rec in zip(users, batch, strict=True):
        single = fitted_model.recommend(user, 10, now)
        assert np.array_equal(rec.items, single.items)
        assert np.array_equal(rec.scores, single.scores)
        assert rec.strategy == single.strategy


@pytest.mark.parametrize("days_later, n", [(0, 1), (0, 10), (0, 100), (0, 150), (5, 10),
                                           (5, 100), (-3, 10)])
def test_ranked_lists_are_the_scored_lists(fitted_model, now, days_later, n):
    """Reading the fit-time ranking answers exactly what scoring the catalogue would.

    n above n_ranked, a much later instant (too few ranked items left) and an
    instant before the fit (started items are upcoming again) are answered by
    scoring, and agree all the same.
    """
    as_of = now + days_later * 86_400
    for user in fitted_model.user_ids_[::7]:
        ranked = fitted_model.recommend(str(user), n, as_of)
        scored = fitted_model.recommend(str(user), n, as_of, use_ranking=False)
        assert np.array_equal(ranked.items, scored.items), user
        # float32 dot products over differently aligned slices differ in the last bit.
        np.testing.assert_allclose(ranked.scores, scored.scores, rtol=1e-6, err_msg=user)
        assert ranked.strategy == scored.strategy == "personalised"


def test_short_rankings_fall_back_to_scoring(small_world, now):
    log, catalogue = small_world
    model = EventRecommender(n_components=16, n_clusters=4, n_ranked=3).fit(log, items=catalogue)
    assert model.user_ranking_.shape == (len(model.user_ids_), 3)
    for user in model.user_ids_[:50]:
        ranked = model.recommend(str(user), 10, now)
        assert len(ranked.items) == 10
        assert np.array_equal(ranked.items, model.recommend(str(user), 10, now,
                                                            use_ranking=False).items)


def test_ranking_leaves_out_bought_and_started_items(fitted_model):
    for row in range(0, len(fitted_model.user_ids_), 11):
        ranking = fitted_model.user_ranking_[row]
        ranked = ranking[ranking >= 0]
        assert (ranked >= fitted_model.ranked_from_).all()
        assert not np.isin(ranked, _bought(fitted_model, row)).any()
        assert (np.diff(fitted_model.user_ranking_scores_[row, :ranked.size]) <= 0).all()


def test_segment_rows_are_each_city_and_categorys_best_unseen_items(fitted_model):
    """A city's row and a city and category's row are the best of that segment, by scoring."""
    model = fitted_model
    cities = np.char.lower(model.item_cities_.astype(str))
    categories = np.char.lower(model.item_categories_.astype(str))
    upcoming = np.arange(model.item_ids_.shape[0]) >= model.ranked_from_
    assert model.ranked_categories_.size == np.unique(categories[upcoming]).size > 1
    for row in range(0, len(model.user_ids_), 53):
        scores = model.score_items(row, np.arange(model.item_ids_.shape[0]))
        scores[_bought(model, row)] = -np.inf
        for c, city in enumerate(model.ranked_cities_):
            rows = [(model.user_city_ranking_[row, c], cities == city)]
            rows += [(model.user_city_category_ranking_[row, c, k],
                      (cities == city) & (categories == category))
                     for k, category in enumerate(model.ranked_categories_)]
            for got, segment in rows:
                items = np.flatnonzero(segment & upcoming & (scores > -np.inf))
                want = np.sort(scores[items])[::-1][:got.size]
                ranked = got[got >= 0]
                assert ranked.size == want.size and (got[ranked.size:] == -1).all()
                assert segment[ranked].all() and upcoming[ranked].all()
                np.testing.assert_allclose(scores[ranked], want, rtol=1e-5)


def test_top_per_segment_ranks_each_segment_as_top_indices_does():
    """Ties at a segment's cut go to the lowest positions; -inf and NaN are never kept."""
    rng = np.random.default_rng(0)
    segment = rng.integers(-1, 4, 60)
    segment[segment == 3] = 2  # segment 3 is empty
    scores = rng.integers(0, 5, (40, 60)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    scores[rng.random(scores.shape) < 0.05] = np.nan
    positions, values = TopPerSegment(segment, 4, 6).top(scores)
    for user in range(scores.shape[0]):
        for at in range(4):
            items = np.flatnonzero(segment == at)
            want = items[top_indices(scores[user, items], 6)]
            got = positions[user, at]
            assert got[:want.size].tolist() == want.tolist()
            assert (got[want.size:] == -1).all() and (values[user, at, want.size:] == 0).all()
            np.testing.assert_array_equal(values[user, at, :want.size], scores[user, want])


def test_known_user(fitted_model):
    assert fitted_model.known_user(str(fitted_model.user_ids_[0]))
    assert not fitted_model.known_user("never-seen")
    longer = str(fitted_model.user_ids_[0]) + "0"  # longer than every id the model knows
    assert not fitted_model.known_user(longer)
    assert fitted_model.recommend(longer, 10).strategy == "cold_start"


def test_learned_arrays_are_plain_numpy(fitted_model):
    expected = {
        "user_ids_": "U", "user_factors_": np.float32, "item_ids_": "U",
        "item_factors_": np.float32, "item_titles_": "U", "item_categories_": "U",
        "item_starts_at_": np.float64, "item_popularity_": np.float32,
        "seen_indptr_": np.int64, "seen_indices_": np.int32, "cluster_labels_": "U",
        "user_clusters_": np.int32, "cluster_item_scores_": np.float32,
        "user_ranking_": np.int32, "user_ranking_scores_": np.float32,
    }
    for name, dtype in expected.items():
        value = getattr(fitted_model, name)
        assert type(value) is np.ndarray, name
        if dtype == "U":
            assert value.dtype.kind == "U", name
        else:
            assert value.dtype == dtype, name
    for name, value in vars(fitted_model).items():
        if name.endswith("_") and isinstance(value, np.ndarray):
            assert value.dtype != object, name
    assert np.all(fitted_model.user_ids_[:-1] < fitted_model.user_ids_[1:])
    assert fitted_model.seen_indptr_.shape == (len(fitted_model.user_ids_) + 1,)
    assert fitted_model.cluster_item_scores_.shape == (4, len(fitted_model.item_ids_))
    assert fitted_model.schema_version_ == EventRecommender.SCHEMA_VERSION


def test_popularity_baseline_has_the_same_interface(small_world, now):
    log, catalogue = small_world
    baseline = PopularityRecommender().fit(log, items=catalogue)
    rec = baseline.recommend("never-seen", 10, now)
    assert len(rec.items) == 10
    assert (baseline.item_starts_at_[rec.items] > now).all()


def test_an_int_id_reads_as_its_digits_and_other_types_are_refused():
    from service.training.data import Interactions

    log = Interactions.from_arrays(["259", "259", "7", "7"], ["a", "b", "a", "c"],
                                   [1.0, 2.0, 3.0, 4.0])
    model = EventRecommender(n_components=1, n_clusters=1).fit(log)
    assert model.recommend(259, 5).item_ids.tolist() == model.recommend("259", 5).item_ids.tolist()
    assert model.recommend(np.int64(7), 5).strategy == "personalised"
    assert model.known_user(259)
    with pytest.raises(TypeError, match="user_id must be a string .* not float 259.0"):
        model.recommend(259.0, 5)


def test_seen_comes_from_the_interaction_kind_not_the_weight():
    from service.training.data import Interactions

    # u1 viewed b with a high weight (not seen) and bought a with a low one (seen).
    log = Interactions.from_arrays(["u1", "u1", "u2", "u2", "u2"], ["a", "b", "a", "b", "c"],
                                   [1.0, 2.0, 3.0, 4.0, 5.0], weight=[1.0, 9.0, 1.0, 1.0, 1.0],
                                   seen=[True, False, True, True, True])
    for model in (EventRecommender(n_components=1, n_clusters=1).fit(log),
                  PopularityRecommender().fit(log)):
        listed = model.recommend("u1", 5).item_ids.tolist()
        assert "a" not in listed and "b" in listed


@pytest.mark.parametrize("params", [{"weighting": "log"}, {"weighting": "binary"},
                                    {"user_half_life": 3.0}, {"half_life_days": np.inf},
                                    {"user_half_life": 3.0, "user_decay_floor": 0.0}])
def test_weightings_and_half_lives_change_the_factors(small_world, fitted_model, params):
    log, catalogue = small_world
    model = EventRecommender(n_components=16, n_clusters=1, n_ranked=0, **params).fit(
        log, items=catalogue)
    assert model.item_factors_.shape == fitted_model.item_factors_.shape
    assert not np.allclose(np.abs(model.item_factors_), np.abs(fitted_model.item_factors_))


def test_unknown_weighting_is_refused(small_world):
    with pytest.raises(ValueError, match="weighting 'square' is not one of raw, binary, log"):
        EventRecommender(weighting="square").fit(small_world[0])
    with pytest.raises(ValueError, match=r"user_decay_floor 1.5 is not in \[0, 1\]"):
        EventRecommender(user_decay_floor=1.5).fit(small_world[0])


def test_the_metadata_ridge_is_scikit_learns_ridge(small_world):
    rng = np.random.default_rng(0)
    one_hot = sparse.csr_matrix((rng.random((300, 40)) < 0.1).astype(float))
    targets = rng.normal(size=(300, 5))
    weights = item_features.ridge(one_hot, targets, 2.0)
    reference = Ridge(alpha=2.0, solver="cholesky").fit(one_hot.toarray(), targets)
    np.testing.assert_allclose(weights[:-1], reference.coef_.T, atol=1e-10)
    np.testing.assert_allclose(weights[-1], reference.intercept_, atol=1e-10)
    with pytest.raises(ValueError, match="metadata_alpha 0 must be positive"):
        EventRecommender(metadata_alpha=0).fit(small_world[0])


def test_the_decay_floor_keeps_a_users_older_taste():
    from service.training.data import Interactions

    # u bought a0..a19 long ago, then x0..x9; v bought the a's and b, w the x's and c.
    # With the user half-life alone the a's fade from u's profile and c, the
    # recent taste's item, leads; the higher the floor, the more the a's still
    # count, and b gains on c until, with no decay at all, it leads.
    old, recent = [f"a{i}" for i in range(20)], [f"x{i}" for i in range(10)]
    users = ["u"] * 30 + ["v"] * 21 + ["w"] * 11
    items = old + recent + old + ["b"] + recent + ["c"]
    log = Interactions.from_arrays(users, items, np.arange(len(users), dtype=float))

    def lead_of_b(floor: float) -> float:
        model = EventRecommender(n_components=2, n_clusters=1, popularity_weight=0.0,
                                 half_life_days=np.inf, user_half_life=2.0,
                                 user_decay_floor=floor).fit(log)
        listed = model.recommend("u", 2)
        assert sorted(listed.item_ids.tolist()) == ["b", "c"]
        scores = dict(zip(listed.item_ids.tolist(), listed.scores.tolist()))
        return scores["b"] - scores["c"]

    leads = [lead_of_b(floor) for floor in (0.0, 0.1, 0.3, 1.0)]
    assert leads[0] < 0 < leads[-1] and leads == sorted(leads)


def test_momentum_ranks_a_hot_new_item_above_an_old_one_that_sold_as_much():
    from service.catalogued import DAY, momentum

    now = 100 * DAY
    # Item 0: 10 sales over the last day; item 1: 10 sales spread over 40 days.
    items = np.repeat([0, 1], 10)
    timestamp = np.concatenate([now - np.linspace(0.0, 0.9, 10) * DAY,
                                now - np.linspace(0.0, 40.0, 10) * DAY])
    weight = np.full(20, 5.0)
    rate = momentum(items, weight, timestamp, now, 3, 4.0)
    assert rate[0] > 5 * rate[1] and rate[2] == 0.0
    # No decay: sales per day since the first; not per day: the decayed total.
    np.testing.assert_allclose(momentum(items, weight, timestamp, now, 3, np.inf),
                               [50.0, 50.0 / 40.0, 0.0])
    total = momentum(items, weight, timestamp, now, 3, 4.0, per_day=False)
    assert total[0] > total[1] and total[0] <= 50.0


def test_demand_in_the_users_own_segment_lifts_its_items_for_them(small_world):
    """Segment demand adds prior x the user's share of the item's category-city, nothing else."""
    log, catalogue = small_world
    params = dict(n_components=16, n_clusters=1, n_ranked=0)
    without = EventRecommender(**params, segment_weight=0.0).fit(log, items=catalogue)
    model = EventRecommender(**params, segment_weight=3.0).fit(log, items=catalogue)
    user = log.user_vocab[np.bincount(log.user_codes).argmax()]
    row = model._user_row(str(user))
    lift = model._user_scores(row, 0) - without._user_scores(row, 0)
    mine = log.user_codes == np.flatnonzero(log.user_vocab == user)[0]
    pairs = np.char.add(model.item_categories_.astype(str), model.item_cities_.astype(str))
    index = {item: i for i, item in enumerate(model.item_ids_.tolist())}
    bought = pairs[[index[item] for item in log.item_vocab[log.item_codes[mine]].tolist()]]
    names, counts = np.unique(bought, return_counts=True)
    favourite = pairs == names[counts.argmax()]
    assert lift.min() >= -1e-6
    assert lift[favourite].mean() > 2 * lift[~favourite].mean()


def test_without_cities_there_are_no_segments(small_world, fitted_model):
    """A ratings file has no place to be local to: no segment columns, the factors unchanged."""
    log, _ = small_world
    model = EventRecommender(n_components=16, n_clusters=1, n_ranked=0).fit(log)
    assert model.segment_vocab_.size == 0
    assert fitted_model.segment_vocab_.size > 1
    assert model.item_factors_.shape[1] == 16 + model.content_dims
