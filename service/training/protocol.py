"""Choose the held-out rows so that there are always enough evaluation users.

Two kinds of split, both returning the training rows and each held-out
user's truth (:func:`service.training.evaluation.holdout_truth`):

* ``time_window``: the rows of the last ``days`` before ``end``. Events
  expire, so predicting the next days is the question the business asks.
  The window starts at ``holdout_days`` and doubles until it holds
  ``min_users`` users, as long as it keeps at most ``max_share`` of the rows.
* ``last_k``: each user's last ``k`` seen rows (and whatever they did after
  the first of them), for users with more than ``k`` seen rows. Used when no
  window within ``max_share`` reaches ``min_users`` but this split has more
  users: data whose users are active at different times (a ratings file
  spanning years). Lists are then made over the whole catalogue (``as_of`` is
  ``-inf``), as no single instant is "now" for every user.

The same rule, applied again to the training rows, carves the validation
split the search tunes on, so the holdout that reports the chosen
configuration never chose it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.training.data import Interactions
from service.training.evaluation import holdout_truth

_DAY = 86_400.0


@dataclass(frozen=True, eq=False)
class Split:
    """Training rows, each held-out user's truth, and the instant lists are made at."""

    train: Interactions
    truth: dict[str, np.ndarray]
    as_of: float
    description: dict[str, Any] = field(default_factory=dict)


def time_window(log: Interactions, start: float) -> Split:
    """Hold out the rows at or after ``start``."""
    before = log.timestamp < start
    train = log.subset(before)
    return Split(train, holdout_truth(train, log.subset(~before)), start,
                 {"kind": "time_window", "holdout_start": start})


def last_k(log: Interactions, k: int) -> Split:
    """Hold out each user's last ``k`` seen rows and their later rows (users with more than k)."""
    order = np.lexsort((log.timestamp, log.user_codes))
    users, seen = log.user_codes[order], log.seen[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, users.size])
    # Seen rows at or after each row, within its user (a reversed cumulative count).
    total = np.add.reduceat(seen.astype(np.int64), starts) if users.size else np.zeros(0, int)
    before = np.cumsum(seen) - seen - np.repeat(np.cumsum(total) - total, sizes)
    at_or_after = np.repeat(total, sizes) - before
    held = ((at_or_after < k) | ((at_or_after == k) & seen)) & (np.repeat(total, sizes) > k)
    mask = np.zeros(len(log), dtype=bool)
    mask[order[held]] = True
    train = log.subset(~mask)
    return Split(train, holdout_truth(train, log.subset(mask)), -math.inf,
                 {"kind": "last_k", "k": int(k)})


def choose(log: Interactions, end: float, *, holdout_days: float, min_users: int,
           k: int, max_share: float) -> Split:
    """Return the split with enough users: a time window grown to ``min_users``, else last-k.

    The description records the kind, its size (days or k), the number of
    evaluation users and of held-out rows.
    """
    best = None
    days = float(holdout_days)
    while True:
        start = end - days * _DAY
        share = float(np.mean(log.timestamp >= start)) if len(log) else 0.0
        if share > max_share and best is not None:
            break
        split = time_window(log, start)
        split.description.update(days=days)
        if best is None or len(split.truth) > len(best.truth):
            best = split
        if len(split.truth) >= min_users or share > max_share or share >= 1.0:
            break
        days *= 2
    if len(best.truth) < min_users:
        fallback = last_k(log, k)
        if len(fallback.truth) > len(best.truth):
            best = fallback
    held_out = len(log) - len(best.train)
    best.description.update(users=len(best.truth), held_out_rows=held_out,
                            min_users=int(min_users))
    return best


def nested(test: Split, *, min_users: int, k: int, max_share: float) -> Split:
    """Carve the validation split from ``test.train`` by the same kind of rule as ``test``."""
    if test.description["kind"] == "last_k":
        split = last_k(test.train, k)
        split.description.update(users=len(split.truth), min_users=int(min_users),
                                 held_out_rows=len(test.train) - len(split.train))
        return split
    return choose(test.train, test.as_of, holdout_days=test.description["days"],
                  min_users=min_users, k=k, max_share=max_share)
