"""What went wrong with a CSV, said as a user can fix it: polars' own message for a row with more fields than
the header ("found more fields than defined in 'Schema'") names neither the row nor the cause, most often a
value holding the separator unquoted (`5,5`); a column not found may be a header in another separator or
with spaces around a name."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

from ehrdx.errors import DataError, reader_detail

RAGGED = "more fields than defined"  # polars' words for a row longer than the header


def long_rows(path: Path, separator: str = ",", limit: int = 5) -> tuple[int, list[int], list[int]]:
    """The header's field count, and the first `limit` data rows (0-based, as DataError counts them) with more
    fields, with their line numbers in the file. Read with the csv module, so quoted separators and line breaks
    inside a quoted field count as polars counts them."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    rows, lines = [], []
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=separator)
        width = len(next(reader, []))
        for i, record in enumerate(reader):
            if len(record) > width:
                rows.append(i)
                lines.append(reader.line_num)
                if len(rows) == limit:
                    break
    return width, rows, lines


def csv_read_error(path: str | Path, exc: Exception, *, separator: str = ",",
                   problem: str = "could not be read") -> DataError:
    """The DataError for a CSV polars failed on: a row longer than the header is named, with the fix."""
    path = Path(path)
    if RAGGED in str(exc):
        try:
            width, rows, lines = long_rows(path, separator)
        except (OSError, csv.Error, EOFError):
            width, rows, lines = 0, [], []
        if rows:
            at = ", ".join(str(n) for n in lines)
            return DataError(f"a row has more fields than the header's {width} (file line{'s' * (len(lines) > 1)} "
                             f"{at}), most often a value holding the separator {separator!r} unquoted, such as 5,5",
                             file=str(path), rows=rows,
                             fix=f'quote such a value ("5,5"), write it with a decimal point (5.5), or remove the '
                                 f"extra {separator!r}")
    return DataError(f"{problem} ({reader_detail(exc)})", file=str(path))


def header_hint(col: str, columns: list[str]) -> str | None:
    """What a header without `col` suggests went wrong, as a fix (None when nothing does): spaces around the
    name, or another separator than the comma (one column holding the whole header)."""
    spaced = [c for c in columns if c != col and c.strip() == col]
    if spaced:
        return f"the header has {spaced[0]!r} with spaces around the name: remove them"
    if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
        return "the file seems to use another separator than the comma (one column holds the whole header): " \
               "write it comma-separated"
    return None
