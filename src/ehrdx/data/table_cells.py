"""The cells and column names of a patient table: list cells (codes, labels), numeric cells, and the
checks that keep data out of column names and identifiers out of features. Used by table.py, which
reads the file and infers each column's role."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import polars as pl

from ehrdx.data.spelling import spelling_clashes
from ehrdx.errors import DataError, how_to_show_ids, ident, identifiers_shown

ID_NAMES = ("patient_id", "subject_id", "person_id", "patient", "id")
LABEL_NAMES = ("diseases", "labels", "label", "targets", "target", "disease")


def find_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def looks_like_code_list(values: pl.Series) -> bool:
    s = values.drop_nulls().cast(pl.Utf8).str.strip_chars()
    if s.len() == 0:
        return False
    return bool((s.str.starts_with("[") | s.str.contains(";", literal=True)).any())


def numeric_share(values: pl.Series) -> float:
    s = values.drop_nulls().cast(pl.Utf8).str.strip_chars()
    s = s.filter(s != "")
    if s.len() == 0:
        return 0.0
    parsed = s.cast(pl.Float64, strict=False)
    return float(parsed.is_not_null().sum()) / s.len()


FORMATTED_NUMBER = r"^[-+]?(\d{1,3}(,\d{3})+(\.\d+)?|\d+(\.\d+)?\s*%)$"  # 2,146 or 12.5%: an Excel display


def formatted_number_rows(values: pl.Series) -> list[int]:
    """The rows of a text column holding numbers written for display (thousands separators, percent signs),
    where such cells and plain numbers make up at least 80% of its non-empty cells ([] otherwise): a
    measurement that would be read as a category, or left out as identifier-like."""
    if values.dtype != pl.Utf8:
        return []
    s = values.str.strip_chars()
    filled = s.is_not_null() & (s != "")
    formatted = (s.str.contains(FORMATTED_NUMBER) & filled).fill_null(False)
    plain = s.cast(pl.Float64, strict=False).is_not_null()
    n = int(filled.sum())
    if not formatted.any() or n == 0 or int((formatted | plain).sum()) < 0.8 * n:
        return []
    return np.flatnonzero(formatted.to_numpy()).tolist()


def parse_code_list(value: object) -> list[str] | None:
    """Parse one cell holding a list of codes: a JSON list, a ';'-separated string, or a list.

    Returns None when the cell cannot be parsed. Empty cells are an empty list (no codes is valid).
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, pl.Series):
        items = value.to_list()
    else:
        text = str(value).strip()
        if text == "":
            return []
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                # Python-style lists with single quotes are common in exports: accept them too.
                try:
                    items = json.loads(text.replace("'", '"'))
                except json.JSONDecodeError:
                    return None
            if not isinstance(items, list):
                return None
        else:
            items = text.split(";")
    out = []
    for it in items:
        if it is None or isinstance(it, (list, dict)):
            return None
        if isinstance(it, float) and not math.isfinite(it):
            return None
        code = str(it).strip()
        if code:
            out.append(code)
    # A code listed twice in one cell is one code: keep first-seen order.
    return list(dict.fromkeys(out))


def parse_code_column(frame: pl.DataFrame, column: str, file: str, labels: bool = False) -> list[list[str]]:
    raw = frame.get_column(column).to_list()
    parsed, bad, bad_values = [], [], []
    for i, v in enumerate(raw):
        p = parse_code_list(v)
        if p is None:
            bad.append(i)
            bad_values.append(v)
            parsed.append([])
        else:
            parsed.append(p)
    if bad:
        raise DataError(
            f"{len(bad)} cell(s) are not a code list",
            file=file,
            column=column,
            rows=bad,
            values=bad_values,
            fix='write each cell as a JSON list like ["D1","D2"] or as D1;D2 (empty cell = no codes)',
        )
    check_list_cells(raw, parsed, column, file, names_shown=labels)
    return parsed


