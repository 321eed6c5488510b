"""Recommend upcoming events: a scikit-learn style estimator, free of Metaflow.

Every learned attribute is a plain numpy array (no object dtype, no dicts), so
``joblib.load(path, mmap_mode="r")`` memory-maps them and gunicorn workers
share one copy. ``recommend`` only reads them.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from service import item_features
from service.catalogued import Catalogued, interaction_matrix, momentum, top_indices
from service.popularity import PopularityRecommender
from service.servable import ArraySpec, Recommendation

__all__ = ["EventRecommender", "PopularityRecommender", "Recommendation"]


def busiest(names: np.ndarray, limit: int) -> np.ndarray:
    """Return the ``limit`` most frequent non-empty names, lower case, sorted."""
    lowered = np.char.lower(np.asarray(names).astype(str))
    values, counts = np.unique(lowered[lowered != ""], return_counts=True)
    return np.sort(values[np.argsort(-counts, kind="stable")[:max(limit, 0)]])


def ranked_code(ranked: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Return each name's index in the sorted ``ranked`` (lower case), or -1 when not there."""
    ranked = np.asarray(ranked).astype(str)
    lowered = np.char.lower(np.asarray(names).astype(str))
    if not ranked.size:
        return np.full(lowered.shape, -1, dtype=np.int64)
    code = np.minimum(np.searchsorted(ranked, lowered), ranked.size - 1)
    return np.where(ranked[code] == lowered, code, -1)


def pair_code(city: np.ndarray, category: np.ndarray, n_categories: int) -> np.ndarray:
    """Return each item's (city, category) row index, ``city * n_categories + category``, or -1."""
    return np.where((city >= 0) & (category >= 0), city * n_categories + category, -1)


