"""Recommend by EASE: every item's weights towards the others, from one ridge regression.

EASE (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019) learns the
item-to-item matrix B that best rebuilds each user's row from the user's
other items, ``min ||X - XB||² + l2 ||B||²`` with a zero diagonal, in
closed form: ``P = (XᵀX + l2 I)⁻¹``, ``B = -P / diag(P)``. Unlike a cosine
it weighs a pair against everything else the two items' users did, and a
weight can be negative. With the user's own decay of the profile it is the
best model of each user's next items on every ratings data set measured
(docs/training.md); of the next weeks, the event model is.

The inverse is dense and cubic in the items: it is learned over the
``max_items`` items with most users (3,000: 36 MB of weights, a fit of 1.8 s
of one core on MovieLens latest-small), and the others are scored by the
popularity prior alone. Registered in :data:`service.servable.SERVABLES` as
``ease``.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from service.catalogued import momentum
from service.knn import ItemToItem, index_problems
from service.servable import ArraySpec


class EASERecommender(ItemToItem):
    """EASE item weights over the most interacted items, a user-decayed profile, a prior.

    The prior is the items' momentum, as the event model's: interactions
    per day over ``prior_half_life_days``, so what is rising now ranks up.
    """

    SCHEMA_VERSION = 1

    def __init__(self, *, l2: float = 100.0, max_items: int = 3000,
                 weighting: str = "binary", half_life_days: float = np.inf,
                 user_half_life: float = 3.0, user_decay_floor: float = 0.1,
                 popularity_weight: float = 0.1, prior_half_life_days: float = 4.0,
                 random_state: int = 0):
        self.l2 = l2
        self.max_items = max_items
        self.weighting = weighting
        self.half_life_days = half_life_days
        self.user_half_life = user_half_life
        self.user_decay_floor = user_decay_floor
        self.popularity_weight = popularity_weight
        self.prior_half_life_days = prior_half_life_days
        self.random_state = random_state  # unused: the fit is deterministic

    def fit(self, X, y=None, *, items=None) -> EASERecommender:
        """Learn the item weights over the most interacted items, and the users' profiles."""
        if not self.l2 > 0:
            raise ValueError(f"l2 {self.l2!r} must be positive: it keeps XᵀX invertible")
        matrix, cols, weight = self._fit_profiles(X, items)
        n_items = self.item_ids_.shape[0]
        users_per_item = np.bincount(matrix.indices, minlength=n_items)
        most = np.argsort(-users_per_item, kind="stable")[:max(1, int(self.max_items))]
        kept = np.sort(most[users_per_item[most] > 0]).astype(np.int32)
        columns = matrix[:, kept]
        gram = (columns.T @ columns).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        # The inverse of a symmetric positive definite matrix from its Cholesky
        # factor (3,000 items: 1.6 s of one core, a general inverse 1.8).
        inverse, info = linalg.lapack.dpotrf(gram, lower=True, overwrite_a=True)
        if not info:
            inverse, info = linalg.lapack.dpotri(inverse, lower=True, overwrite_c=True)
        if info:
            raise ValueError(f"XᵀX + l2 I is not positive definite (LAPACK info {info})")
        inverse = np.tril(inverse) + np.tril(inverse, -1).T
        coefficients = inverse / -np.diag(inverse)
        np.fill_diagonal(coefficients, 0.0)
        self.weighted_items_ = kept
        self.item_position_ = np.full(n_items, -1, dtype=np.int32)
        self.item_position_[kept] = np.arange(kept.size, dtype=np.int32)
        self.item_weights_ = coefficients.astype(np.float32)
        timestamp = np.asarray(X.timestamp, dtype=np.float64)
        self._set_prior(np.log1p(momentum(cols, weight, timestamp, self.fitted_as_of_, n_items,
                                          self.prior_half_life_days)),
                        self._typical_best_score())
        self.schema_version_ = self.SCHEMA_VERSION
        return self

    def declared_arrays(self) -> dict[str, ArraySpec]:
        """Add the weighted items, each item's position among them and their weights."""
        return {
            **super().declared_arrays(),
            "weighted_items_": ArraySpec(("weighted",)),
            "item_position_": ArraySpec(("items",)),
            "item_weights_": ArraySpec(("weighted", "weighted")),
        }

    def consistency_problems(self) -> list[str]:
        """Add weighted items outside the catalogue, and positions that do not match them."""
        problems = super().consistency_problems()
        n_items = self.item_ids_.shape[0]
        problems += index_problems(self, "weighted_items_", n_items)
        if not problems:
            expected = np.full(n_items, -1, dtype=np.int64)
            expected[self.weighted_items_] = np.arange(self.weighted_items_.size)
            if not np.array_equal(expected, self.item_position_):
                problems.append("item_position_ does not index weighted_items_")
        return problems

    def _profile_scores(self, items: np.ndarray, weights: np.ndarray,
                        first: int) -> np.ndarray:
        """Sum the weighted rows of the profile's items (others have none), items ``first:``."""
        positions = self.item_position_[items]
        known = positions >= 0
        row = weights[known] @ self.item_weights_[positions[known]]
        scores = np.zeros(self.item_ids_.shape[0] - first, dtype=np.float32)
        upcoming = self.weighted_items_ >= first
        scores[self.weighted_items_[upcoming] - first] = row[upcoming]
        return scores
