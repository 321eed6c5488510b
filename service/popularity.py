"""The popularity recommender: the baseline every model must beat."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from service.catalogued import Catalogued
from service.servable import Recommendation


class PopularityRecommender(Catalogued, BaseEstimator):
    """Recommend the most popular upcoming items (recency-weighted), the evaluation baseline.

    Same interface as :class:`EventRecommender`; seen items are excluded too,
    so the comparison isolates personalisation.
    """

    def __init__(self, *, half_life_days: float = 14.0):
        self.half_life_days = half_life_days

    def fit(self, X, y=None, *, items=None) -> "PopularityRecommender":
        """Learn recency-weighted item popularity and each user's seen items."""
        self._index_data(X, items)
        return self

    def recommend(self, user_id: str, n: int = 10, as_of: float | None = None, *,
                  taste: str | None = None, use_ranking: bool = True) -> Recommendation:
        """Return the n most popular upcoming items the user has not seen."""
        check_is_fitted(self)
        first = self._first_upcoming(as_of)
        return self._finish(np.array(self.item_popularity_[first:]), first,
                            self._user_row(user_id), n, "popular")