def category_totals(per_cluster: np.ndarray,
                    item_categories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the categories and each cluster's summed item scores in each (clusters x categories).

    A taste cluster is named after its largest total, so the gate can tell a
    label from its cluster's scores (``cluster_item_scores_`` is scaled per row).
    """
    categories, codes = np.unique(np.asarray(item_categories).astype(str), return_inverse=True)
    totals = np.zeros((per_cluster.shape[0], categories.size))
    for c in range(categories.size):  # a handful of categories, not items
        totals[:, c] = per_cluster[:, codes == c].sum(axis=1)
    return categories, totals


class TopPerSegment:
    """Each segment's ``width`` best items for a batch of users, for segments fixed by item.

    A partial selection per segment over many users at once: sorting each
    user's whole catalogue costs about 330 µs for the sample's 5,000
    upcoming items, selecting each segment's best a few µs a user.
    """

    def __init__(self, segment: np.ndarray, n_segments: int, width: int) -> None:
        by_segment = np.argsort(segment, kind="stable")  # -1 (no ranked segment) first
        ends = np.cumsum(np.bincount(segment + 1, minlength=n_segments + 1))
        self.items = [by_segment[ends[s]:ends[s + 1]] for s in range(n_segments)]
        self.width = width

    def top(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (users, segments, width) item positions, best first, and their scores.

        ``scores`` is (users, items). As ``top_indices`` ranks: equal scores by
        position, -inf and NaN never kept (position -1, score 0).
        """
        users = scores.shape[0]
        shape = (users, len(self.items), self.width)
        positions, values = np.full(shape, -1, dtype=np.int64), np.zeros(shape, np.float32)
        for at, items in enumerate(self.items):
            k = min(self.width, items.size)
            if not k:
                continue
            part = scores[:, items]
            pick = (np.argpartition(-part, k - 1, axis=1)[:, :k] if k < items.size
                    else np.broadcast_to(np.arange(k), (users, k)))
            picked = np.take_along_axis(part, pick, axis=1)
            # Equal scores at the cut: argpartition keeps any of them, the lowest
            # positions are wanted. Rare (82 of the sample's 3.5M city places).
            cut = picked.min(axis=1, keepdims=True)
            tied = ((part == cut).sum(axis=1) > (picked == cut).sum(axis=1)) & (cut[:, 0] > -np.inf)
            for user in tied.nonzero()[0].tolist():
                pick[user] = np.sort(top_indices(part[user], k))
                picked[user] = part[user, pick[user]]
            order = np.lexsort((pick, -picked), axis=1)  # best first, then by position
            pick, picked = (np.take_along_axis(a, order, axis=1) for a in (pick, picked))
            kept = picked > -np.inf
            positions[:, at, :k] = np.where(kept, items[pick], -1)
            values[:, at, :k] = np.where(kept, picked, 0.0)
        return positions, values


class EventRecommender(Catalogued, BaseEstimator):
    """Recommend upcoming events with PureSVD on recency-decayed implicit feedback.

    Fitting builds the user x item matrix of summed interaction strengths,
    each the row's weight (purchase 5.0, view 1.0, or a rating) as
    ``weighting`` says ("raw"; "binary": 1 whatever the weight; "log":
    ``log1p(weight)``), decayed by age with ``half_life_days`` (``inf``: no
    decay) and, with a finite ``user_half_life``, halved for every that many
    later interactions of the same user down to ``user_decay_floor`` of
    itself (a user's latest taste counts most, whenever they were active, and
    their older taste is never forgotten), damps repeats with ``log1p``, and
    scales each item column by ``count ** -count_exponent`` so blockbusters do
    not swamp the factors. A truncated SVD (randomized, ``n_components``) of that
    matrix gives item factors V and user factors (the user's row projected on
    V, normalised to unit length). A user's scores are ``V @ u`` plus
    ``popularity_weight`` times a log-scaled popularity prior, the item's
    momentum (see ``catalogued.momentum``).

    Why this model: on implicit feedback PureSVD is a strong, simple baseline
    that beats ALS/BPR-style methods on top-n accuracy in several studies, it
    fits the default sample (20k users x 14k events, 500k events) in about a
    second with no extra dependency, and scoring is one small mat-vec. The
    recency decay matters because events expire: recent interest predicts the
    next week's purchases far better than last month's, and the popularity
    prior helps users with only one or two interactions. See docs/training.md
    for the measured NDCG@10 against the popularity baseline.

    Taste clusters: KMeans (``n_clusters``) on the user factors. Each cluster
    is labelled with the dominant category of its users' interactions ("rock",
    "rock-2" when two clusters share one) and scores items by its users'
    recency-weighted interactions; unknown users may name one as ``taste``.

    New events: a ridge map from item metadata (category, city, performer,
    venue, start weekday and hour) to factors and prior is blended into items
    with few interactions (``metadata_shrinkage``), and ``content_dims``
    hashed performer/venue dimensions (weighted ``new_content_weight`` for an
    item without interactions, moving to ``content_weight``) carry
    fans' loyalty. Demand is also local: an item's popularity prior goes into
    the dimension of its category-city segment too (the ``segment_dims``
    busiest segments, times ``segment_weight``), and a user's profile over
    segments picks it up, so what sells fast in the user's own category and
    city rises for them before the factors know it. An item with few
    interactions is credited there at least the ``launch_quantile`` of the
    known items' prior, since events sell most soon after going on sale. The
    live catalogue scores events listed after the fit
    with the same map (service/item_features.py). The factors' length grows
    with an item's count (an SVD projection), so a young event with a few
    interactions ranked below both old hits and events with none; a
    ``count_exponent`` above 0.25 flattens that valley and leaves demand to
    the prior, which is momentum: interactions per day since the item's first
    one, over a window of ``prior_half_life_days``, so a hot new event or one
    whose start nears rises.

    Seen items (``X.seen``: bought or rated, not viewed) are never
    recommended back to that user; see service/training/data.py.

    Ranking: fitting also stores each user's ``n_ranked`` best unseen items
    among those upcoming at fit time, best first, with their scores. A
    request filters that row to what is still upcoming, which is the same
    list scoring would give (7 µs against 28 µs for scoring the sample's 5k
    upcoming items); it scores the catalogue only when too few ranked items
    are left. It also stores, for each of the ``MAX_RANKED_CITIES`` cities
    with most upcoming items (``ranked_cities_``, lower case), the user's
    ``n_ranked_per_city`` best unseen items there with their scores, and for
    each of those cities and the ``MAX_RANKED_CATEGORIES`` busiest categories
    (``ranked_categories_``) the user's ``n_ranked_per_city_category`` best
    there, without scores (a read scores its few items), so the filters a
    ticketing frontend sends most, one city with or without one category,
    are row reads too (service/catalogue_view.py).
    """

    #: 9: each user's best items per city and category (``ranked_categories_``,
    #: ``user_city_category_ranking_``);
    #: 8: ``user_decay_floor``, what the user half-life leaves of an old interaction,
    #: and ``user_city_ranking_scores_``, so a one-city list is read, not scored;
    #: 7: each user's best items per city (``ranked_cities_``, ``user_city_ranking_``);
    #: 6: segment demand columns (``segment_vocab_``, ``launch_prior_``);
    #: 5: items keep their city, new items are scored from metadata (issue 12);
    #: 4: seen items come from the interaction kind, not a weight threshold;
    #: ``weighting`` and ``user_half_life`` are parameters (3: each user's best
    #: items are ranked at fit time; 2: the catalogue is in start order; 1: by
    #: item id).
    SCHEMA_VERSION = 9

    #: Cities ranked per user at most (the busiest): the rows and their scores cost
    #: users x cities x n_ranked_per_city x 8 bytes, 28 MB for the sample's 18k users
    #: and 6 cities.
    MAX_RANKED_CITIES = 16
    #: Categories ranked per user and ranked city at most (the busiest): their rows
    #: cost users x cities x categories x n_ranked_per_city_category x 4 bytes, 40 MB
    #: for the sample's 18k users, 6 cities and 8 categories. Rows of 12 answer a
    #: list of 10 for 99% of users and segments a day after the fit (10: 73%), and
    #: 97% two days after, when a retrain failed: events that started drop out.
    #: The product of the two limits is at most 32,767: consistency_problems reads
    #: an item's row as an int16.
    MAX_RANKED_CATEGORIES = 16
    #: Users ranked together per city and category (a float32 score matrix of
    #: this many rows by the upcoming items: 5 MB for the sample).
    RANKING_BATCH = 256
    #: Power iterations of the randomized SVD. At 4 the factors still varied with
    #: the seed: on MovieLens 100k's last 10% of time one point scored 0.283 to
    #: 0.303 over four seeds; at 7, 0.290 to 0.299 (means 0.002 to 0.004 higher).
    SVD_POWER_ITERATIONS = 7

    def __init__(self, *, n_components: int = 64, n_clusters: int = 8,
                 popularity_weight: float = 0.15, half_life_days: float = 14.0,
                 user_half_life: float = np.inf, user_decay_floor: float = 0.1,
                 weighting: str = "raw", n_ranked: int = 100,
                 metadata_shrinkage: float = 3.0, metadata_min_count: int = 5,
                 metadata_alpha: float = 1.0, content_dims: int = 32,
                 content_weight: float = 0.1, new_content_weight: float = 0.175,
                 prior_per_day: bool = True, prior_half_life_days: float = 4.0,
                 count_exponent: float = 0.35, segment_dims: int = 64,
                 segment_weight: float = 6.0, launch_quantile: float = 0.93,
                 n_ranked_per_city: int = 32, n_ranked_per_city_category: int = 12,
                 random_state: int = 0):
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.popularity_weight = popularity_weight
        self.half_life_days = half_life_days
        self.user_half_life = user_half_life
        self.user_decay_floor = user_decay_floor
        self.weighting = weighting
        self.n_ranked = n_ranked
        self.metadata_shrinkage = metadata_shrinkage
        self.metadata_min_count = metadata_min_count
        self.metadata_alpha = metadata_alpha
        self.content_dims = content_dims
        self.content_weight = content_weight
        self.new_content_weight = new_content_weight
        self.prior_per_day = prior_per_day
        self.prior_half_life_days = prior_half_life_days
        self.count_exponent = count_exponent
        self.segment_dims = segment_dims
        self.segment_weight = segment_weight
        self.launch_quantile = launch_quantile
        self.n_ranked_per_city = n_ranked_per_city
        self.n_ranked_per_city_category = n_ranked_per_city_category
        self.random_state = random_state

    def fit(self, X, y=None, *, items=None) -> "EventRecommender":
        """Learn factors, popularity and taste clusters from interactions (and a catalogue)."""
        from sklearn.cluster import KMeans
        from sklearn.utils.extmath import randomized_svd

        rows, cols, weight, decay = self._index_data(X, items)
        _, value = self._strengths(X, rows, weight, decay)
        n_users, n_items = self.user_ids_.shape[0], self.item_ids_.shape[0]
        matrix = interaction_matrix(rows, cols, value, (n_users, n_items))
        counts = np.bincount(cols, minlength=n_items).astype(np.float64)
        matrix = matrix @ sparse.diags(np.where(counts > 0, counts, 1.0) ** -self.count_exponent)
        matrix = matrix.tocsr()

        k = int(max(1, min(self.n_components, min(n_users, n_items) - 1)))
        _, _, vt = randomized_svd(matrix, k, n_iter=self.SVD_POWER_ITERATIONS,
                                  random_state=self.random_state)
        item_factors = vt.T
        user_factors = np.asarray(matrix @ item_factors)
        user_factors /= np.maximum(np.linalg.norm(user_factors, axis=1, keepdims=True), 1e-12)
        self.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(user_factors, dtype=np.float32)

        timestamp = np.asarray(X.timestamp, dtype=np.float64)
        prior = np.log1p(momentum(cols, weight, timestamp, self.fitted_as_of_, n_items,
                                  self.prior_half_life_days, self.prior_per_day))
        prior /= max(prior.max(), 1e-12)
        scale = float(np.linalg.norm(item_factors, axis=1).max()) or 1.0
        self.item_bias_ = (self.popularity_weight * scale * prior).astype(np.float32)
        self._learn_metadata(items, counts, matrix)

        n_clusters = int(max(1, min(self.n_clusters, n_users)))
        kmeans = KMeans(n_clusters=n_clusters, n_init=3, random_state=self.random_state)
        self.user_clusters_ = kmeans.fit_predict(self.user_factors_).astype(np.int32)
        per_cluster = sparse.csr_matrix(
            (value, (self.user_clusters_[rows], cols)), shape=(n_clusters, n_items)).toarray()
        self.cluster_item_scores_ = (
            per_cluster / np.maximum(per_cluster.max(axis=1, keepdims=True), 1e-12)
        ).astype(np.float32)
        self.cluster_labels_ = self._label_clusters(per_cluster)
        self._rank_users()
        self.schema_version_ = self.SCHEMA_VERSION
        self.n_users_, self.n_items_ = n_users, n_items
        return self

    def _learn_metadata(self, items, counts: np.ndarray, matrix: sparse.csr_matrix) -> None:
        """Fit the metadata map, blend it into few-interaction items, add content and segments.

        See service/item_features.py; ``content_dims=0``, ``segment_dims=0`` and
        ``metadata_shrinkage=0`` give the collaborative model alone.
        """
        columns = item_features.tokens(item_features.metadata_of(
            self.item_ids_, items, self.item_categories_, self.item_cities_,
            self.item_starts_at_))
        learned = np.hstack([self.item_factors_, self.item_bias_[:, None]])
        self.feature_vocab_, self.feature_weights_ = item_features.fit(
            columns, learned, counts, min_count=self.metadata_min_count,
            alpha=self.metadata_alpha)
        predicted = item_features.predict(columns, self.feature_vocab_, self.feature_weights_)
        blended = item_features.blend(learned, predicted, counts, self.metadata_shrinkage)
        content = item_features.content(columns, self.content_dims)
        trust = item_features.confidence(counts, self.metadata_shrinkage)[:, None]
        weight = self.content_weight * trust + self.new_content_weight * (1.0 - trust)
        self.item_bias_ = np.ascontiguousarray(blended[:, -1])
        self.segment_vocab_ = item_features.segment_vocab(columns, counts, self.segment_dims)
        segments = item_features.segments(columns, self.segment_vocab_)
        # An event sells most of its tickets soon after going on sale: one with
        # few interactions is credited at least the demand of a well-selling one.
        known = self.item_bias_[counts >= self.metadata_min_count]
        self.launch_prior_ = float(np.quantile(known, self.launch_quantile)) if known.size else 0.0
        demand = item_features.launch_demand(self.item_bias_, self.launch_prior_, trust[:, 0])
        self.item_factors_ = np.ascontiguousarray(np.hstack([
            blended[:, :-1], weight * content,
            item_features.segment_demand(segments, demand, self.segment_weight)]),
            dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(np.hstack([
            self.user_factors_, item_features.profiles(matrix, content),
            item_features.profiles(matrix, segments)]), dtype=np.float32)

    def declared_arrays(self) -> dict[str, ArraySpec]:
        """Add the factors, popularity prior, taste clusters and fit-time ranking."""
        return {
            **super().declared_arrays(),
            "user_factors_": ArraySpec(("users", "factors")),
            "item_factors_": ArraySpec(("items", "factors")),
            "item_bias_": ArraySpec(("items",)),
            "cluster_labels_": ArraySpec(("clusters",), "any"),
            "user_clusters_": ArraySpec(("users",)),
            "cluster_item_scores_": ArraySpec(("clusters", "items")),
            "user_ranking_": ArraySpec(("users", "ranked")),
            "user_ranking_scores_": ArraySpec(("users", "ranked")),
            "feature_vocab_": ArraySpec(("features",), "any"),
            "feature_weights_": ArraySpec((None, None)),
            "segment_vocab_": ArraySpec(("segments",), "any"),
            "ranked_cities_": ArraySpec(("ranked_cities",), "any"),
            "user_city_ranking_": ArraySpec(("users", "ranked_cities", None)),
            "user_city_ranking_scores_": ArraySpec(("users", "ranked_cities", None)),
            "ranked_categories_": ArraySpec(("ranked_categories",), "any"),
            "user_city_category_ranking_": ArraySpec(
                ("users", "ranked_cities", "ranked_categories", None)),
        }

    def consistency_problems(self) -> list[str]:
        """Add taste clusters and ranked items that point outside their arrays."""
        problems = super().consistency_problems()
        n_items, n_clusters = self.item_ids_.shape[0], self.cluster_labels_.shape[0]
        clusters = self.user_clusters_
        if clusters.size and (clusters.min() < 0 or clusters.max() >= n_clusters):
            problems.append(f"user_clusters_ spans [{clusters.min()}, {clusters.max()}], "
                            f"outside [0, {n_clusters})")
        ranked_from, ranking = self.ranked_from_, self.user_ranking_
        if not isinstance(ranked_from, (int, np.integer)) or not 0 <= ranked_from <= n_items:
            problems.append(f"ranked_from_ is {ranked_from!r}, expected an item index in "
                            f"[0, {n_items}]")
        elif ranking.size and (ranking.max() >= n_items
                               or np.any((ranking < ranked_from) & (ranking != -1))):
            problems.append(f"user_ranking_ spans [{ranking.min()}, {ranking.max()}], outside "
                            f"[{ranked_from}, {n_items}) and padding -1")
        else:
            problems += self._segment_ranking_problems()
        return problems

    def _segment_ranking_problems(self) -> list[str]:
        """Return how the per-city and per-city-and-category rows break their contract.

        Each row holds upcoming items of its own city (and category), or padding.
        """
        if self.user_city_ranking_scores_.shape != self.user_city_ranking_.shape:
            return [f"user_city_ranking_scores_ has shape {self.user_city_ranking_scores_.shape}, "
                    f"user_city_ranking_ {self.user_city_ranking_.shape}"]
        cities, categories = self.ranked_cities_, self.ranked_categories_
        city = ranked_code(cities, self.item_cities_)
        pair = pair_code(city, ranked_code(categories, self.item_categories_), categories.size)
        for name, segment, label in (
                ("user_city_ranking_", city, lambda at: repr(str(cities[at]))),
                ("user_city_category_ranking_", pair, lambda at: repr(
                    (str(cities[at // categories.size]), str(categories[at % categories.size]))))):
            problem = self._row_problem(name, segment, label)
            if problem:
                return [problem]
        return []

    def _row_problem(self, name: str, segment: np.ndarray, label) -> str | None:
        """Describe how the rows of ``name`` hold items outside their segment, or None."""
        ranking = getattr(self, name)
        if not ranking.size:
            return None
        n_items = self.item_ids_.shape[0]
        if ranking.max() >= n_items or np.any((ranking < self.ranked_from_) & (ranking != -1)):
            return (f"{name} spans [{ranking.min()}, {ranking.max()}], outside "
                    f"[{self.ranked_from_}, {n_items}) and padding -1")
        rows = ranking.reshape(ranking.shape[0], -1, ranking.shape[-1])
        row_of = np.append(segment, -1).astype(np.int16)  # small; its last entry reads padding
        wrong = ((row_of[rows] != np.arange(rows.shape[1], dtype=np.int16)[None, :, None])
                 & (rows >= 0))
        if not wrong.any():
            return None
        user, at, position = np.argwhere(wrong)[0]
        return (f"{name} holds {int(wrong.sum())} items of another segment, e.g. "
                f"{self.item_ids_[rows[user, at, position]]!r} in {label(at)}'s row of user "
                f"{self.user_ids_[user]!r}")

    def _rank_users(self) -> None:
        """Rank each user's n_ranked best unseen items among those upcoming at fit time.

        The same scores a request falls back to, computed once per user here,
        so a request reads a row instead of scoring the catalogue. Rows are
        padded with item -1 and score 0 when fewer items remain.
        ``n_ranked=0`` ranks nothing (every request scores): the
        hyperparameter search fits many models and asks few users each. A
        batch of users' scores, seen items masked, gives each user's row and
        each ranked city's (``n_ranked_per_city``) and city and category's
        (``n_ranked_per_city_category``), selected as ``top_indices`` does:
        for the sample's 18k users about 9 s of one core, 1 s less than one
        ``top_indices`` per user took.
        """
        self.ranked_from_ = first = self._first_upcoming(self.fitted_as_of_)
        width = int(max(0, self.n_ranked))
        per_city = int(max(0, self.n_ranked_per_city)) if width else 0
        per_pair = int(max(0, self.n_ranked_per_city_category)) if per_city else 0
        n_users = self.user_ids_.shape[0]
        self.ranked_cities_ = busiest(self.item_cities_[first:],
                                      self.MAX_RANKED_CITIES if per_city else 0)
        self.ranked_categories_ = busiest(self.item_categories_[first:],
                                          self.MAX_RANKED_CATEGORIES if per_pair else 0)
        n_cities, n_categories = self.ranked_cities_.size, self.ranked_categories_.size
        city = ranked_code(self.ranked_cities_, self.item_cities_[first:])
        by_city = TopPerSegment(city, n_cities, per_city)
        by_pair = TopPerSegment(pair_code(city, ranked_code(
            self.ranked_categories_, self.item_categories_[first:]), n_categories),
            n_cities * n_categories, per_pair)
        self.user_ranking_ = np.full((n_users, width), -1, dtype=np.int32)
        self.user_ranking_scores_ = np.zeros(self.user_ranking_.shape, dtype=np.float32)
        self.user_city_ranking_ = np.full((n_users, n_cities, per_city), -1, dtype=np.int32)
        self.user_city_ranking_scores_ = np.zeros(self.user_city_ranking_.shape, dtype=np.float32)
        self.user_city_category_ranking_ = np.full(
            (n_users, n_cities, n_categories, per_pair), -1, dtype=np.int32)
        upcoming = self.item_ids_.shape[0] - first
        by_user = TopPerSegment(np.zeros(upcoming, dtype=np.int64), 1, width)
        for start in range(0, n_users if width else 0, self.RANKING_BATCH):
            rows = np.arange(start, min(start + self.RANKING_BATCH, n_users))
            scores = np.empty((rows.size, upcoming), dtype=np.float32)
            for at, row in enumerate(rows.tolist()):
                scores[at] = self._user_scores(row, first)
            self._mask_seen(scores, rows, first)
            top, top_scores = by_user.top(scores)
            self.user_ranking_[rows] = np.where(top[:, 0] >= 0, top[:, 0] + first, -1)
            self.user_ranking_scores_[rows] = top_scores[:, 0]
            if not per_city:
                continue
            top, top_scores = by_city.top(scores)
            self.user_city_ranking_[rows] = np.where(top >= 0, top + first, -1)
            self.user_city_ranking_scores_[rows] = top_scores
            top, _ = by_pair.top(scores)
            self.user_city_category_ranking_[rows] = np.where(top >= 0, top + first, -1).reshape(
                rows.size, n_cities, n_categories, per_pair)

    def _mask_seen(self, scores: np.ndarray, rows: np.ndarray, first: int) -> None:
        """Score -inf what each of the consecutive ``rows`` saw, among items ``first:``."""
        bounds = self.seen_indptr_[rows[0]:rows[-1] + 2]
        seen = self.seen_indices_[bounds[0]:bounds[-1]]
        owner = np.repeat(np.arange(rows.size), np.diff(bounds))
        upcoming = seen >= first
        scores[owner[upcoming], seen[upcoming] - first] = -np.inf

    def score_items(self, row: int, items: np.ndarray) -> np.ndarray:
        """Return the scores (float32) the user in ``row`` gives ``items``, as scoring does."""
        scores = self.item_factors_[items] @ self.user_factors_[row]
        scores += self.item_bias_[items]
        return scores

    def _known_scores(self, rows: np.ndarray) -> np.ndarray:
        """Score every item for the users in ``rows`` from the factors, as a request does."""
        return self.user_factors_[rows] @ self.item_factors_.T + self.item_bias_

    def _user_scores(self, row: int, first: int) -> np.ndarray:
        """Score items ``first:`` for the user in ``row`` (a fresh array)."""
        scores = self.item_factors_[first:] @ self.user_factors_[row]
        scores += self.item_bias_[first:]
        return scores

    def _from_ranking(self, row: int, first: int, n: int) -> Recommendation | None:
        """Read the top n from the user's fit-time ranking, or None when it cannot answer exactly.

        It cannot answer for an instant before the fit: items it skipped as
        started are upcoming then.
        """
        if first < self.ranked_from_ or not self.user_ranking_.shape[1]:
            return None
        return self.read_ranking(row, self.user_ranking_[row], self.user_ranking_scores_[row],
                                 first, self.item_ids_.shape[0], n)

    def read_ranking(self, row: int, ranking: np.ndarray, scores: np.ndarray | None, lo: int,
                     hi: int, n: int) -> Recommendation | None:
        """Return the first n items of a fit-time ranking row in ``[lo, hi)``, or None.

        ``ranking`` is a row of user ``row``'s ``user_ranking_``,
        ``user_city_ranking_`` or ``user_city_category_ranking_`` (item indices
        best first, padded with -1); ``scores`` its stored scores, or None to
        score the items read. Exact because every item left out of a row
        scores below every item in it; so None only when fewer than n of a
        full row are in the range.
        """
        inside = ranking >= lo  # lo >= 0: padding never passes
        if hi < self.item_ids_.shape[0]:
            inside &= ranking < hi
        kept = inside.nonzero()[0][:n]
        if kept.size < n and ranking[-1] >= 0:
            return None
        items = ranking[kept].astype(np.intp)
        values = self.score_items(row, items) if scores is None else scores[kept]
        return Recommendation(items, self.item_ids_[items], values.astype(np.float64),
                              "personalised")

    def _label_clusters(self, per_cluster: np.ndarray) -> np.ndarray:
        """Name each cluster after its dominant category, de-duplicated ("rock", "rock-2")."""
        categories, by_category = category_totals(per_cluster, self.item_categories_)
        labels, used = [], {}
        for c in range(per_cluster.shape[0]):
            name = str(categories[int(np.argmax(by_category[c]))])
            name = f"cluster-{c + 1}" if name == "unknown" else name
            used[name] = used.get(name, 0) + 1
            labels.append(name if used[name] == 1 else f"{name}-{used[name]}")
        return np.array(labels)

    def recommend(self, user_id: str, n: int = 10, as_of: float | None = None, *,
                  taste: str | None = None, use_ranking: bool = True) -> Recommendation:
        """Return up to n unique upcoming items the user has not seen, best first.

        A known user's list is read from the ranking made at fit time when it
        can answer exactly; ``use_ranking=False`` scores the whole upcoming
        catalogue instead (the sanity gate compares the two).
        """
        check_is_fitted(self)
        row = self._user_row(user_id)
        first = self._first_upcoming(as_of)
        if row >= 0:
            ranked = self._from_ranking(row, first, n) if use_ranking else None
            if ranked is not None:
                return ranked
            return self._finish(self._user_scores(row, first), first, row, n, "personalised")
        if taste is not None:
            match = np.flatnonzero(np.char.lower(self.cluster_labels_) == taste.strip().lower())
            if match.size:
                return self._finish(np.array(self.cluster_item_scores_[match[0], first:]), first,
                                    -1, n, "cold_start_taste")
        return self._finish(np.array(self.item_popularity_[first:]), first, -1, n, "cold_start")
