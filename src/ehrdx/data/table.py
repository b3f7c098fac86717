"""Read a patient table (one row per patient) from CSV or Parquet, infer column roles, validate.

This is the single validation layer for tables: everything after it trusts its arguments.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.spelling import spelling_clashes
from ehrdx.errors import DataError, ident, identifiers_shown, reader_detail

ID_NAMES = ("patient_id", "subject_id", "person_id", "patient", "id")
LABEL_NAMES = ("diseases", "labels", "label", "targets", "target", "disease")


@dataclass
class TableSchema:
    """Which column plays which role. Empty lists mean 'infer'."""

    id_column: str | None = None
    label_column: str | None = None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    # Columns left out because their values are (almost) unique per patient, like an MRN: see
    # identifier_like(). Inferred only; saved with the model so predict leaves them out too.
    identifier_like: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TableSchema:
        return cls(**d)

    def feature_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.codes]


@dataclass
class PatientTable:
    """A validated patient table: one row (one prediction time) per patient."""

    source: str
    schema: TableSchema
    patient_ids: list[str]
    numeric: np.ndarray  # [N, F] float64, NaN where the cell was empty
    categorical: dict[str, list[str | None]]
    codes: dict[str, list[list[str]]]
    labels: list[list[str]] | None
    notes: dict[str, int] = field(default_factory=dict)  # counted exclusions / oddities
    # The id column's type where it was an integer column (Parquet, a DataFrame); None: text, kept as given.
    id_dtype: pl.DataType | None = None

    def __len__(self) -> int:
        return len(self.patient_ids)

    def subset(self, rows: np.ndarray) -> PatientTable:
        rows = np.asarray(rows, dtype=np.int64)
        return PatientTable(
            source=self.source,
            schema=self.schema,
            patient_ids=[self.patient_ids[i] for i in rows],
            numeric=self.numeric[rows],
            categorical={k: [v[i] for i in rows] for k, v in self.categorical.items()},
            codes={k: [v[i] for i in rows] for k, v in self.codes.items()},
            labels=None if self.labels is None else [self.labels[i] for i in rows],
            notes=dict(self.notes),
            id_dtype=self.id_dtype,
        )

    def id_series(self) -> pl.Series:
        """The patient ids as they were given: text stays text (``007`` is not ``7``), integers stay integers."""
        ids = pl.Series(self.schema.id_column, self.patient_ids, dtype=pl.Utf8)
        return ids if self.id_dtype is None else ids.cast(self.id_dtype)


def _csv_ids_as_text(path: Path, sep: str, id_column: str | None) -> dict:
    """A CSV's patient id column is read as text, so that ``007`` stays ``007`` (and is not patient ``7``)."""
    try:
        columns = pl.scan_csv(path, separator=sep, infer_schema=False).collect_schema().names()
    except pl.exceptions.PolarsError:
        return {}  # the full read below reports what is wrong with the file
    id_col = id_column if id_column in columns else _find(columns, ID_NAMES)
    return {id_col: pl.Utf8} if id_col is not None else {}


def _read_frame(path: Path, id_column: str | None = None) -> pl.DataFrame:
    if not path.exists():
        raise DataError(
            "file not found", file=str(path), fix="check the path; tables are read from .csv or .parquet files"
        )
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path, glob=False)
        if suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            return pl.read_csv(path, glob=False, separator=sep, infer_schema_length=None, try_parse_dates=False,
                               schema_overrides=_csv_ids_as_text(path, sep, id_column))
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"could not be read as {suffix[1:]} ({reader_detail(exc)})", file=str(path)) from exc
    raise DataError(
        f"unsupported file type '{suffix}'", file=str(path), fix="give a .csv, .tsv or .parquet file"
    )


