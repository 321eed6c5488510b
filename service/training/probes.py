"""The gate's probes: a measure of the served model that the gate can recompute on the artifact.

The flow's holdout metrics describe a model fitted before the holdout; the
served model is refitted on everything, so nothing else measures it. At fit
time the flow samples probe users (the golden users, then the most recently
active) with each one's own most recent items, and stores how highly the
served model ranks those items among the whole catalogue (NDCG@10, bought
items not set aside), per user, beside the same measure for the popularity
baseline. The gate recomputes the measure on the model it loaded: a model
changed after evaluation (users' or items' factors shuffled, another data
set's model, a cut catalogue, popularity in disguise) scores far below the
claim, or not above popularity, on the same users; one whose popularity
changed (the order of every cold-start list) scores far below the
popularity measured at fit time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Users probed: the golden users first, then the most recently active.
PROBE_USERS = 300
#: Each probe user's own most recent distinct items, the targets of the measure.
RECENT_ITEMS = 5
#: The list length the measure ranks to.
K = 10
#: Bootstrap resamples of the users for a 95% interval.
RESAMPLES = 1000
#: The measure's name in reports.
MEASURE = f"probe ndcg@{K}"


def id_index(known: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (order, ids in that order) of ``known`` ids, to look ids up by searching."""
    known = np.asarray(known).astype(str)
    order = np.argsort(known, kind="stable")
    return order, known[order]


def lookup(index: tuple[np.ndarray, np.ndarray], wanted: Sequence[str]) -> np.ndarray:
    """Return each wanted id's position among the indexed ids, -1 when absent."""
    order, ordered = index
    wanted = np.asarray(wanted, dtype=str)
    if ordered.size == 0 or wanted.size == 0:
        return np.full(wanted.shape, -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(ordered, wanted), ordered.size - 1)
    return np.where(ordered[at] == wanted, order[at], -1).astype(np.int64)


def user_rows(model: Any, user_ids: Sequence[str]) -> np.ndarray:
    """Return each user's row in the model, -1 for a user it does not know."""
    return lookup(id_index(model.user_ids_), user_ids)


def item_columns(model: Any, item_ids: Sequence[str]) -> np.ndarray:
    """Return each item's column in the model, -1 for an item not in its catalogue."""
    return lookup(id_index(model.item_ids_), item_ids)


def _targets(model: Any, items: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Return (columns padded with -1, how many items each user lists)."""
    counts = np.array([len(row) for row in items], dtype=np.int64)
    width = int(max(counts.max(initial=0), 1))
    flat = [str(item) for row in items for item in row]
    columns = np.full((len(items), width), -1, dtype=np.int64)
    mask = np.arange(width)[None, :] < counts[:, None]
    columns[mask] = item_columns(model, flat)
    return columns, counts


def _ndcg(scores: np.ndarray, columns: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return per-user NDCG@K of the target columns under ``scores`` (users x items).

    Ties count against the target (its rank is the number of items scoring
    at least as high, itself aside), so a model scoring every item alike
    gains nothing; an unknown or non-finite target is a miss.
    """
    gains = np.zeros(columns.shape[0])
    rows = np.arange(columns.shape[0])
    for slot in range(columns.shape[1]):
        column = columns[:, slot]
        target = np.where(column >= 0, scores[rows, np.maximum(column, 0)], np.nan)
        rank = (scores >= target[:, None]).sum(axis=1) - 1
        hit = np.isfinite(target) & (rank < K)
        gains += np.where(hit, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, K + 2)))
    best = ideal[np.clip(counts, 1, K) - 1]
    return np.where(counts > 0, gains / best, 0.0)


def measure(model: Any, users: Sequence[str],
            items: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Return per-user NDCG@K of each user's own items under the model and under its popularity.

    The model ranks its whole catalogue by the scores a request ranks before
    it sets seen and past items aside (``score_catalogue``): the users' own
    items are seen, bought or rated, and the served model was fitted on them,
    which is why they measure it. Its popularity (recency-weighted, the order
    of every cold-start list) leaves out what the model leaves out for the
    user (-inf), so the two compare fairly.
    """
    scores = np.asarray(model.score_catalogue(users), dtype=np.float32)
    targets = _targets(model, items)
    popularity = np.tile(np.asarray(model.item_popularity_, dtype=np.float32), (len(users), 1))
    popularity[~np.isfinite(scores)] = -np.inf
    return _ndcg(scores, *targets), _ndcg(popularity, *targets)


def bootstrap_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """Return the 95% percentile bootstrap interval of the mean of ``values`` over users."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    picks = np.random.default_rng(seed).integers(0, values.size, (RESAMPLES, values.size))
    means = values[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def _probe_users(log: Any, golden: Sequence[str], count: int) -> tuple[list[str], list[list[str]]]:
    """Pick the golden users, then the most recently active, each with own recent items."""
    user_vocab = np.asarray(log.user_vocab).astype(str)
    item_vocab = np.asarray(log.item_vocab).astype(str)
    codes = np.asarray(log.user_codes)
    timestamp = np.asarray(log.timestamp, dtype=np.float64)
    # Integer codes sort in a fraction of the time strings take (500k rows).
    order = np.lexsort((np.asarray(log.item_codes), -timestamp, codes))
    codes, items, timestamp = codes[order], np.asarray(log.item_codes)[order], timestamp[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], codes.size]
    users = user_vocab[codes[starts]]
    first = dict(zip(users.tolist(), range(starts.size)))
    by_recency = users[np.lexsort((users, -timestamp[starts]))]
    chosen = list(dict.fromkeys([u for u in golden if u in first] + by_recency.tolist()))[:count]
    own = [list(dict.fromkeys(item_vocab[items[starts[first[u]]:ends[first[u]]]].tolist()))
           [:RECENT_ITEMS] for u in chosen]
    return chosen, own


def build_probes(model: Any, log: Any, golden_users: Sequence[dict[str, Any]], *,
                 count: int = PROBE_USERS) -> dict[str, Any]:
    """Return the ``gate_probes`` artifact for the served ``model`` fitted on ``log``.

    ``users`` and ``items`` are what the gate recomputes the measure on;
    ``model`` and ``popularity`` are the per-user values measured here, the
    claim the gate holds the loaded artifact to.
    """
    golden = [str(user["user_id"]) for user in golden_users]
    users, items = _probe_users(log, golden, count)
    claimed, popularity = measure(model, users, items)
    return {"measure": MEASURE, "users": users, "items": items,
            "golden_users": sum(user in set(golden) for user in users),
            "model": [round(float(v), 6) for v in claimed],
            "popularity": [round(float(v), 6) for v in popularity],
            "model_interval": list(bootstrap_interval(claimed))}
