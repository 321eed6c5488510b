"""Recommend by item-to-item weights: the similarity (``item_knn``) and EASE servables share this.

A user's score for an item is the weighted sum, over the items in the user's
profile, of each one's weight towards it, plus a popularity prior. The
profile is the user's recency-decayed interactions (and, with a finite
``user_half_life``, their own later interactions count more: on ratings a
user's next items are like their last ones). What differs is how the item
weights are learned: :class:`ItemKNNRecommender` keeps each item's most
similar items by a shrunk cosine, ``service.ease.EASERecommender`` solves a
ridge regression of every item on the others.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from service.catalogued import Catalogued, interaction_matrix
from service.servable import ArraySpec, Recommendation


class ItemToItem(Catalogued, BaseEstimator):
    """Users' profiles of items, a popularity prior, and the list they make.

    A subclass learns its item weights in ``fit`` (after :meth:`_fit_profiles`)
    and sums them over a profile in :meth:`_profile_scores`.
    """

    def _fit_profiles(self, X, items) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
        """Index the data and store each user's profile (with the user's own decay).

        Return the users x items matrix without the user's decay, which the
        item weights are learned from (a user's older interactions still say
        which items go together), and the rows' item columns and weights.
        """
        rows, cols, weight, decay = self._index_data(X, items)
        value, recent = self._strengths(X, rows, weight, decay)
        shape = (self.user_ids_.shape[0], self.item_ids_.shape[0])
        profile = interaction_matrix(rows, cols, recent, shape)
        self.profile_indptr_ = profile.indptr.astype(np.int64)
        self.profile_indices_ = profile.indices.astype(np.int32)
        self.profile_weights_ = profile.data.astype(np.float32)
        matrix = profile if recent is value else interaction_matrix(rows, cols, value, shape)
        return matrix, cols, weight

    def _set_prior(self, prior: np.ndarray, scale: float = 1.0) -> None:
        """Add ``popularity_weight`` times ``prior``, scaled to at most ``scale``, to scores."""
        self.item_bias_ = (self.popularity_weight * scale * prior
                           / max(prior.max(), 1e-12)).astype(np.float32)

    def _typical_best_score(self, users: int = 500) -> float:
        """Return the mean best score of up to ``users`` users (evenly spaced), prior aside.

        The scale of a prior that means the same against any item weights.
        """
        rows = np.unique(np.linspace(0, self.user_ids_.shape[0] - 1, users).astype(np.int64))
        return float(np.mean([self._row_scores(row, 0).max(initial=0.0) for row in rows])) or 1.0

    def _row_scores(self, row: int, first: int) -> np.ndarray:
        """Return the scores of items ``first:`` from the profile of the user in ``row``."""
        start, end = self.profile_indptr_[row], self.profile_indptr_[row + 1]
        return self._profile_scores(self.profile_indices_[start:end],
                                    self.profile_weights_[start:end], first)

    def _known_scores(self, rows: np.ndarray) -> np.ndarray:
        """Score every item for the users in ``rows`` from their profiles, as a request does."""
        return np.stack([self._row_scores(row, 0) for row in rows.tolist()]) + self.item_bias_

    def _profile_scores(self, items: np.ndarray, weights: np.ndarray,
                        first: int) -> np.ndarray:
        """Return the scores of items ``first:`` from a profile (item indices, weights)."""
        raise NotImplementedError

    def declared_arrays(self) -> dict[str, ArraySpec]:
        """Add the users' profiles and the popularity prior."""
        return {
            **super().declared_arrays(),
            "profile_indptr_": ArraySpec((None,)),
            "profile_indices_": ArraySpec(("profile",)),
            "profile_weights_": ArraySpec(("profile",)),
            "item_bias_": ArraySpec(("items",)),
        }

    def consistency_problems(self) -> list[str]:
        """Add profiles that point outside the users and items."""
        problems = super().consistency_problems()
        n_users, n_items = self.user_ids_.shape[0], self.item_ids_.shape[0]
        indptr = self.profile_indptr_
        if indptr.shape != (n_users + 1,) or indptr[-1] != self.profile_indices_.shape[0]:
            problems.append(f"profile_indptr_ is not an index pointer for {n_users} users")
        return problems + index_problems(self, "profile_indices_", n_items)

    def recommend(self, user_id: str, n: int = 10, as_of: float | None = None, *,
                  taste: str | None = None, use_ranking: bool = True) -> Recommendation:
        """Return up to n upcoming items like those the user interacted with, best first."""
        check_is_fitted(self)
        row = self._user_row(str(user_id))
        first = self._first_upcoming(as_of)
        if row < 0:
            return self._finish(np.array(self.item_popularity_[first:]), first, -1, n,
                                "cold_start")
        scores = self._row_scores(row, first)
        scores += self.item_bias_[first:]
        return self._finish(scores, first, row, n, "personalised")


