"""A filter's candidate items with their factor rows side by side, cached per view.

A filtered request scores only the items that match its cities and
categories. Gathering those items' factor rows from the model's matrix costs
several times the dot product itself (16 µs against 3 µs for 300 items), and
the postings lookup as much again, so each (cities, categories) pair's block
is built once per catalogue view and reused: the matching item indices in
ascending order (which is start order), their factors contiguous, their bias.
A start-time window is then a slice of the block, found by two searches.
A block also keeps its items' order by popularity, which is the same for every
user without a row in the model: their list is the first n of that order
inside the window, not a top n taken anew in each request.
Factor columns that are zero for every item of a block (the metadata and
local-demand columns of other categories and cities) are left out of it, so
a city's block is scored over about 104 of the sample model's 144 columns.

The cache is bounded in bytes and in blocks and drops the least recently
used block first; requests in several threads share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from service.catalogued import top_indices

#: Bytes of factor blocks one view keeps (a city's block of the sample model is 0.3 MB).
BUDGET_BYTES = 64 << 20
#: Blocks one view keeps, whatever their size: filters that match nothing make empty
#: blocks, and a caller naming a new unknown city each time must not grow the cache.
MAX_BLOCKS = 1024


@dataclass(frozen=True)
class Block:
    """Matching, available model items (ascending) with their factors and bias in that order."""

    items: np.ndarray
    factors: np.ndarray
    bias: np.ndarray
    #: The city and category codes the items match (None: any), resolved once with the block.
    cities: np.ndarray | None = None
    categories: np.ndarray | None = None
    #: The model's factor columns ``factors`` holds, or None for all of them.
    columns: np.ndarray | None = None
    #: For a filter of one city the model ranks per user: that city's row index,
    #: and with one ranked category too, that category's column.
    ranked_city: int | None = None
    ranked_category: int | None = None
    #: Positions in the block by popularity as ``top_indices`` ranks them (equal ones
    #: in position order, NaN and -inf left out); None when no popularity was given.
    by_popularity: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        extra = 0 if self.by_popularity is None else self.by_popularity.nbytes
        return int(self.items.nbytes + self.factors.nbytes + self.bias.nbytes + extra)

    def window(self, lo: int, hi: int) -> slice:
        """Return the slice of the block whose items lie in ``[lo, hi)``."""
        # Scalar searches, the second only when the window ends inside the block:
        # a pair of bounds would first be made into an array.
        items = self.items
        start = int(items.searchsorted(lo))
        stop = (items.shape[0] if not items.shape[0] or hi > items[-1]
                else int(items.searchsorted(hi)))
        return slice(start, stop)

    def most_popular(self, part: slice, n: int) -> np.ndarray:
        """Return the n most popular items of ``part`` (model indices), most popular first."""
        order = self.by_popularity
        return self.items[order[(order >= part.start) & (order < part.stop)][:n]]

    def scores(self, part: slice, user_factors: np.ndarray) -> np.ndarray:
        """Return a user's scores (float32) of the items in ``part``: factors · user + bias."""
        if self.columns is not None:
            user_factors = user_factors[self.columns]
        scores = self.factors[part] @ user_factors
        scores += self.bias[part]
        return scores


def gather(items: np.ndarray, factors: np.ndarray, bias: np.ndarray, *,
           cities: np.ndarray | None = None, categories: np.ndarray | None = None,
           ranked_city: int | None = None, ranked_category: int | None = None,
           popularity: np.ndarray | None = None) -> Block:
    """Copy the rows of ``items``, less their all-zero columns, into a block.

    When ``items`` are every row, the block is a view of the model's arrays.
    """
    by_popularity = None if popularity is None else top_indices(
        np.asarray(popularity[items], dtype=np.float64), items.size).astype(np.int32)
    if items.size == factors.shape[0]:  # ascending and unique: every item, in order
        return Block(items, factors, bias, cities, categories, ranked_city=ranked_city,
                     ranked_category=ranked_category, by_popularity=by_popularity)
    rows = np.asarray(factors[items])
    columns = rows.any(axis=0).nonzero()[0]
    if columns.size == rows.shape[1]:
        columns, rows = None, np.ascontiguousarray(rows)
    else:
        rows = np.ascontiguousarray(rows[:, columns])
    return Block(items, rows, bias[items], cities, categories, columns, ranked_city,
                 ranked_category, by_popularity)


class BlockCache:
    """Least recently used blocks by key, at most ``budget`` bytes and ``max_blocks`` in all."""

    def __init__(self, budget: int = BUDGET_BYTES, max_blocks: int = MAX_BLOCKS) -> None:
        self.budget, self.max_blocks = budget, max_blocks
        self._blocks: OrderedDict[Hashable, Block] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Block]) -> Block:
        """Return the block for ``key``, building it outside the lock when missing."""
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
                return block
        block = build()
        with self._lock:
            if key in self._blocks or block.nbytes > self.budget:
                return self._blocks.get(key, block)
            self._blocks[key] = block
            self._bytes += block.nbytes
            while self._bytes > self.budget or len(self._blocks) > self.max_blocks:
                self._bytes -= self._blocks.popitem(last=False)[1].nbytes
        return block