def check_list_cells(raw: list, parsed: list[list[str]], column: str, file: str, names_shown: bool = False) -> None:
    """Refuse what would otherwise be guessed: a comma in a plain-text cell (an Excel-style list such as
    ``D1,D4`` would become one code) and names that differ only in case (``Disease_A`` and ``disease_a``
    would become two labels). Surrounding spaces are already stripped by :func:`parse_code_list`.
    Label names are not patient data: their clashing spellings are named (codes only with --show-ids)."""
    commas = [i for i, v in enumerate(raw)
              if isinstance(v, str) and not v.strip().startswith("[") and "," in v]
    if commas:
        raise DataError(
            f"{len(commas)} cell(s) hold a comma: the list separator is ';' (or a JSON list), so a cell like "
            "D1,D4 would be read as one name",
            file=file,
            column=column,
            rows=commas,
            values=[raw[i] for i in commas[:5]],
            fix='separate names with ";" (D1;D4), or write a JSON list ["D1","D4"]; a name that really '
            'contains a comma must be written inside a JSON list (["Diabetes, type 2"])',
        )
    clashes = spelling_clashes(name for names in parsed for name in names)
    if clashes:
        rows = [i for i, names in enumerate(parsed)
                if any(n in spellings[1:] for spellings in clashes for n in names)]
        shown = "; ".join(" / ".join(repr(s) if names_shown else ident(s) for s in spellings)
                          for spellings in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise DataError(
            f"{len(clashes)} name(s) are spelled in more than one case ({shown}{more}): they would become "
            "separate labels or codes",
            file=file,
            column=column,
            rows=rows,
            fix="write each name one way everywhere (names are case-sensitive; surrounding spaces are ignored)",
        )


def numeric_column(frame: pl.DataFrame, column: str, file: str) -> np.ndarray:
    s = frame.get_column(column)
    if s.dtype == pl.Boolean:
        s = s.cast(pl.Float64)
    if not s.dtype.is_numeric():
        text = s.cast(pl.Utf8).str.strip_chars()
        parsed = text.cast(pl.Float64, strict=False)
        bad_mask = (parsed.is_null() & text.is_not_null() & (text != "")).to_numpy()
        if bad_mask.any():
            rows = np.flatnonzero(bad_mask).tolist()
            shown = text.gather(rows)
            displayed = int(shown.str.contains(FORMATTED_NUMBER).sum())  # 2,146 or 12%: a number formatted by Excel
            raise DataError(
                f"text in a numeric column ({len(rows)} cell(s) are not numbers"
                + (f"; {displayed} written for display, with a thousands separator or a percent sign, such as "
                   "2,146 or 12%" if displayed else "") + ")",
                file=file,
                column=column,
                rows=rows,
                values=[text[i] for i in rows[:5]],
                fix=("write plain numbers (2146, 12), " if displayed else "")
                + "correct or empty those cells (an empty cell is a missing value), or declare the column categorical",
            )
        s = parsed
    arr = s.cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
    # polars gives NaN for nulls after to_numpy on floats; distinguish real NaN/inf written in the file.
    null_mask = s.is_null().to_numpy()
    bad_mask = ~np.isfinite(arr) & ~null_mask
    if bad_mask.any():
        rows = np.flatnonzero(bad_mask).tolist()
        raise DataError(
            f"NaN or infinite values ({len(rows)} cell(s))",
            file=file,
            column=column,
            rows=rows,
            values=[float(arr[i]) for i in rows[:5]],
            fix="leave a cell empty for a missing value; ehrdx imputes it and adds a missing indicator",
        )
    arr[null_mask] = np.nan
    return arr


# -- column names that are data ------------------------------------------------------------------------
# A file without a header row makes its first patient's cells the column names. Names are treated as data
# until proven otherwise: a header with no known id or label name where at least half of the names are
# numbers or dates (987654321, 68, 123.4567, 2020-01-31) is taken for a data row, and never printed
# without --show-ids.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}([ T].*)?|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}")


def header_looks_like_data(columns: list[str]) -> bool:
    """True when the column names look like a row of cell values (the file seems to have no header row)."""
    if not columns or find_column(columns, ID_NAMES) or find_column(columns, LABEL_NAMES):
        return False
    names = [re.sub(r"_duplicated_\d+$", "", c).strip() for c in columns]
    valueish = sum(bool(_NUMBER.fullmatch(n) or _DATE.fullmatch(n)) for n in names)
    return valueish > 0 and 2 * valueish >= len(names)


def column_names_text(columns: list[str]) -> str:
    """The column names for a message: hidden (without --show-ids) when they look like data."""
    if header_looks_like_data(columns) and not identifiers_shown():
        return (f"{len(columns)} names hidden: they look like data, not a header; {how_to_show_ids()} to see them")
    return ", ".join(columns)


def some_names(names: list[str], shown: int = 5) -> str:
    """The first `shown` names for a message, then "and K more" (hidden, as column_names_text, when they
    look like data)."""
    if header_looks_like_data(names) and not identifiers_shown():
        return f"{len(names)} names hidden: they look like data; {how_to_show_ids()} to see them"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def no_header_error(columns: list[str], file: str) -> DataError:
    shown = f" (columns: {', '.join(columns)})" if identifiers_shown() else ""
    return DataError(
        f"the file seems to have no header row: its column names look like values (numbers or dates), "
        f"as when the first patient's row is read as the header{shown}",
        file=file,
        fix="add a first row naming the columns, e.g. patient_id,age,sex,diseases (or name the id column "
        "with --id-col if those really are the names)",
    )


# -- identifier-like columns -----------------------------------------------------------------------------
# A column whose values are (almost) unique per patient is an identifier (an MRN, a record number, a
# date of admission), not a feature: as a category every value would be stored in the model. The rule:
# at least IDENTIFIER_MIN_ROWS non-empty cells, more than IDENTIFIER_DISTINCT_SHARE of them distinct, and
# the column is text (a would-be category or a one-code-per-cell code column) or whole numbers that all
# have 5 or more digits. Measurements (decimals, or integers below 10,000 such as ages, counts and most lab
# values) never qualify, however distinct they are.
IDENTIFIER_MIN_ROWS = 20
IDENTIFIER_DISTINCT_SHARE = 0.9
IDENTIFIER_MIN_INTEGER = 10_000


def distinct_share(values: pl.Series) -> tuple[int, float]:
    """(non-empty cells, share of them that are distinct)."""
    s = values.drop_nulls()
    if s.dtype == pl.Utf8:
        s = s.str.strip_chars()
        s = s.filter(s != "")
    return s.len(), (s.n_unique() / s.len() if s.len() else 0.0)


def identifier_like(values: pl.Series) -> bool:
    """True for a text or large-integer column whose values are (almost) unique per row (see above)."""
    if values.dtype.is_float() or values.dtype == pl.Boolean or isinstance(values.dtype, pl.List):
        return False
    if values.dtype.is_integer():
        s = values.drop_nulls()
        if s.len() == 0 or int(s.abs().min()) < IDENTIFIER_MIN_INTEGER:
            return False
    elif values.dtype != pl.Utf8:
        values = values.cast(pl.Utf8)
    n, share = distinct_share(values)
    return n >= IDENTIFIER_MIN_ROWS and share > IDENTIFIER_DISTINCT_SHARE


def identifier_error(column: str, values: pl.Series, file: str) -> DataError:
    n, share = distinct_share(values.cast(pl.Utf8))
    return DataError(
        f"declared categorical, but {share:.0%} of its {n} non-empty values are distinct: it identifies "
        "patients rather than grouping them, and as a category every value would be stored in the model",
        file=file,
        column=column,
        fix="leave it out (drop it from --categorical, or --ignore it); if it holds a measurement, "
        "declare it --numeric",
    )
