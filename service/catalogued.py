"""The catalogue and purchase facts every recommender here learns, and how a list is cut.

``Catalogued`` indexes users and items (the catalogue in start order, so the
items upcoming at any instant are a suffix), recency-weighted popularity and
each user's seen items, and turns a score array into a ``Recommendation``.
Every learned attribute is a plain numpy array, so ``joblib.load(path,
mmap_mode="r")`` memory-maps them and gunicorn workers share one copy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.utils.validation import check_is_fitted

from service.servable import ArraySpec, Recommendation
from service.training.data import WEIGHTINGS

DAY = 86_400.0


def interaction_matrix(rows: np.ndarray, cols: np.ndarray, value: np.ndarray,
                       shape: tuple[int, int]) -> sparse.csr_matrix:
    """Return the users x items matrix of summed values, repeats damped by ``log1p``."""
    matrix = sparse.csr_matrix((value, (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)
    return matrix


def recency_weight(timestamp: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    """Return the recency weight of each timestamp: 1 at ``now``, halving every half-life."""
    age_days = np.maximum(now - timestamp, 0.0) / DAY
    return np.exp2(-age_days / half_life_days)


def momentum(items: np.ndarray, weight: np.ndarray, timestamp: np.ndarray, now: float,
             n_items: int, half_life_days: float, per_day: bool = True) -> np.ndarray:
    """Return each item's recent interaction weight per day, its momentum.

    Weights halve every ``half_life_days`` and are divided by the exposure
    decayed alike since the item's first interaction (at least a day): an
    event listed yesterday that sold well is hot, not smaller than old ones
    for having had less time, and an old event whose interest grows as its
    start nears rises too. ``per_day=False``: the decayed total.
    """
    recent = np.bincount(items, weights=weight * recency_weight(timestamp, now, half_life_days),
                         minlength=n_items)
    if not per_day:
        return recent
    first_seen = np.full(n_items, now)
    np.minimum.at(first_seen, items, timestamp)
    age = np.maximum((now - first_seen) / DAY, 1.0)
    if not np.isfinite(half_life_days):
        return recent / age
    return recent / (half_life_days / np.log(2.0) * -np.expm1(-np.log(2.0) * age / half_life_days))


def id_text(user_id) -> str:
    """Return an id as text: ids are strings, an int reads as its decimal digits."""
    if isinstance(user_id, str):
        return str(user_id)
    if isinstance(user_id, (int, np.integer)) and not isinstance(user_id, bool):
        return str(int(user_id))
    raise TypeError(f"user_id must be a string (or an int, read as its digits), "
                    f"not {type(user_id).__name__} {user_id!r}")


def later_rows(users: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Return how many later rows the same user has, for each row (0 for their latest)."""
    order = np.lexsort((timestamp, users))
    ends = np.cumsum(np.bincount(users))
    later = np.empty(users.size, dtype=np.float64)
    later[order] = ends[users[order]] - 1 - np.arange(users.size)
    return later


#: How top_indices picks, by what is cheapest (measured, float32): up to
#: SORT_UP_TO scores it sorts them all (10 of 165 take 3.6 µs, argpartition then
#: a sort of the 10 6.2); for at most ONE_AT_A_TIME items, and no more than
#: 1/64 of the scores, it takes the best one at a time, as an argmax is SIMD
#: (0.2 µs over 1,000) where argpartition costs 8 (10 of 5,000, a cold start's
#: list: 9 µs instead of 44); otherwise argpartition.
SORT_UP_TO = 512
ONE_AT_A_TIME = 32