def index_problems(model, name: str, n_items: int) -> list[str]:
    """Describe item indices in ``model.<name>`` outside ``[0, n_items)``, or none."""
    values = getattr(model, name)
    if values.size and (values.min() < 0 or values.max() >= n_items):
        return [f"{name} spans [{values.min()}, {values.max()}], outside [0, {n_items})"]
    return []


class ItemKNNRecommender(ItemToItem):
    """Item-based nearest neighbours: each item's most similar items by a shrunk cosine.

    Two items are similar when the same people interact with both (cosine
    over the recency-decayed interactions, each item's ``n_neighbors`` most
    similar kept). ``shrinkage`` is added to the cosine's denominator, so a
    pair seen together by one or two people does not count as much as one
    seen by hundreds: on Ciao (a ratings file whose median user rated one
    item) the unshrunk cosine scored NDCG@10 0.014 each user's last 5, with
    a shrinkage of 500 and 200 neighbours 0.045, above truncated SVD's 0.039
    (docs/training.md). It needs no factorisation and explains itself
    ("because you went to X").
    """

    #: 2: the weighting and the user's own decay of the profile.
    SCHEMA_VERSION = 2

    def __init__(self, *, n_neighbors: int = 50, half_life_days: float = 14.0,
                 popularity_weight: float = 0.05, shrinkage: float = 100.0,
                 weighting: str = "raw", user_half_life: float = np.inf,
                 user_decay_floor: float = 0.1, random_state: int = 0):
        self.n_neighbors = n_neighbors
        self.shrinkage = shrinkage
        self.half_life_days = half_life_days
        self.popularity_weight = popularity_weight
        self.weighting = weighting
        self.user_half_life = user_half_life
        self.user_decay_floor = user_decay_floor
        self.random_state = random_state  # unused: the fit is deterministic

    def fit(self, X, y=None, *, items=None) -> ItemKNNRecommender:
        """Learn each item's nearest neighbours and each user's profile of items."""
        matrix, _, _ = self._fit_profiles(X, items)
        n_items = self.item_ids_.shape[0]
        norms = np.sqrt(np.asarray(matrix.power(2).sum(axis=0)).ravel())
        # Only pairs that someone saw together have a similarity: the sparse
        # co-occurrence matrix, not dense blocks (Ciao's 16k items: 0.5 s, not 3).
        similar = (matrix.T @ matrix).tocsr()
        similar.setdiag(0.0)
        similar.eliminate_zeros()
        of_pair = np.repeat(np.arange(n_items), np.diff(similar.indptr))  # each entry's row
        similar.data /= np.maximum(norms[of_pair] * norms[similar.indices] + self.shrinkage,
                                   1e-12)
        k = int(max(1, min(self.n_neighbors, n_items - 1)))
        # Items with fewer than k neighbours are padded with item 0 at weight 0.
        indices = np.zeros((n_items, k), dtype=np.int32)
        weights = np.zeros((n_items, k), dtype=np.float32)
        for item in range(n_items):
            lo, hi = similar.indptr[item], similar.indptr[item + 1]
            values = similar.data[lo:hi]
            top = np.argpartition(-values, k - 1)[:k] if hi - lo > k else np.arange(hi - lo)
            indices[item, :top.size] = similar.indices[lo:hi][top]
            weights[item, :top.size] = values[top]
        self.neighbor_indices_, self.neighbor_weights_ = indices, weights
        self._set_prior(np.log1p(self.item_popularity_.astype(np.float64)))
        self.schema_version_ = self.SCHEMA_VERSION
        return self

    def declared_arrays(self) -> dict[str, ArraySpec]:
        """Add the items' neighbours."""
        return {
            **super().declared_arrays(),
            "neighbor_indices_": ArraySpec(("items", "neighbors")),
            "neighbor_weights_": ArraySpec(("items", "neighbors")),
        }

    def consistency_problems(self) -> list[str]:
        """Add neighbours that point outside the items."""
        return super().consistency_problems() + index_problems(
            self, "neighbor_indices_", self.item_ids_.shape[0])

    def _profile_scores(self, items: np.ndarray, weights: np.ndarray,
                        first: int) -> np.ndarray:
        """Sum each profile item's neighbours' similarities, times the item's weight."""
        neighbors = self.neighbor_indices_[items].ravel()
        weights = (self.neighbor_weights_[items] * weights[:, None]).ravel()
        upcoming = neighbors >= first
        return np.bincount(neighbors[upcoming] - first, weights=weights[upcoming],
                           minlength=self.item_ids_.shape[0] - first)
