"""Read and validate the interactions and items CSVs into integer-coded numpy arrays.

The containers are small frozen dataclasses of numpy arrays. Strings are held
once in a sorted vocabulary and referred to by ``int32`` codes, so that the
500,000-row interactions table pickles in milliseconds when Metaflow moves it
between steps.

Every problem with a file raises :class:`DataError` with a message naming the
file, the row (the line number in the file; the header is row 1) and what was
wrong, for example::

    interactions.csv, row 17: timestamp 'yesterday' is not ISO 8601 or epoch seconds

Reading the CSV itself (encodings, headers, column names) is
:mod:`service.training.csv_files`.

"Seen" is its own notion, apart from the weight: a seen item is never
recommended to that user again and is what the evaluation asks the model to
predict. With an ``interaction`` column, rows whose kind is in ``seen_kinds``
(default purchase, rating) are seen, other kinds (views) are not; without one,
every row is seen (a ratings file: a rated item is seen).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from service.training import item_status
from service.training.csv_files import DataError, read_table

logger = logging.getLogger(__name__)

#: Weight of a row in an interactions file that has no ``weight`` column.
DEFAULT_WEIGHT = 5.0

#: The strength of one interaction of weight w, by a model's ``weighting``.
WEIGHTINGS = {"raw": lambda w: w, "binary": np.ones_like, "log": np.log1p}

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id",)
UNKNOWN_CATEGORY = "unknown"

#: Interaction kinds that make an item seen (never recommended again to that user).
SEEN_KINDS = ("purchase", "rating")

#: An id that only a data frame's float column would write ("12.0", "3e5").
_FLOAT_ID = re.compile(r"^[+-]?(\d+\.\d*|\d*\.\d+|\d+(\.\d*)?[eE][+-]?\d+)$")


@dataclass(frozen=True, eq=False)
class Interactions:
    """User-item events: ``user_vocab[user_codes[i]]`` did something to ``item_vocab[...]``.

    ``timestamp`` is float64 epoch seconds (UTC), ``weight`` float32, the
    strength (5.0 for a purchase, 1.0 for a page view, or a rating), and
    ``seen`` bool: the user has had the item (bought, rated), so it is never
    recommended to them again. A view is not seen.
    """

    user_codes: np.ndarray
    user_vocab: np.ndarray
    item_codes: np.ndarray
    item_vocab: np.ndarray
    timestamp: np.ndarray
    weight: np.ndarray
    seen: np.ndarray

    def __len__(self) -> int:
        return int(self.user_codes.shape[0])

    @property
    def user_id(self) -> np.ndarray:
        """Return the user id of every row (materialised; avoid on hot paths)."""
        return self.user_vocab[self.user_codes]

    @property
    def item_id(self) -> np.ndarray:
        """Return the item id of every row (materialised; avoid on hot paths)."""
        return self.item_vocab[self.item_codes]

    def subset(self, mask: np.ndarray) -> "Interactions":
        """Return the rows selected by a boolean mask or index array, sharing vocabularies."""
        return Interactions(self.user_codes[mask], self.user_vocab, self.item_codes[mask],
                            self.item_vocab, self.timestamp[mask], self.weight[mask],
                            self.seen[mask])

    @classmethod
    def from_arrays(cls, user_id, item_id, timestamp, weight=None,
                    seen=None) -> "Interactions":
        """Build from parallel arrays of ids, epoch-second timestamps, optional weights and seen.

        Without weights every row weighs ``DEFAULT_WEIGHT``; without ``seen``
        every row is seen.
        """
        user_vocab, user_codes = np.unique(np.asarray(user_id, dtype=str), return_inverse=True)
        item_vocab, item_codes = np.unique(np.asarray(item_id, dtype=str), return_inverse=True)
        timestamp = np.asarray(timestamp, dtype=np.float64)
        if weight is None:
            weight = np.full(timestamp.shape, DEFAULT_WEIGHT, dtype=np.float32)
        seen = np.ones(timestamp.shape, dtype=bool) if seen is None else np.asarray(seen, bool)
        return cls(user_codes.astype(np.int32), user_vocab, item_codes.astype(np.int32),
                   item_vocab, timestamp, np.asarray(weight, dtype=np.float32), seen)


@dataclass(frozen=True, eq=False)
class Catalogue:
    """Item metadata; ``starts_at`` is epoch seconds, ``+inf`` when unknown (always listed).

    ``city``, ``performer`` and ``venue`` are optional (``None`` when the items
    file has no such column); ``available`` is False for an event marked sold
    out or cancelled (an ``available`` or ``status`` column), None when unknown.
    """

    item_id: np.ndarray
    title: np.ndarray
    category: np.ndarray
    starts_at: np.ndarray
    city: np.ndarray | None = None
    performer: np.ndarray | None = None
    venue: np.ndarray | None = None
    available: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.item_id.shape[0])


def parse_timestamp(text: str) -> float:
    """Return epoch seconds for ISO 8601 (naive means UTC) or epoch-second text.

    Raises ValueError when the text is neither.
    """
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    return parse_iso(text)


def parse_iso(text: str) -> float:
    """Return epoch seconds for ISO 8601 text (naive means UTC); raises ValueError otherwise."""
    stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def _timestamps(values: list[str], rows: list[int] | None, name: str,
                allow_empty: bool = False) -> np.ndarray:
    """Parse a column of timestamps; the common all-epoch case is one numpy call."""
    if not allow_empty:
        try:
            out = np.asarray(values, dtype=np.float64)
            if np.isfinite(out).all():
                return out
        except ValueError:
            pass
    out = np.empty(len(values), dtype=np.float64)
    cache: dict[str, float] = {}
    for i, text in enumerate(values):
        value = cache.get(text)
        if value is None:
            if allow_empty and not text.strip():
                value = math.inf
            else:
                try:
                    value = parse_timestamp(text)
                except (ValueError, OverflowError, OSError):
                    row = rows[i] if rows is not None else i + 2
                    raise DataError(f"{name}, row {row}: timestamp {text!r} is not ISO 8601 "
                                    "or epoch seconds") from None
            cache[text] = value
        out[i] = value
    return out


def _ids(values: np.ndarray, label: str, name: str, lines: list[int]) -> np.ndarray:
    """Check a column of ids: none empty, none a float written by a data frame ("12.0")."""
    empty = np.flatnonzero(np.char.str_len(np.char.strip(values)) == 0)
    if empty.size:
        raise DataError(f"{name}, row {lines[empty[0]]}: empty {label}")
    for i, text in enumerate(values.tolist()):
        if text[-1:].isdigit() and _FLOAT_ID.match(text):
            raise DataError(f"{name}, row {lines[i]}: {label} {text!r} looks like a float "
                            "written by a data frame; ids are strings, write them as integers "
                            f"({text.split('.')[0]!r}) or text")
        if i >= 1000:  # ids of one column are written alike
            break
    return values


def _weights(raw: tuple[str, ...], name: str, lines: list[int]) -> np.ndarray:
    """Parse the weight column: finite numbers >= 0."""
    try:
        weight = np.asarray(raw, dtype=np.float64)
    except ValueError:
        for i, text in enumerate(raw):
            try:
                float(text)
            except ValueError:
                raise DataError(f"{name}, row {lines[i]}: weight {text!r} is not a "
                                "number") from None
        weight = np.array([float(text) for text in raw])
    bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
    if bad.size:
        raise DataError(f"{name}, row {lines[bad[0]]}: weight {raw[bad[0]]!r} must be a "
                        "finite number >= 0")
    return weight.astype(np.float32)


def load_interactions(path: str | Path, columns: dict[str, str] | None = None,
                      seen_kinds: tuple[str, ...] = SEEN_KINDS) -> Interactions:
    """Read an interactions CSV (``user_id,item_id,timestamp[,weight][,interaction]``).

    Without a ``weight`` column every row weighs 5.0. With an ``interaction``
    column the rows of a kind in ``seen_kinds`` are seen; without one every
    row is (see the module docstring). ``columns`` maps the file's column
    names to Lineup's (None: :data:`COLUMN_ALIASES`).
    """
    name, header, rows, lines = read_table(path, INTERACTION_COLUMNS, columns)
    table = dict(zip(header, zip(*rows)))
    users = _ids(np.asarray(table["user_id"], dtype=str), "user_id", name, lines)
    items = _ids(np.asarray(table["item_id"], dtype=str), "item_id", name, lines)
    timestamp = _timestamps(list(table["timestamp"]), lines, name)
    weight = _weights(table["weight"], name, lines) if "weight" in header else None
    seen = None
    if "interaction" in header:
        kinds = np.char.lower(np.char.strip(np.asarray(table["interaction"], dtype=str)))
        seen = np.isin(kinds, [kind.strip().lower() for kind in seen_kinds])
        logger.info("%s: %d of %d rows are seen (interaction in %s)", name, int(seen.sum()),
                    seen.size, ",".join(seen_kinds))
    return Interactions.from_arrays(users, items, timestamp, weight, seen)


def load_items(path: str | Path, columns: dict[str, str] | None = None) -> Catalogue:
    """Read an items CSV (``item_id[,title,category,starts_at,city,performer,venue]``).

    An ``available`` (true/false) or ``status`` (``sold_out``, ``cancelled``...)
    column says which events are on sale; other columns are ignored.

    A missing or empty ``starts_at`` means the item is always available (``+inf``).
    """
    name, header, rows, lines = read_table(path, ITEM_COLUMNS, columns)
    table = dict(zip(header, zip(*rows)))
    item_id = _ids(np.asarray(table["item_id"], dtype=str), "item_id", name, lines)
    order = np.argsort(item_id, kind="stable")
    dup = np.flatnonzero(item_id[order][1:] == item_id[order][:-1])
    if dup.size:
        first, second = order[dup[0]], order[dup[0] + 1]
        raise DataError(f"{name}, row {lines[second]}: duplicate item_id {str(item_id[second])!r} "
                        f"(first on row {lines[first]})")

    def column(col: str, default: np.ndarray) -> np.ndarray:
        if col not in header:
            return default
        values = np.asarray(table[col], dtype=str)
        return np.where(np.char.str_len(values) > 0, values, default)

    title = column("title", item_id)
    category = column("category", np.full(item_id.shape, UNKNOWN_CATEGORY))
    if "starts_at" in header:
        starts_at = _timestamps(list(table["starts_at"]), lines, name,
                                allow_empty=True)
    else:
        starts_at = np.full(item_id.shape, np.inf)
    optional = {name: column(name, np.full(item_id.shape, ""))[order]
                for name in ("city", "performer", "venue") if name in header}
    try:
        available = item_status.on_sale(header, [table[col] for col in header])
    except item_status.BadAvailability as exc:
        raise DataError(f"{name}, row {lines[exc.index]}: {exc}") from None
    return Catalogue(item_id[order], title[order], category[order], starts_at[order],
                     available=None if available is None else available[order], **optional)
