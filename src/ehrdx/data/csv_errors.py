"""What went wrong with a CSV, said as a user can fix it: polars' own message for a row with more fields than
the header ("found more fields than defined in 'Schema'") names neither the row nor the cause, most often a
value holding the separator unquoted (`5,5`); a row with fewer fields polars fills with nulls without a word
(its last columns read as empty: a measurement without its value), so such rows are looked for here; a column
not found may be a header in another separator or with spaces around a name. A blank line polars reads as a
row of empty cells ("empty subject ids", row N); it is no row (the csv module, pandas and R skip it too), so it is
skipped here (`without_blank_lines`) and rows are counted without it."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.errors import DataError, reader_detail

RAGGED = "more fields than defined"  # polars' words for a row longer than the header


def long_rows(path: Path, separator: str = ",", limit: int = 5, *, shorter: bool = False
              ) -> tuple[int, list[int], list[int]]:
    """The header's field count, and the first `limit` data rows (0-based, as DataError counts them) with more
    fields (fewer with `shorter`), with their line numbers in the file. Read with the csv module, so quoted
    separators and line breaks inside a quoted field count as polars counts them; a blank line is no row, as
    in the table read (`without_blank_lines`: a one-column file keeps them)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    rows, lines = [], []
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=separator)
        width = len(next(reader, []))
        records = (record for record in reader if record or width < 2)
        for i, record in enumerate(records):
            if (0 < len(record) < width) if shorter else len(record) > width:
                rows.append(i)
                lines.append(reader.line_num)
                if len(rows) == limit:
                    break
    return width, rows, lines


def may_have_short_rows(path: Path, separator: str = ",") -> bool:
    """Whether a line of the file may be a row with fewer fields than the header: one pass of polars' line
    reader (a few times faster than reading the table), counting separators outside quoted text. True also
    where a quote is left open on its line (a quoted field across lines), or the lines cannot be read: the
    csv module then decides."""
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(
                path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            width = len(next(csv.reader(f, delimiter=separator), []))
        line = pl.col("line")
        fields = line.str.replace_all('"[^"]*"', "").str.count_matches(separator, literal=True) + 1
        suspect = (line.str.count_matches('"', literal=True) % 2 == 1) | (
            (fields < width) & (line.str.strip_chars() != ""))
        return pl.scan_lines(path, glob=False).slice(1).filter(suspect).head(1).collect().height > 0
    except (pl.exceptions.PolarsError, OSError, csv.Error, EOFError):
        return True


def short_rows_error(path: str | Path, separator: str = ",") -> DataError | None:
    """The DataError for rows with fewer fields than the header (None when there is none): polars reads them
    with their last columns empty, without a word; almost always an export cut short or broken. The csv
    module names the rows only when the line scan finds a suspect, so a good file is read once more, quickly."""
    path = Path(path)
    if not may_have_short_rows(path, separator):
        return None
    try:
        width, rows, lines = long_rows(path, separator, shorter=True)
    except (OSError, csv.Error, EOFError):
        return None
    if not rows:
        return None
    return DataError(f"a row has fewer fields than the header's {width} ({file_lines(lines)})"
                     f": its last columns would be read as empty; most often an export cut short or broken",
                     file=str(path), rows=rows,
                     fix=f"export the table again; an empty value still needs its separator (such as "
                         f"1{separator}2020-01-01{separator}{separator} for two empty last columns)")


def blank_rows(path: str | Path, separator: str = ",") -> list[int]:
    """The 0-based rows that polars makes of the file's blank lines (outside quoted fields), each a row of empty
    cells; [] when there is none, or when the csv module does not count the rows as polars does. One quick pass
    of polars' line reader first: a file without an empty line is not read again."""
    path = Path(path)
    try:
        if pl.scan_lines(path, glob=False).slice(1).filter(
                pl.col("line").str.strip_chars_end("\r") == "").head(1).collect().height == 0:
            return []
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.reader(f, delimiter=separator)
            next(reader, None)
            return [i for i, record in enumerate(reader) if not record]
    except (pl.exceptions.PolarsError, OSError, csv.Error, EOFError):
        return []


def without_blank_lines(frame: pl.DataFrame, path: str | Path, separator: str = ",") -> pl.DataFrame:
    """`frame` (a CSV just read) without the rows of empty cells polars made of blank lines. A row of empty
    fields that is written out (`,,`) stays: it is a row, and the checks after say what is missing in it. Only
    where every row said blank is empty in `frame` (the files' rows counted alike); a one-column file keeps its
    blank lines (an empty value there)."""
    if frame.width < 2 or not frame.select(pl.all_horizontal(pl.all().is_null()).any()).item():
        return frame
    rows = blank_rows(path, separator)
    if not rows or rows[-1] >= frame.height:
        return frame
    empty = frame[rows].select(pl.all_horizontal(pl.all().is_null()).all()).item()
    if not empty:
        return frame
    keep = np.ones(frame.height, dtype=bool)
    keep[rows] = False
    return frame.filter(pl.Series(keep))


def file_lines(lines: list[int]) -> str:
    """'file line 3' or 'file lines 3, 7'."""
    return f"file line{'s' * (len(lines) > 1)} {', '.join(str(n) for n in lines)}"


def check_short_rows(frame: pl.DataFrame, path: str | Path, separator: str = ",") -> None:
    """Raise the short rows' DataError for a CSV just read into `frame`. A short row leaves the last column
    empty, so a file whose last column is never empty is not read again."""
    if frame.width > 1 and frame.get_column(frame.columns[-1]).null_count():
        error = short_rows_error(path, separator)
        if error is not None:
            raise error


def csv_read_error(path: str | Path, exc: Exception, *, separator: str = ",",
                   problem: str = "could not be read") -> DataError:
    """The DataError for a CSV polars failed on: a row longer than the header is named, with the fix."""
    path = Path(path)
    if RAGGED in str(exc):
        try:
            width, rows, lines = long_rows(path, separator)
        except (OSError, csv.Error, EOFError):
            width, rows, lines = 0, [], []
        other = other_separator(path, separator) if width == 1 else None
        if rows and other is not None:
            return other_separator_error(path, separator, other, f" ({file_lines(lines)} have more fields, split at "
                                                                 f"{separator!r})", rows)
        if rows:
            return DataError(f"a row has more fields than the header's {width} ({file_lines(lines)}), most often a value holding the separator {separator!r} unquoted, such as 5,5",
                             file=str(path), rows=rows,
                             fix=f'quote such a value ("5,5"), write it with a decimal point (5.5), or remove the '
                                 f"extra {separator!r}")
    return DataError(f"{problem} ({reader_detail(exc)})", file=str(path))


SEPARATOR_NAMES = {",": "comma", "\t": "tab"}


def other_separator(path: Path, separator: str) -> str | None:
    """The separator other than `separator` that the file's first line holds (None when none does)."""
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(
                path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            first = f.readline()
    except (OSError, EOFError):
        return None
    return next((sep for sep in (";", "\t", "|") if sep != separator and sep in first), None)


def other_separator_error(path: Path, separator: str, other: str, detail: str = "",
                          rows: list[int] | None = None) -> DataError:
    """One header field holding another separator: an Excel export in a locale whose separator is ';'."""
    return DataError(f"the header is one field holding {other!r}{detail}: the file seems to be {other!r}-separated",
                     file=str(path), rows=rows, fix=f"write it {SEPARATOR_NAMES.get(separator, repr(separator))}"
                     "-separated" + " (in Excel: Save As 'CSV UTF-8 (Comma delimited)')" * (separator == ","))


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
