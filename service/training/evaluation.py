"""Rank-based metrics of a model on held-out data: per user, then averaged.

The relevant items of a user are the items they *saw* in the held-out rows
(bought, rated: ``Interactions.seen``; a view is not an outcome) and had not
seen before them: seen items are never recommended back, so counting them
would only punish every model equally. Only users with training rows are
scored; cold users get the same popularity list from every model.

How the held-out rows are chosen (a time window, or each user's last k) is
:mod:`service.training.protocol`; the intervals are
:mod:`service.training.bootstrap`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.contract import PRIMARY_METRIC
from service.training.data import Interactions

#: The list length every metric is measured at.
K = 10

#: The metrics given bootstrap intervals (``holdout_intervals``, ``baseline_difference``).
INTERVAL_METRICS = (PRIMARY_METRIC, f"recall@{K}")


def holdout_truth(train: Interactions, holdout: Interactions) -> dict[str, np.ndarray]:
    """Return ``{user_id: sorted item ids}`` seen in ``holdout`` and not seen in ``train``.

    Both must share vocabularies (subsets of one log). Only users with
    training rows appear.
    """
    n_items = np.int64(len(train.item_vocab))
    known = np.zeros(len(train.user_vocab), dtype=bool)
    known[train.user_codes] = True
    had = holdout.seen & known[holdout.user_codes]
    pairs = np.unique(holdout.user_codes[had].astype(np.int64) * n_items
                      + holdout.item_codes[had])
    before = (train.user_codes[train.seen].astype(np.int64) * n_items
              + train.item_codes[train.seen])
    pairs = pairs[~np.isin(pairs, before)]
    users, items = np.divmod(pairs, n_items)
    bounds = np.flatnonzero(np.diff(users)) + 1
    truth = {}
    for user_items in np.split(np.arange(pairs.size), bounds):
        if user_items.size:
            user = str(train.user_vocab[users[user_items[0]]])
            truth[user] = np.sort(train.item_vocab[items[user_items]])
    return truth


def scoring_model(model_class: str, params: dict[str, Any], seed: int) -> Any:
    """Return an unfitted servable with ``params`` for measuring, not serving.

    Where the class has them, it skips the fit-time ranking and the taste
    clusters: neither changes a known user's list (the ranking is exact, the
    gate checks it), and a measuring fit is asked only for its evaluation users.
    """
    from service.servable import servable_class

    estimator = servable_class(model_class)(**params, random_state=seed)
    cheaper = {"n_clusters": 1, "n_ranked": 0}
    return estimator.set_params(**{name: value for name, value in cheaper.items()
                                   if name in estimator.get_params()})


def per_user_metrics(model: Any, truth: dict[str, np.ndarray], as_of: float,
                     k: int = K) -> dict[str, np.ndarray]:
    """Return each user's precision@k, recall@k and NDCG@k (users sorted), and items shown.

    ``"shown"`` is a bool mask over ``model.item_ids_``: the items in at least
    one user's list.
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    users = sorted(truth)
    precision, recall, ndcg = (np.zeros(len(users)) for _ in range(3))
    shown = np.zeros(model.item_ids_.shape[0], dtype=bool)
    for i, (user, rec) in enumerate(zip(users, model.recommend_batch(users, k, as_of))):
        relevant = truth[user]
        hits = np.isin(rec.item_ids, relevant)
        shown[rec.items] = True
        n_hits = float(hits.sum())
        precision[i] = n_hits / k
        recall[i] = n_hits / relevant.size
        ndcg[i] = discounts[:hits.size][hits].sum() / discounts[:min(relevant.size, k)].sum()
    return {f"precision@{k}": precision, f"recall@{k}": recall, f"ndcg@{k}": ndcg,
            "shown": shown}


def summarise(model: Any, per_user: dict[str, np.ndarray], as_of: float) -> dict[str, float]:
    """Return the mean of each per-user metric, catalogue coverage and the number of users.

    Coverage is the share of the items upcoming at ``as_of`` shown to at
    least one user.
    """
    scores = {key: values for key, values in per_user.items() if key != "shown"}
    users = min(values.size for values in scores.values())
    upcoming = int((model.item_starts_at_ > as_of).sum())
    return {**{key: float(values.mean()) if users else 0.0 for key, values in scores.items()},
            "coverage": float(per_user["shown"].sum()) / upcoming if upcoming else 0.0,
            "users": float(users)}


def ranking_metrics(model: Any, truth: dict[str, np.ndarray], as_of: float,
                    k: int = K) -> dict[str, float]:
    """Return mean precision@k, recall@k, NDCG@k over ``truth``'s users, coverage and users."""
    return summarise(model, per_user_metrics(model, truth, as_of, k), as_of)


def combined(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Return the first split's metrics, NDCG@k the splits' weighted geometric mean.

    Each split's log NDCG@k weighs the square root of its users (the inverse
    of its standard error), so a thin time window counts but cannot outvote
    a per-user split ten times its size; each split's own NDCG@k is kept as
    ``"ndcg@k <i>"``. One split: its metrics unchanged.

    A split's NDCG@k counts as at least one user's worth (``1 / users``, one
    hit at the top): a mean over n users does not resolve less, and a thin
    window that happened to score 0 would otherwise zero the mean of a
    point far better on the other split (a Ciao data set's 63-user window,
    docs/training.md). Each split's users are kept as ``"users <i>"``.
    """
    if len(metrics) == 1:
        return metrics[0]
    users = np.array([max(split["users"], 1.0) for split in metrics])
    weights = np.sqrt(users)
    logs = np.log(np.maximum([split[PRIMARY_METRIC] for split in metrics], 1.0 / users))
    return {**metrics[0], PRIMARY_METRIC: float(np.exp(weights @ logs / weights.sum())),
            **{f"{PRIMARY_METRIC} {i}": split[PRIMARY_METRIC] for i, split in enumerate(metrics)},
            **{f"users {i}": split["users"] for i, split in enumerate(metrics)}}


def sample_users(truth: dict[str, np.ndarray], count: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Return ``truth`` restricted to about ``count`` of its users, drawn deterministically."""
    users = np.array(sorted(truth))
    if users.size > count:
        users = np.sort(np.random.default_rng(seed).choice(users, size=count, replace=False))
    return {str(user): truth[str(user)] for user in users}


def golden_users(truth: dict[str, np.ndarray], count: int = 50,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Pick about ``count`` held-out users, deterministically, as the gate's golden users."""
    return [{"user_id": user, "holdout_items": [str(i) for i in items]}
            for user, items in sample_users(truth, count, seed).items()]
