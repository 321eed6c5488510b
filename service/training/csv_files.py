"""Read a CSV file's table: its encoding, its header and column names, its rows.

Every problem raises :class:`DataError` with a one-line message naming the
file, the row (the line number in the file; the header is row 1) and what
was wrong. Column names are matched after :data:`COLUMN_ALIASES` (so a
MovieLens ``userId,movieId,rating,timestamp`` header reads as it is) or an
explicit mapping. A file that is not UTF-8 is read as Latin-1, with a
warning naming its first non-UTF-8 row.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

#: Common column names read as Lineup's (when the file lacks Lineup's own name).
COLUMN_ALIASES = {
    "userid": "user_id", "user": "user_id", "customer_id": "user_id",
    "movieid": "item_id", "itemid": "item_id", "item": "item_id", "event_id": "item_id",
    "product_id": "item_id", "rating": "weight", "score": "weight", "strength": "weight",
    "time": "timestamp", "ts": "timestamp", "date": "timestamp", "datetime": "timestamp",
    "event_type": "interaction", "type": "interaction", "kind": "interaction",
    "action": "interaction", "genres": "category", "genre": "category",
}

#: A header cell that is a number: the file has no header row.
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class DataError(ValueError):
    """A training input file is missing, empty or malformed."""


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


def parse_columns(text: str) -> dict[str, str] | None:
    """Parse ``"userId=user_id,movieId=item_id"`` into a mapping; "auto" or "" gives None.

    None means the common names of :data:`COLUMN_ALIASES` are recognised.
    """
    text = text.strip()
    if text.lower() in ("", "auto"):
        return None
    mapping = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise DataError(f"column mapping {pair!r} is not file_column=lineup_column")
        mapping[source.strip()] = target.strip()
    return mapping


def _decode(raw: bytes, name: str) -> str:
    """Decode UTF-8 (with or without BOM); fall back to Latin-1, naming the first bad row."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        row = raw.count(b"\n", 0, error.start) + 1
        logger.warning("%s, row %d: byte 0x%02x is not UTF-8; reading the file as Latin-1",
                       name, row, raw[error.start])
        return raw.decode("latin-1")


def _header(cells: list[str], name: str, required: tuple[str, ...],
            columns: dict[str, str] | None) -> list[str]:
    """Return the header in Lineup's names, or raise a one-line DataError on a mismatch."""
    header = [cell.strip() for cell in cells]
    if columns is None:
        present = set(header)
        renamed = []
        for cell in header:
            alias = COLUMN_ALIASES.get(cell.lower().replace(" ", "_"))
            use = alias if alias and alias not in present and alias not in renamed else cell
            renamed.append(use)
    else:
        renamed = [columns.get(cell, cell) for cell in header]
    missing = [col for col in required if col not in renamed]
    if not missing:
        if renamed != header:
            logger.info("%s: read columns %s as %s", name, ",".join(header), ",".join(renamed))
        return renamed
    if all(_NUMBER.match(cell) for cell in header):
        raise DataError(f"{name}, row 1: {','.join(header)!r} looks like data, not a header; "
                        f"the file needs a header row naming {','.join(required)}")
    raise DataError(f"{name}, row 1: missing column(s) {','.join(missing)}; "
                    f"header is {','.join(header)!r}, expected {','.join(required)} "
                    "(map other names with --columns, e.g. userId=user_id,movieId=item_id)")


def read_table(path: str | Path, required: tuple[str, ...],
               columns: dict[str, str] | None = None):
    """Return (name, header, rows, line numbers) of a CSV file with the required columns.

    The header is returned in Lineup's column names (see :func:`_header`).
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise DataError(f"{name}: file not found ({path})")
    reader = csv.reader(io.StringIO(_decode(path.read_bytes(), name), newline=""))
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise DataError(f"{name}: file is empty, expected a header row with columns "
                        + ",".join(required))
    header = _header(header, name, required, columns)
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