def _find(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def _looks_like_code_list(values: pl.Series) -> bool:
    s = values.drop_nulls().cast(pl.Utf8).str.strip_chars()
    if s.len() == 0:
        return False
    return bool((s.str.starts_with("[") | s.str.contains(";", literal=True)).any())


def _numeric_share(values: pl.Series) -> float:
    s = values.drop_nulls().cast(pl.Utf8).str.strip_chars()
    s = s.filter(s != "")
    if s.len() == 0:
        return 0.0
    parsed = s.cast(pl.Float64, strict=False)
    return float(parsed.is_not_null().sum()) / s.len()


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


def _parse_code_column(frame: pl.DataFrame, column: str, file: str, labels: bool = False) -> list[list[str]]:
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


def _numeric_column(frame: pl.DataFrame, column: str, file: str) -> np.ndarray:
    s = frame.get_column(column)
    if s.dtype == pl.Boolean:
        s = s.cast(pl.Float64)
    if not s.dtype.is_numeric():
        text = s.cast(pl.Utf8).str.strip_chars()
        parsed = text.cast(pl.Float64, strict=False)
        bad_mask = (parsed.is_null() & text.is_not_null() & (text != "")).to_numpy()
        if bad_mask.any():
            rows = np.flatnonzero(bad_mask).tolist()
            raise DataError(
                f"text in a numeric column ({len(rows)} cell(s) are not numbers)",
                file=file,
                column=column,
                rows=rows,
                values=[text[i] for i in rows[:5]],
                fix="correct or empty those cells (an empty cell is a missing value), "
                "or declare the column categorical",
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
    if not columns or _find(columns, ID_NAMES) or _find(columns, LABEL_NAMES):
        return False
    names = [re.sub(r"_duplicated_\d+$", "", c).strip() for c in columns]
    valueish = sum(bool(_NUMBER.fullmatch(n) or _DATE.fullmatch(n)) for n in names)
    return valueish > 0 and 2 * valueish >= len(names)


def column_names_text(columns: list[str]) -> str:
    """The column names for a message: hidden (without --show-ids) when they look like data."""
    if header_looks_like_data(columns) and not identifiers_shown():
        return (f"{len(columns)} names hidden: they look like data, not a header; ehrdx --show-ids shows them")
    return ", ".join(columns)


def _no_header_error(columns: list[str], file: str) -> DataError:
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


def _identifier_error(column: str, values: pl.Series, file: str) -> DataError:
    n, share = distinct_share(values.cast(pl.Utf8))
    return DataError(
        f"declared categorical, but {share:.0%} of its {n} non-empty values are distinct: it identifies "
        "patients rather than grouping them, and as a category every value would be stored in the model",
        file=file,
        column=column,
        fix="leave it out (drop it from --categorical, or --ignore it); if it holds a measurement, "
        "declare it --numeric",
    )


def infer_schema(frame: pl.DataFrame, given: TableSchema | None, file: str, require_labels: bool) -> TableSchema:
    """Fill in the roles the user did not set. Raises DataError for unknown or missing columns."""
    given = given or TableSchema()
    columns = frame.columns
    if given.id_column not in columns and header_looks_like_data(columns):
        raise _no_header_error(columns, file)
    named = [given.id_column, given.label_column, *given.numeric, *given.categorical, *given.codes, *given.ignore]
    for c in named:
        if c is not None and c not in columns:
            raise DataError(
                f"column '{c}' was named but is not in the file (columns: {column_names_text(columns)})",
                file=file,
                column=c,
                fix="check the spelling or the column flags",
            )
    id_col = given.id_column or _find(columns, ID_NAMES)
    if id_col is None:
        raise DataError(
            f"no patient id column found (looked for {', '.join(ID_NAMES)}; columns: {column_names_text(columns)})",
            file=file,
            fix="name the id column with --id-col (Python: TableSchema(id_column=...))",
        )
    label_col = given.label_column or _find([c for c in columns if c != id_col], LABEL_NAMES)
    if label_col is None and require_labels:
        raise DataError(
            f"no label column found (looked for {', '.join(LABEL_NAMES)}; "
            f"columns: {column_names_text(columns)})",
            file=file,
            fix="name the column holding each patient's disease list with --label-col",
        )
    for c in given.categorical:
        if identifier_like(frame.get_column(c).cast(pl.Utf8)):
            raise _identifier_error(c, frame.get_column(c), file)
    assigned = {id_col, label_col, *given.numeric, *given.categorical, *given.codes, *given.ignore}
    numeric, categorical, codes = list(given.numeric), list(given.categorical), list(given.codes)
    identifiers = []
    for c in columns:
        if c in assigned:
            continue
        s = frame.get_column(c)
        if identifier_like(s) and not (isinstance(s.dtype, pl.List) or _looks_like_code_list(s)):
            identifiers.append(c)
        elif s.dtype.is_numeric() or s.dtype == pl.Boolean:
            numeric.append(c)
        elif isinstance(s.dtype, pl.List) or _looks_like_code_list(s) or "code" in c.lower():
            codes.append(c)
        elif _numeric_share(s) >= 0.8:
            # Mostly numbers with a few words: a numeric column with typos, not a category.
            numeric.append(c)
        else:
            categorical.append(c)
    return TableSchema(
        id_column=id_col,
        label_column=label_col,
        numeric=numeric,
        categorical=categorical,
        codes=codes,
        ignore=list(given.ignore),
        identifier_like=identifiers,
    )


def _prediction_id_column(frame: pl.DataFrame, schema: TableSchema, file: str) -> TableSchema:
    """The trained schema with the id column of this table: the trained (or given) name where the table
    has it, else the first usual id name that is not a feature column (as in training)."""
    if schema.id_column in frame.columns:
        return schema
    taken = {schema.label_column, *schema.feature_columns()}
    found = _find([c for c in frame.columns if c not in taken], ID_NAMES)
    if found is None and header_looks_like_data(frame.columns):
        raise _no_header_error(frame.columns, file)
    if found is None:
        raise DataError(
            f"no patient id column: '{schema.id_column}' is not in the file and none of "
            f"{', '.join(ID_NAMES)} is either",
            file=file,
            fix="name the id column with --id-col (Python: a PatientTable read with TableSchema(id_column=...))",
        )
    return TableSchema(**{**schema.to_dict(), "id_column": found})


def table_from_frame(
    frame: pl.DataFrame,
    *,
    source: str = "<table>",
    schema: TableSchema | None = None,
    require_labels: bool = True,
    fixed_schema: bool = False,
) -> PatientTable:
    """Validate a polars DataFrame as a patient table.

    With ``fixed_schema`` (prediction with a trained model) the roles are taken as given and every
    feature column must be present; the label column is optional.
    """
    if frame.height == 0:
        raise DataError("the table is empty (no data rows)", file=source, fix="give a table with at least one patient")
    if fixed_schema:
        assert schema is not None
        schema = _prediction_id_column(frame, schema, source)
        missing = [c for c in [schema.id_column, *schema.feature_columns()] if c not in frame.columns]
        if missing:
            raise DataError(
                f"columns the model was trained on are missing: {', '.join(missing)} "
                f"(columns present: {column_names_text(frame.columns)})"
                + ("; the file seems to have no header row" if header_looks_like_data(frame.columns) else ""),
                file=source,
                column=missing[0],
                fix="give a table with the same columns as the training table (extra columns are ignored)",
            )
        label_col = schema.label_column if schema.label_column in frame.columns else None
        schema = TableSchema(**{**schema.to_dict(), "label_column": label_col})
    else:
        schema = infer_schema(frame, schema, source, require_labels)

    ids = frame.get_column(schema.id_column)
    null_ids = ids.is_null().to_numpy()
    if null_ids.any():
        raise DataError(
            "empty patient ids", file=source, column=schema.id_column, rows=np.flatnonzero(null_ids).tolist(),
            fix="give every row a patient id",
        )
    if ids.dtype.is_float():
        bad = ~np.isfinite(ids.to_numpy())
        if bad.any():
            raise DataError("NaN or infinite patient ids", file=source, column=schema.id_column,
                            rows=np.flatnonzero(bad).tolist(), fix="give every row a patient id")
    id_str = ids.cast(pl.Utf8).to_list()
    dup = pl.Series(id_str).is_duplicated().to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup).tolist()
        raise DataError(
            f"duplicated patient ids ({len({id_str[i] for i in rows})} id(s) on {len(rows)} rows)",
            file=source,
            column=schema.id_column,
            rows=rows,
            values=[id_str[i] for i in rows[:5]],
            fix="a patient table has one row per patient: merge or remove the duplicates "
            "(for many rows per patient, use an events table)",
        )

    numeric = (
        np.column_stack([_numeric_column(frame, c, source) for c in schema.numeric])
        if schema.numeric
        else np.zeros((frame.height, 0))
    )
    categorical = {}
    for c in schema.categorical:
        vals = frame.get_column(c).cast(pl.Utf8).str.strip_chars().to_list()
        categorical[c] = [v if v not in ("", None) else None for v in vals]
    codes = {c: _parse_code_column(frame, c, source) for c in schema.codes}
    labels = _parse_code_column(frame, schema.label_column, source, labels=True) if schema.label_column else None
    notes = {}
    used = {schema.id_column, schema.label_column, *schema.feature_columns(), *schema.identifier_like}
    ignored = [c for c in frame.columns if c not in used]
    if ignored:
        notes["ignored_columns"] = len(ignored)
    identifiers = [c for c in schema.identifier_like if c in frame.columns]
    if identifiers:
        notes["identifier_like_columns"] = len(identifiers)
    return PatientTable(
        source=source,
        schema=schema,
        patient_ids=id_str,
        numeric=numeric,
        categorical=categorical,
        codes=codes,
        labels=labels,
        notes=notes,
        id_dtype=ids.dtype if ids.dtype.is_integer() else None,
    )


def read_table(
    path: str | Path,
    *,
    schema: TableSchema | None = None,
    require_labels: bool = True,
    fixed_schema: bool = False,
) -> PatientTable:
    """Read and validate a CSV or Parquet patient table. See :func:`table_from_frame`."""
    path = Path(path)
    frame = _read_frame(path, schema.id_column if schema is not None else None)
    return table_from_frame(
        frame, source=str(path), schema=schema, require_labels=require_labels, fixed_schema=fixed_schema
    )
