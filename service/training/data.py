"""Read and validate the interactions and items CSVs into integer-coded numpy arrays.

The containers are small frozen dataclasses of numpy arrays. Strings are held
once in a sorted vocabulary and referred to by ``int32`` codes, so that the
500,000-row interactions table pickles in milliseconds when Metaflow moves it
between steps.

Every problem with a file raises :class:`DataError` with a message naming the
file, the row (the line number in the file; the header is row 1) and what was
wrong, for example::

    interactions.csv, row 17: timestamp 'yesterday' is not ISO 8601 or epoch seconds
"""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from service.training import item_status

#: Weight of a row in an interactions file that has no ``weight`` column.
DEFAULT_WEIGHT = 5.0

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id",)
UNKNOWN_CATEGORY = "unknown"


class DataError(ValueError):
    """A training input file is missing, empty or malformed."""


@dataclass(frozen=True, eq=False)
class Interactions:
    """User-item events: ``user_vocab[user_codes[i]]`` did something to ``item_vocab[...]``.

    ``timestamp`` is float64 epoch seconds (UTC) and ``weight`` float32
    (5.0 for a purchase, 1.0 for a page view by default).
    """

    user_codes: np.ndarray
    user_vocab: np.ndarray
    item_codes: np.ndarray
    item_vocab: np.ndarray
    timestamp: np.ndarray
    weight: np.ndarray

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
                            self.item_vocab, self.timestamp[mask], self.weight[mask])

    @classmethod
    def from_arrays(cls, user_id, item_id, timestamp, weight=None) -> "Interactions":
        """Build from parallel arrays of ids, epoch-second timestamps and optional weights."""
        user_vocab, user_codes = np.unique(np.asarray(user_id, dtype=str), return_inverse=True)
        item_vocab, item_codes = np.unique(np.asarray(item_id, dtype=str), return_inverse=True)
        timestamp = np.asarray(timestamp, dtype=np.float64)
        if weight is None:
            weight = np.full(timestamp.shape, DEFAULT_WEIGHT, dtype=np.float32)
        return cls(user_codes.astype(np.int32), user_vocab, item_codes.astype(np.int32),
                   item_vocab, timestamp, np.asarray(weight, dtype=np.float32))


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


@contextlib.contextmanager
def local_copies(*paths: str) -> Iterator[list[str]]:
    """Yield the paths as local files, fetching ``s3://`` ones with Metaflow's S3 client.

    A fetched file keeps its base name, so validation errors still name the
    file the operator gave. Empty paths stay empty.
    """
    remote = [path for path in paths if path.startswith("s3://")]
    if not remote:
        yield list(paths)
        return
    from metaflow import S3

    with tempfile.TemporaryDirectory(prefix="lineup-data-") as folder, S3() as s3:
        local = {}
        for index, url in enumerate(remote):
            obj = s3.get(url, return_missing=True)
            if not obj.exists:
                raise DataError(f"{url}: file not found")
            target = Path(folder, str(index), url.rsplit("/", 1)[-1])
            target.parent.mkdir()
            shutil.copyfile(obj.path, target)
            local[url] = str(target)
        yield [local.get(path, path) for path in paths]


def _read(path: str | Path, required: tuple[str, ...]):
    """Return (name, header, rows, line numbers) of a CSV file with the required columns."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise DataError(f"{name}: file not found ({path})")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise DataError(f"{name}: file is empty, expected a header row with columns "
                            + ",".join(required))
        header = [cell.strip() for cell in header]
        missing = [col for col in required if col not in header]
        if missing:
            raise DataError(f"{name}, row 1: missing column(s) {','.join(missing)}; "
                            f"header is {','.join(header)!r}, expected {','.join(required)}")
        width = len(header)
        rows = []
        lines = []
        for row in reader:
            if len(row) != width:
                if not row:  # blank line
                    continue
                raise DataError(f"{name}, row {reader.line_num}: expected {width} fields, "
                                f"got {len(row)}")
            rows.append(row)
            lines.append(reader.line_num)
    if not rows:
        raise DataError(f"{name}: file has a header but no data rows")
    return name, header, rows, lines


def load_interactions(path: str | Path) -> Interactions:
    """Read an interactions CSV (``user_id,item_id,timestamp[,weight]``) and validate it.

    Without a ``weight`` column every row counts as a purchase (weight 5.0).
    """
    name, header, rows, lines = _read(path, INTERACTION_COLUMNS)
    columns = list(zip(*rows))
    users = np.asarray(columns[header.index("user_id")], dtype=str)
    items = np.asarray(columns[header.index("item_id")], dtype=str)
    for label, values in (("user_id", users), ("item_id", items)):
        empty = np.flatnonzero(np.char.str_len(np.char.strip(values)) == 0)
        if empty.size:
            raise DataError(f"{name}, row {lines[empty[0]]}: empty {label}")
    timestamp = _timestamps(list(columns[header.index("timestamp")]), lines, name)
    if "weight" in header:
        raw = columns[header.index("weight")]
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
        weight = weight.astype(np.float32)
    else:
        weight = None
    return Interactions.from_arrays(users, items, timestamp, weight)


def load_items(path: str | Path) -> Catalogue:
    """Read an items CSV (``item_id[,title,category,starts_at,city,performer,venue]``).

    An ``available`` (true/false) or ``status`` (``sold_out``, ``cancelled``...)
    column says which events are on sale; other columns are ignored.

    A missing or empty ``starts_at`` means the item is always available (``+inf``).
    """
    name, header, rows, lines = _read(path, ITEM_COLUMNS)
    columns = list(zip(*rows))
    item_id = np.asarray(columns[header.index("item_id")], dtype=str)
    empty = np.flatnonzero(np.char.str_len(np.char.strip(item_id)) == 0)
    if empty.size:
        raise DataError(f"{name}, row {lines[empty[0]]}: empty item_id")
    order = np.argsort(item_id, kind="stable")
    dup = np.flatnonzero(item_id[order][1:] == item_id[order][:-1])
    if dup.size:
        first, second = order[dup[0]], order[dup[0] + 1]
        raise DataError(f"{name}, row {lines[second]}: duplicate item_id {str(item_id[second])!r} "
                        f"(first on row {lines[first]})")

    def column(col: str, default: np.ndarray) -> np.ndarray:
        if col not in header:
            return default
        values = np.asarray(columns[header.index(col)], dtype=str)
        return np.where(np.char.str_len(values) > 0, values, default)

    title = column("title", item_id)
    category = column("category", np.full(item_id.shape, UNKNOWN_CATEGORY))
    if "starts_at" in header:
        starts_at = _timestamps(list(columns[header.index("starts_at")]), lines, name,
                                allow_empty=True)
    else:
        starts_at = np.full(item_id.shape, np.inf)
    optional = {name: column(name, np.full(item_id.shape, ""))[order]
                for name in ("city", "performer", "venue") if name in header}
    try:
        available = item_status.on_sale(header, columns)
    except item_status.BadAvailability as exc:
        raise DataError(f"{name}, row {lines[exc.index]}: {exc}") from None
    return Catalogue(item_id[order], title[order], category[order], starts_at[order],
                     available=None if available is None else available[order], **optional)
