"""The filters a ticketing frontend puts on ``GET /recommendations``.

``city`` and ``category`` take one or more values (repeated, or separated by
commas) and match without regard to case; ``starts_after`` and
``starts_before`` bound the start time (ISO 8601, naive means UTC), both
exclusive; a bare number is refused, so an epoch is never taken for a year.
A filter is exact: the answer holds no event outside it, and is shorter than
``n`` when fewer events match.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

from service.training.data import parse_iso

#: The query parameters that filter, in the order the OpenAPI document lists them.
FILTER_PARAMETERS = ("city", "category", "starts_after", "starts_before")

#: Most values one list filter may name: a bound on the work a request can ask for.
MAX_FILTER_VALUES = 50


class FilterError(ValueError):
    """A filter value the caller got wrong; the message names the parameter."""


class ItemFilter(NamedTuple):
    """Which events a request may be answered with; empty tuples mean any city or category."""

    cities: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    starts_after: float = -math.inf
    starts_before: float = math.inf


@lru_cache(maxsize=1024)  # a frontend asks for a few cities and categories, over and over
def _values(name: str, raw: tuple[str, ...]) -> tuple[str, ...]:
    parts = [part.strip().lower() for text in raw for part in text.split(",") if part.strip()]
    if raw and not parts:
        raise FilterError(f"{name} needs at least one value, e.g. {name}=London")
    if len(parts) > MAX_FILTER_VALUES:
        raise FilterError(f"{name} names {len(parts)} values; at most {MAX_FILTER_VALUES}")
    return tuple(sorted(set(parts)))


def _instant(name: str, raw: list[str]) -> float | None:
    if not raw:
        return None
    if len(raw) > 1:
        raise FilterError(f"parameter {name!r} given twice")
    text = raw[0].strip()
    # RFC 3339 allows a lower-case "t" and "z", and a leap second, which Python refuses.
    normal = text.upper().replace(":60", ":59")
    try:
        value = parse_iso(normal) if text and not text.lstrip("+-").isdigit() else None
    except (ValueError, OverflowError, OSError):
        value = None
    if value is None or not math.isfinite(value):
        raise FilterError(f"{name} must be an ISO 8601 date or date-time like "
                          f"2026-12-01T18:00:00Z, got {text[:40]!r}")
    return value


def parse_filter(given: dict[str, list[str]]) -> ItemFilter | None:
    """Return the filter named by the query's lists of values, or None when there is none."""
    if given.keys().isdisjoint(FILTER_PARAMETERS):  # the unfiltered request's one test
        return None
    after = _instant("starts_after", given.get("starts_after", []))
    before = _instant("starts_before", given.get("starts_before", []))
    # An empty window (after >= before) is no mistake: nothing matches, the list is empty.
    return ItemFilter(cities=_values("city", tuple(given.get("city", ()))),
                      categories=_values("category", tuple(given.get("category", ()))),
                      starts_after=-math.inf if after is None else after,
                      starts_before=math.inf if before is None else before)
