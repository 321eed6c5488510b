"""Rank-based metrics on a temporal holdout: precision@k, recall@k, NDCG@k, coverage.

The relevant items of a user are the events they *purchased* in the holdout
(weight >= the purchase weight) and had not already bought before it: a
purchase is the outcome the business wants, and bought items are excluded from
recommendations, so counting them would only punish every model equally.
Only users known to the model (with training interactions) are scored; cold
users get the same popularity list from the model and the baseline.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.contract import METRIC_KEYS
from service.training.data import Interactions


def split_by_time(log: Interactions, holdout_start: float) -> tuple[Interactions, Interactions]:
    """Return (train, holdout): rows before ``holdout_start`` and rows at or after it."""
    before = log.timestamp < holdout_start
    return log.subset(before), log.subset(~before)


def holdout_truth(train: Interactions, holdout: Interactions,
                  purchase_weight: float = 5.0) -> dict[str, np.ndarray]:
    """Return ``{user_id: sorted item ids}`` purchased in the holdout and not bought before.

    Only users with training interactions appear.
    """
    known_users = np.unique(train.user_vocab[np.unique(train.user_codes)])
    bought = holdout.weight >= purchase_weight
    users = holdout.user_vocab[holdout.user_codes[bought]]
    items = holdout.item_vocab[holdout.item_codes[bought]]
    known = np.isin(users, known_users)
    pairs = np.unique(np.char.add(np.char.add(users[known], "\x1f"), items[known]))
    train_bought = train.weight >= purchase_weight
    before = np.char.add(np.char.add(train.user_vocab[train.user_codes[train_bought]], "\x1f"),
                         train.item_vocab[train.item_codes[train_bought]])
    pairs = pairs[~np.isin(pairs, before)]
    truth: dict[str, list[str]] = {}
    for pair in pairs.tolist():
        user, item = pair.split("\x1f")
        truth.setdefault(user, []).append(item)
    return {user: np.array(sorted(items)) for user, items in truth.items()}


def ranking_metrics(model: Any, truth: dict[str, np.ndarray], as_of: float,
                    k: int = 10) -> dict[str, float]:
    """Return mean precision@k, recall@k, NDCG@k over ``truth``'s users, and catalogue coverage.

    Coverage is the share of the items upcoming at ``as_of`` that appear in at
    least one user's list.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision = recall = ndcg = 0.0
    shown = np.zeros(model.item_ids_.shape[0], dtype=bool)
    users = sorted(truth)
    for user, rec in zip(users, model.recommend_batch(users, k, as_of)):
        relevant = truth[user]
        hits = np.isin(rec.item_ids, relevant)
        shown[rec.items] = True
        n_hits = float(hits.sum())
        precision += n_hits / k
        recall += n_hits / relevant.size
        ideal = float(discounts[:min(relevant.size, k)].sum())
        ndcg += float(discounts[:hits.size][hits].sum()) / ideal
    count = max(len(users), 1)
    upcoming = int((model.item_starts_at_ > as_of).sum())
    return {f"precision@{k}": precision / count, f"recall@{k}": recall / count,
            f"ndcg@{k}": float(ndcg / count),
            "coverage": float(shown.sum()) / upcoming if upcoming else 0.0,
            "users": float(len(users))}


def baseline_metrics(train: Interactions, truth: dict[str, np.ndarray], as_of: float,
                     items=None, k: int = 10, **params: Any) -> dict[str, float]:
    """Fit the popularity baseline on ``train`` and return its metrics on the same holdout."""
    from service.recommender import PopularityRecommender

    baseline = PopularityRecommender(**params).fit(train, items=items)
    return ranking_metrics(baseline, truth, as_of, k)


def golden_users(truth: dict[str, np.ndarray], count: int = 50,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Pick about ``count`` holdout purchasers, deterministically, as the gate's golden users."""
    users = np.array(sorted(truth))
    if users.size > count:
        users = np.sort(np.random.default_rng(seed).choice(users, size=count, replace=False))
    return [{"user_id": str(user), "holdout_items": [str(i) for i in truth[str(user)]]}
            for user in users]


def is_finite_metrics(metrics: dict[str, float]) -> bool:
    """Return True when every metric in ``METRIC_KEYS`` is present and finite."""
    return all(key in metrics and math.isfinite(metrics[key]) for key in METRIC_KEYS)
