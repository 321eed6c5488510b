"""Recommend upcoming events by item-to-item similarity: a second servable.

A user's score for an event is the similarity-weighted sum over the events
they interacted with, where two events are similar when the same people
interact with both (cosine over recency-decayed interactions, each event's
``n_neighbors`` most similar kept). ``shrinkage`` is added to the cosine's
denominator, so a pair seen together by one or two people does not count
as much as one seen by hundreds: on Ciao (a ratings file whose median user
rated one item) the unshrunk cosine scored NDCG@10 0.014 each user's last
5, with a shrinkage of 500 and 200 neighbours 0.045, above truncated SVD's
0.039 (docs/training.md). It needs no factorisation, explains itself
("because you went to X"), and is registered in
:data:`service.servable.SERVABLES` as ``item_knn``.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from service.catalogued import Catalogued
from service.servable import ArraySpec, Recommendation


class ItemKNNRecommender(Catalogued, BaseEstimator):
    """Item-based nearest neighbours on recency-decayed implicit feedback."""

    SCHEMA_VERSION = 1

    def __init__(self, *, n_neighbors: int = 50, half_life_days: float = 14.0,
                 popularity_weight: float = 0.05, shrinkage: float = 100.0,
                 random_state: int = 0):
        self.n_neighbors = n_neighbors
        self.shrinkage = shrinkage
        self.half_life_days = half_life_days
        self.popularity_weight = popularity_weight
        self.random_state = random_state  # unused: the fit is deterministic

    def fit(self, X, y=None, *, items=None) -> ItemKNNRecommender:
        """Learn each item's nearest neighbours and each user's profile of items."""
        rows, cols, weight, decay = self._index_data(X, items)
        value = weight * decay
        n_users, n_items = self.user_ids_.shape[0], self.item_ids_.shape[0]
        profile = sparse.csr_matrix((value, (rows, cols)), shape=(n_users, n_items))
        profile.sum_duplicates()
        profile.data = np.log1p(profile.data)
        self.profile_indptr_ = profile.indptr.astype(np.int64)
        self.profile_indices_ = profile.indices.astype(np.int32)
        self.profile_weights_ = profile.data.astype(np.float32)

        norms = np.sqrt(np.asarray(profile.power(2).sum(axis=0)).ravel())
        # Only pairs that someone saw together have a similarity: the sparse
        # co-occurrence matrix, not dense blocks (Ciao's 16k items: 0.5 s, not 3).
        similar = (profile.T @ profile).tocsr()
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

        prior = np.log1p(self.item_popularity_.astype(np.float64))
        self.item_bias_ = (self.popularity_weight * prior / max(prior.max(), 1e-12)).astype(
            np.float32)
        self.schema_version_ = self.SCHEMA_VERSION
        return self

    def declared_arrays(self) -> dict[str, ArraySpec]:
        """Add the users' profiles, the items' neighbours and the popularity prior."""
        return {
            **super().declared_arrays(),
            "profile_indptr_": ArraySpec((None,)),
            "profile_indices_": ArraySpec(("profile",)),
            "profile_weights_": ArraySpec(("profile",)),
            "neighbor_indices_": ArraySpec(("items", "neighbors")),
            "neighbor_weights_": ArraySpec(("items", "neighbors")),
            "item_bias_": ArraySpec(("items",)),
        }

    def consistency_problems(self) -> list[str]:
        """Add profiles and neighbours that point outside the users and items."""
        problems = super().consistency_problems()
        n_users, n_items = self.user_ids_.shape[0], self.item_ids_.shape[0]
        indptr = self.profile_indptr_
        if indptr.shape != (n_users + 1,) or indptr[-1] != self.profile_indices_.shape[0]:
            problems.append(f"profile_indptr_ is not an index pointer for {n_users} users")
        for name in ("profile_indices_", "neighbor_indices_"):
            values = getattr(self, name)
            if values.size and (values.min() < 0 or values.max() >= n_items):
                problems.append(f"{name} spans [{values.min()}, {values.max()}], "
                                f"outside [0, {n_items})")
        return problems

    def recommend(self, user_id: str, n: int = 10, as_of: float | None = None, *,
                  taste: str | None = None, use_ranking: bool = True) -> Recommendation:
        """Return up to n upcoming items like those the user interacted with, best first."""
        check_is_fitted(self)
        row = self._user_row(str(user_id))
        first = self._first_upcoming(as_of)
        if row < 0:
            return self._finish(np.array(self.item_popularity_[first:]), first, -1, n,
                                "cold_start")
        start, end = self.profile_indptr_[row], self.profile_indptr_[row + 1]
        neighbors = self.neighbor_indices_[self.profile_indices_[start:end]].ravel()
        weights = (self.neighbor_weights_[self.profile_indices_[start:end]]
                   * self.profile_weights_[start:end, None]).ravel()
        upcoming = neighbors >= first
        scores = np.bincount(neighbors[upcoming] - first, weights=weights[upcoming],
                             minlength=self.item_ids_.shape[0] - first)
        scores += self.item_bias_[first:]
        return self._finish(scores, first, row, n, "personalised")
