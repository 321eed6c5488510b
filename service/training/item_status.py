"""Which events are on sale, from an items CSV's ``available`` or ``status`` column."""

from __future__ import annotations

import numpy as np

#: ``status`` values that take an event off sale; ``available`` values that mean no.
UNAVAILABLE_STATUSES = frozenset({"sold_out", "soldout", "sold out", "cancelled", "canceled",
                                  "postponed", "off_sale"})
_NO = frozenset({"false", "no", "0", "n", "f"})
_YES = frozenset({"true", "yes", "1", "y", "t", ""})


class BadAvailability(ValueError):
    """An ``available`` value that is neither true nor false; ``index`` is its data row."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def on_sale(header: list[str], columns: list) -> np.ndarray | None:
    """Return which items are on sale (``available`` wins over ``status``), None without either.

    An empty ``available`` means on sale; any ``status`` not in
    ``UNAVAILABLE_STATUSES`` (``on_sale``, ``few_left``...) too.
    """
    if "available" in header:
        raw = columns[header.index("available")]
        values = [v.strip().lower() for v in raw]
        for index, value in enumerate(values):
            if value not in _NO and value not in _YES:
                raise BadAvailability(f"available {raw[index]!r} is not true or false", index)
        return np.array([v not in _NO for v in values])
    if "status" in header:
        return np.array([v.strip().lower() not in UNAVAILABLE_STATUSES
                         for v in columns[header.index("status")]])
    return None