def _one_at_a_time(scores: np.ndarray, k: int) -> np.ndarray | None:
    """Return the indices of the k best scores by repeated argmax, or None at a NaN."""
    work, chosen = np.array(scores), []
    for _ in range(k):
        best = int(work.argmax())  # the first of equal maxima: the lowest index
        value = work[best]
        if not value > -np.inf:
            # argmax stops at a NaN, which is no score: the caller sorts instead.
            return None if value != value else np.array(chosen, dtype=np.intp)
        chosen.append(best)
        work[best] = -np.inf
    return np.array(chosen, dtype=np.intp)


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Return the indices of the n best scores, best first; -inf and NaN are never taken.

    Ties are broken by index, lowest first, so lists are deterministic.
    """
    size = scores.shape[0]
    k = min(max(int(n), 0), size)
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if size <= SORT_UP_TO:  # a stable sort keeps equal scores in index order; NaN sorts last
        top = np.negative(scores).argsort(kind="stable")[:k]
        return top[scores[top] > -np.inf]
    if k <= ONE_AT_A_TIME and k * 64 <= size:
        top = _one_at_a_time(scores, k)
        if top is not None:
            return top
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    # Equal scores at the cut: argpartition takes any of them, the lowest indices are wanted.
    cut = scores[np.argpartition(scores, size - k)[size - k:]].min()
    above = (scores > cut).nonzero()[0]
    top = np.concatenate([above, (scores == cut).nonzero()[0][:k - above.size]])
    top = top[scores[top] > -np.inf]
    return top[np.lexsort((top, -scores[top]))]


class Catalogued:
    """Shared item facts and ranking for the model and the popularity baseline."""

    def _index_data(self, X, items) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Set the user and item vocabularies, catalogue facts and seen items.

        Return (rows, cols, weight, decay) of the interactions. What a user has
        seen (``X.seen``: bought, rated; not a view) is never recommended back.
        """
        if len(X) == 0:
            raise ValueError("cannot fit on zero interactions")
        used_users = np.unique(X.user_codes)
        user_ids = np.asarray(X.user_vocab)[used_users].astype(str)
        order = np.argsort(user_ids, kind="stable")
        self.user_ids_ = user_ids[order]
        user_row = np.full(len(X.user_vocab), -1, dtype=np.int64)
        user_row[used_users[order]] = np.arange(order.size)

        used_items = np.unique(X.item_codes)
        seen_ids = np.asarray(X.item_vocab)[used_items].astype(str)
        catalogue_ids = (np.asarray(items.item_id).astype(str) if items is not None
                         else np.empty(0, dtype=str))
        self.item_ids_ = np.union1d(seen_ids, catalogue_ids)
        item_col = np.full(len(X.item_vocab), -1, dtype=np.int64)
        item_col[used_items] = np.searchsorted(self.item_ids_, seen_ids)

        n_items = self.item_ids_.shape[0]
        self.item_titles_ = self.item_ids_.copy()
        self.item_categories_ = np.full(n_items, "unknown")
        self.item_starts_at_ = np.full(n_items, np.inf, dtype=np.float64)
        self.item_cities_ = np.full(n_items, "")
        if items is not None and len(items):
            at = np.searchsorted(self.item_ids_, catalogue_ids)
            self.item_titles_ = self.item_titles_.astype(
                np.result_type(self.item_titles_, np.asarray(items.title).astype(str)))
            self.item_titles_[at] = np.asarray(items.title).astype(str)
            self.item_categories_ = self.item_categories_.astype(
                np.result_type(self.item_categories_, np.asarray(items.category).astype(str)))
            self.item_categories_[at] = np.asarray(items.category).astype(str)
            self.item_starts_at_[at] = np.asarray(items.starts_at, dtype=np.float64)
            if items.city is not None:  # kept for the city filter (service/filters.py)
                self.item_cities_ = self.item_cities_.astype(np.asarray(items.city).dtype)
                self.item_cities_[at] = np.asarray(items.city).astype(str)
        # Order the catalogue by start time (then id): the items still upcoming at
        # any instant are then a suffix, and a request scores only that suffix.
        by_start = np.lexsort((self.item_ids_, self.item_starts_at_))
        position = np.empty_like(by_start)
        position[by_start] = np.arange(n_items)
        item_col[used_items] = position[item_col[used_items]]
        for name in ("item_ids_", "item_titles_", "item_categories_", "item_starts_at_",
                     "item_cities_"):
            setattr(self, name, getattr(self, name)[by_start])

        self.fitted_as_of_ = float(np.max(X.timestamp))
        rows = user_row[X.user_codes]
        cols = item_col[X.item_codes]
        decay = recency_weight(np.asarray(X.timestamp, dtype=np.float64), self.fitted_as_of_,
                               self.half_life_days)
        weight = np.asarray(X.weight, dtype=np.float64)
        self.item_popularity_ = np.bincount(cols, weights=weight * decay,
                                            minlength=n_items).astype(np.float32)
        had = np.asarray(X.seen, dtype=bool)
        seen = sparse.csr_matrix((np.ones(int(had.sum())), (rows[had], cols[had])),
                                 shape=(self.user_ids_.shape[0], n_items))
        seen.sum_duplicates()
        self.seen_indptr_ = seen.indptr.astype(np.int64)
        self.seen_indices_ = seen.indices.astype(np.int32)
        return rows, cols, weight, decay

    def _strengths(self, X, rows: np.ndarray, weight: np.ndarray,
                   decay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return each row's strength, and the same with the user's own decay.

        For models with ``weighting`` (a key of WEIGHTINGS), ``user_half_life``
        and ``user_decay_floor``: the strength is the weighting of the row's
        weight times its recency ``decay``; with a finite user half-life it is
        also halved for every that many later rows of the same user, down to
        the floor's share of itself (what a user did last counts most).
        """
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {self.weighting!r} is not one of "
                             f"{', '.join(WEIGHTINGS)}")
        if not 0.0 <= self.user_decay_floor <= 1.0:
            raise ValueError(f"user_decay_floor {self.user_decay_floor!r} is not in [0, 1]")
        value = WEIGHTINGS[self.weighting](weight) * decay
        if not np.isfinite(self.user_half_life):
            return value, value
        floor = self.user_decay_floor
        return value, value * (floor + (1.0 - floor) * np.exp2(
            -later_rows(rows, X.timestamp) / self.user_half_life))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "item_starts_at_")

    def declared_arrays(self) -> dict[str, ArraySpec]:
        """Name the catalogue and purchase arrays every recommender here learns."""
        return {
            "user_ids_": ArraySpec(("users",), "any"),
            "item_ids_": ArraySpec(("items",), "any"),
            "item_titles_": ArraySpec(("items",), "any"),
            "item_categories_": ArraySpec(("items",), "any"),
            "item_starts_at_": ArraySpec(("items",), "no_nan"),  # +inf: no start date
            "item_cities_": ArraySpec(("items",), "any"),
            "item_popularity_": ArraySpec(("items",)),
            "seen_indptr_": ArraySpec((None,)),
            "seen_indices_": ArraySpec((None,)),
        }

    def consistency_problems(self) -> list[str]:
        """Describe a purchase index that is not a valid CSR matrix over users and items."""
        indptr, indices = self.seen_indptr_, self.seen_indices_
        n_users, n_items = self.user_ids_.shape[0], self.item_ids_.shape[0]
        problems = []
        if indptr.shape != (n_users + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
                or indptr[-1] != len(indices):
            problems.append(f"seen_indptr_ is not a valid CSR index pointer for {n_users} users "
                            f"and {len(indices)} seen_indices_")
        if indices.size and (indices.min() < 0 or indices.max() >= n_items):
            problems.append(f"seen_indices_ spans [{indices.min()}, {indices.max()}], "
                            f"outside [0, {n_items})")
        return problems

    def known_user(self, user_id: str) -> bool:
        """Return True when the user had interactions in the training data."""
        check_is_fitted(self)
        return self._user_row(user_id) >= 0

    def _user_row(self, user_id: str) -> int:
        if type(user_id) is not str:
            user_id = id_text(user_id)
        if len(user_id) > self.user_ids_.dtype.itemsize // 4:
            # Longer than every known id. Searching would first copy all the
            # ids to the wider string type: 30 µs and 0.8 MB per request.
            return -1
        # The method, not np.searchsorted: its dispatch costs 0.8 µs a call.
        row = int(self.user_ids_.searchsorted(user_id))
        if row < self.user_ids_.shape[0] and self.user_ids_[row] == user_id:
            return row
        return -1

    def _first_upcoming(self, as_of: float | None) -> int:
        """Return the index of the first item that starts after ``as_of`` (items are by start)."""
        now = time.time() if as_of is None else as_of
        return int(self.item_starts_at_.searchsorted(now, side="right"))

    def _finish(self, scores: np.ndarray, first: int, row: int, n: int,
                strategy: str) -> Recommendation:
        """Take the top n of ``scores`` (a fresh array for items ``first:``), minus seen items."""
        if row >= 0:
            seen = self.seen_indices_[self.seen_indptr_[row]:self.seen_indptr_[row + 1]]
            scores[seen[seen >= first] - first] = -np.inf
        top = top_indices(scores, n)
        items = top + first
        return Recommendation(items, self.item_ids_[items], scores[top].astype(np.float64),
                              strategy)

    def score_catalogue(self, user_ids: Sequence[str]) -> np.ndarray:
        """Return each user's score of every item (users x items), as recommend ranks them.

        The scores come before seen and past items are set aside; an unknown
        user's row is the cold-start popularity. The gate's probe measure
        reads them (service/training/probes.py): on a ratings file every item
        a user interacted with is seen, so no list would hold one.
        """
        check_is_fitted(self)
        rows = np.array([self._user_row(user_id) for user_id in user_ids], dtype=np.int64)
        scores = np.tile(np.asarray(self.item_popularity_, dtype=np.float32), (rows.size, 1))
        known = rows >= 0
        if known.any():
            scores[known] = self._known_scores(rows[known])
        return scores

    def _known_scores(self, rows: np.ndarray) -> np.ndarray:
        """Return every item's score for the known users in ``rows``: here, its popularity."""
        return np.tile(np.asarray(self.item_popularity_, dtype=np.float32), (rows.size, 1))

    def recommend_batch(self, user_ids: Sequence[str], n: int = 10,
                        as_of: float | None = None) -> list[Recommendation]:
        """Return ``recommend(user_id, n, as_of)`` for each user, all as of the same instant."""
        as_of = time.time() if as_of is None else as_of
        return [self.recommend(user_id, n, as_of) for user_id in user_ids]
