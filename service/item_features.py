"""Score events from what is known about them: a ridge map from item metadata to factors.

An event listed yesterday has almost no interactions, so its collaborative
factors are noise or zero. What the catalogue says about it (category, city,
their pair, performer, venue, weekday and hour of the start) predicts them:
a ridge regression from one-hot metadata to the item factors and the
popularity prior is fitted on the events with enough interactions. Each
event's factors are then a blend, ``w * learned + (1 - w) * predicted`` with
``w = count / (count + shrinkage)``, so the metadata fades as interactions
arrive. The predicted factors are scaled to the learned ones' mean length
(ridge shrinks them towards the mean, which ranks every new event low).
Events listed after the fit get the predicted factors alone
(:func:`new_item_factors`, used by the live catalogue).

Collaborative factors cannot hold every performer: fans who follow one
across cities are a signal no 32-dimensional SVD keeps. So the factors also
get ``content_dims`` explicit dimensions: an item's performer and venue
tokens hashed into them (unit length, times a weight that moves from
``new_content_weight`` to ``content_weight`` as the item's interactions
arrive: metadata matters most when little else is known), and a user's
profile, the same hashed tokens of what they interacted with. A new event's
content dimensions come straight from its metadata, nothing to learn.

Demand is local too: a fan of rock in Berlin buys what sells in rock in
Berlin. Each of the busiest category-city segments gets a dimension
(:func:`segment_vocab`, exact, not hashed); an item's popularity prior goes
into its segment's dimension (:func:`segment_demand`) and a user's profile
over the segments picks it up. A new event is credited there with the
model's launch prior at least, as events sell most soon after going on sale.

The map is stored on the model as plain arrays (``feature_vocab_``,
``feature_weights_``), so it memory-maps like the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import zlib

import numpy as np
from scipy import sparse

#: The metadata fields a token is made of; absent fields make no token.
FIELDS = ("category", "city", "category_city", "performer", "venue", "weekday", "hour")
#: The fields hashed into the explicit content dimensions.
CONTENT_FIELDS = ("performer", "venue")
#: The field that names an item's segment, whose demand a user's share of it picks up.
SEGMENT_FIELD = "category_city"


class Metadata(NamedTuple):
    """Parallel arrays of what a catalogue says about each item ("" when unknown)."""

    category: np.ndarray
    city: np.ndarray
    performer: np.ndarray
    venue: np.ndarray
    starts_at: np.ndarray


def metadata_of(item_ids: np.ndarray, catalogue, categories: np.ndarray,
                cities: np.ndarray, starts_at: np.ndarray) -> Metadata:
    """Align a catalogue's performer and venue columns to ``item_ids`` ("" where unknown)."""
    performer = np.full(item_ids.shape, "", dtype=object)
    venue = np.full(item_ids.shape, "", dtype=object)
    if catalogue is not None and len(catalogue):
        order = np.argsort(catalogue.item_id)
        ids = np.asarray(catalogue.item_id)[order]
        at = np.minimum(np.searchsorted(ids, item_ids), ids.size - 1)
        found = ids[at] == item_ids
        for column, target in ((catalogue.performer, performer), (catalogue.venue, venue)):
            if column is not None:
                target[found] = np.asarray(column)[order][at[found]]
    return Metadata(np.asarray(categories), np.asarray(cities), performer.astype(str),
                    venue.astype(str), np.asarray(starts_at, dtype=np.float64))


def tokens(meta: Metadata) -> list[np.ndarray]:
    """Return one array of ``field=value`` tokens per field; "" marks a missing value."""
    finite = np.isfinite(meta.starts_at)
    start = np.where(finite, meta.starts_at, 0.0)
    weekday = ((start // 86_400 + 3) % 7).astype(int).astype(str)  # 1970-01-01 was a Thursday
    hour = ((start % 86_400) // 3600).astype(int).astype(str)
    lowered = [np.char.lower(np.asarray(a).astype(str)) for a in
               (meta.category, meta.city, meta.performer, meta.venue)]
    category, city, performer, venue = lowered
    values = (category, city, np.char.add(np.char.add(category, "|"), city), performer, venue,
              np.where(finite, weekday, ""), np.where(finite, hour, ""))
    out = []
    for field, value in zip(FIELDS, values, strict=True):
        blank = (np.char.str_len(value) == 0) | (value == "|")
        out.append(np.where(blank, "", np.char.add(f"{field}=", value)))
    return out


def design(token_columns: list[np.ndarray], vocab: np.ndarray) -> sparse.csr_matrix:
    """Return the one-hot matrix (items x vocab) of the tokens that are in ``vocab``."""
    n = token_columns[0].shape[0]
    rows, cols = [], []
    for column in token_columns:
        if not vocab.size:
            break
        at = np.minimum(np.searchsorted(vocab, column), vocab.size - 1)
        hit = (vocab[at] == column) & (column != "")
        rows.append(np.flatnonzero(hit))
        cols.append(at[hit])
    rows = np.concatenate(rows) if rows else np.empty(0, dtype=np.intp)
    cols = np.concatenate(cols) if cols else np.empty(0, dtype=np.intp)
    return sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, vocab.size))


def fit(token_columns: list[np.ndarray], targets: np.ndarray, counts: np.ndarray, *,
        min_count: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Fit the ridge map on items with at least ``min_count`` interactions.

    Returns ``(vocab, weights)``: the sorted tokens seen on those items and a
    ``(len(vocab) + 1, targets.shape[1])`` matrix whose last row is the intercept.
    """
    if not alpha > 0:
        raise ValueError(f"metadata_alpha {alpha!r} must be positive")
    learned = counts >= min_count
    seen = np.concatenate([column[learned] for column in token_columns])
    vocab = np.unique(seen[seen != ""])
    weights = np.zeros((vocab.size + 1, targets.shape[1]), dtype=np.float32)
    if learned.sum() < 2:
        return vocab, weights
    X = design([column[learned] for column in token_columns], vocab)
    weights[:] = ridge(X, targets[learned], alpha)
    # Ridge predictions regress to the mean: an average of many events' factors
    # is shorter than any one's, so a new event would always rank low. Scale the
    # predicted factors (not the prior, the last column) to the learned ones' norm.
    predicted = predict([column[learned] for column in token_columns], vocab, weights)[:, :-1]
    scale = (np.linalg.norm(targets[learned][:, :-1], axis=1).mean()
             / max(float(np.linalg.norm(predicted, axis=1).mean()), 1e-12))
    weights[:, :-1] *= scale
    return vocab, weights


def ridge(X: sparse.csr_matrix, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Return the ridge regression of ``targets`` on ``X``: coefficients, then the intercept row.

    The intercept is not penalised. Solved exactly, by a sparse LU of the
    normal equations with the intercept as one more column (a square system
    of the features plus one): one-hot metadata has hundreds to a few
    thousand features, so this takes milliseconds, where scikit-learn's
    ``sparse_cg`` solved the targets one at a time, iteratively, in 0.7 s of
    each 1.8 s fit on the sample world.
    """
    from scipy.sparse.linalg import splu

    augmented = sparse.hstack([X, np.ones((X.shape[0], 1))], format="csc", dtype=np.float64)
    penalty = sparse.diags(np.r_[np.full(X.shape[1], float(alpha)), 0.0])
    normal = (augmented.T @ augmented + penalty).tocsc()
    return splu(normal).solve(np.asarray(augmented.T @ np.asarray(targets, np.float64)))


def predict(token_columns: list[np.ndarray], vocab: np.ndarray,
            weights: np.ndarray) -> np.ndarray:
    """Return the predicted targets of items from their tokens (unknown tokens count 0)."""
    X = design(token_columns, vocab)
    return np.asarray(X @ weights[:-1] + weights[-1], dtype=np.float32)


def confidence(counts: np.ndarray, shrinkage: float) -> np.ndarray:
    """Return how far each item's learned factors are trusted: ``count / (count + shrinkage)``."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / (counts + shrinkage) if shrinkage > 0 else np.ones(counts.shape)


def blend(learned: np.ndarray, predicted: np.ndarray, counts: np.ndarray,
          shrinkage: float) -> np.ndarray:
    """Return ``w * learned + (1 - w) * predicted`` per item, ``w`` the :func:`confidence`."""
    w = confidence(counts, shrinkage)[:, None]
    return (w * learned + (1.0 - w) * predicted).astype(np.float32)


def content(token_columns: list[np.ndarray], dims: int) -> np.ndarray:
    """Return each item's content vector: its performer and venue tokens hashed, unit length."""
    n = token_columns[0].shape[0]
    out = np.zeros((n, max(int(dims), 0)), dtype=np.float32)
    if dims <= 0:
        return out
    for field in CONTENT_FIELDS:
        column = token_columns[FIELDS.index(field)]
        values, inverse = np.unique(column, return_inverse=True)
        bucket = np.array([zlib.crc32(v.encode()) % dims for v in values.tolist()])
        present = column != ""
        np.add.at(out, (np.flatnonzero(present), bucket[inverse.ravel()][present]), 1.0)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def profiles(matrix: sparse.csr_matrix, item_content: np.ndarray) -> np.ndarray:
    """Return each user's profile: their interactions' content vectors summed, unit length."""
    summed = np.asarray(matrix @ item_content, dtype=np.float32)
    summed /= np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)
    return summed


def segment_vocab(token_columns: list[np.ndarray], counts: np.ndarray,
                  limit: int) -> np.ndarray:
    """Return the ``limit`` segments with the most interactions, sorted: one dimension each.

    Exact, not hashed like the content: hashed into 32 dimensions, 36 of the
    sample's 48 category-city pairs share one, and a shared dimension lifts
    another segment's events for the user. A segment needs a city (demand is
    local to a place), and one segment alone is global popularity, which the
    prior already weighs: then there are none (a ratings file).
    """
    column = token_columns[FIELDS.index(SEGMENT_FIELD)]
    names, inverse = np.unique(column, return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=counts, minlength=names.size)
    placed = (names != "") & ~np.char.endswith(names.astype(str), "|")
    kept = np.flatnonzero(placed & (total > 0))
    busiest = kept[np.argsort(-total[kept], kind="stable")[:max(int(limit), 0)]]
    return np.sort(names[busiest]) if busiest.size > 1 else names[:0]


def segments(token_columns: list[np.ndarray], vocab: np.ndarray) -> np.ndarray:
    """Return each item's one-hot row over the segments ``vocab`` (zero when not in it)."""
    column = token_columns[FIELDS.index(SEGMENT_FIELD)]
    return design([column], vocab).toarray().astype(np.float32)


def launch_demand(prior: np.ndarray, launch_prior: float,
                  trust: np.ndarray | float = 0.0) -> np.ndarray:
    """Return the demand an item's segment dimension holds: its prior, at least the launch prior.

    Raised as far as the item's own interactions are not trusted (``trust``
    from :func:`confidence`); a new event has none, so it is raised all the way.
    """
    return trust * prior + (1.0 - trust) * np.maximum(prior, launch_prior)


def segment_demand(one_hot: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """Return each item's popularity prior in its segment's dimension, times ``weight``."""
    return (weight * np.maximum(prior, 0.0)[:, None] * one_hot).astype(np.float32)


def new_item_factors(token_columns: list[np.ndarray], vocab: np.ndarray, weights: np.ndarray, *,
                     content_dims: int, content_weight: float, segment_vocab: np.ndarray,
                     segment_weight: float, launch_prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (factors, bias) of items the model never saw, from their metadata alone.

    The columns are the model's: predicted collaborative factors, content
    dimensions, segment demand at no less than the launch prior (see
    ``EventRecommender``).
    """
    predicted = predict(token_columns, vocab, weights)
    bias = np.ascontiguousarray(predicted[:, -1])
    factors = np.hstack([predicted[:, :-1],
                         content_weight * content(token_columns, content_dims),
                         segment_demand(segments(token_columns, segment_vocab),
                                        launch_demand(bias, launch_prior), segment_weight)])
    return np.ascontiguousarray(factors, dtype=np.float32), bias
