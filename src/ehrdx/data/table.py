"""Read a patient table (one row per patient) from CSV or Parquet, infer column roles, validate.

This is the single validation layer for tables: everything after it trusts its arguments.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.csv_errors import (
    check_short_rows,
    csv_read_error,
    other_separator,
    other_separator_error,
    without_blank_lines,
)
from ehrdx.data.table_cells import (
    ID_NAMES,
    LABEL_NAMES,
    column_names_text,
    find_column,
    formatted_number_rows,
    header_looks_like_data,
    identifier_error,
    identifier_like,
    looks_like_code_list,
    no_header_error,
    numeric_column,
    numeric_share,
    parse_code_column,
    parse_code_list,
)
from ehrdx.errors import DataError, reader_detail

# Re-exported: readers and tests take these from the table module.
__all__ = ["ID_NAMES", "LABEL_NAMES", "PatientTable", "TableSchema", "column_names_text", "frame_of",
           "header_looks_like_data", "parse_code_list", "read_table", "table_from_frame"]



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
    names: dict[str, list[str]] = field(default_factory=dict)  # what a note counts, where it has names
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
            names=dict(self.names),
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
    id_col = id_column if id_column in columns else find_column(columns, ID_NAMES)
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
            frame = pl.read_csv(path, glob=False, separator=sep, infer_schema_length=None, try_parse_dates=False,
                                schema_overrides=_csv_ids_as_text(path, sep, id_column))
            if frame.width == 1 and (other := other_separator(path, sep)) is not None:
                raise other_separator_error(path, sep, other)  # else "no patient id column", naming the header
            frame = without_blank_lines(frame, path, sep)
            check_short_rows(frame, path, sep)
            return frame
    except pl.exceptions.PolarsError as exc:
        raise csv_read_error(path, exc, separator="\t" if suffix == ".tsv" else ",",
                             problem=f"could not be read as {suffix[1:]}") from exc
    raise DataError(
        f"unsupported file type '{suffix}'", file=str(path), fix="give a .csv, .tsv or .parquet file"
    )


def no_value(values: pl.Series) -> bool:
    """Whether every cell of a column is empty."""
    if values.dtype == pl.Utf8:
        values = values.str.strip_chars().replace("", None)
    return values.null_count() == values.len()


def infer_schema(frame: pl.DataFrame, given: TableSchema | None, file: str, require_labels: bool) -> TableSchema:
    """Fill in the roles the user did not set. Raises DataError for unknown or missing columns."""
    given = given or TableSchema()
    columns = frame.columns
    if given.id_column not in columns and header_looks_like_data(columns):
        raise no_header_error(columns, file)
    named = [given.id_column, given.label_column, *given.numeric, *given.categorical, *given.codes, *given.ignore]
    for c in named:
        if c is not None and c not in columns:
            raise DataError(
                f"column '{c}' was named but is not in the file (columns: {column_names_text(columns)})",
                file=file,
                column=c,
                fix="check the spelling or the column flags",
            )
    id_col = given.id_column or find_column(columns, ID_NAMES)
    if id_col is None:
        raise DataError(
            f"no patient id column found (looked for {', '.join(ID_NAMES)}; columns: {column_names_text(columns)})",
            file=file,
            fix="name the id column with --id-col (Python: TableSchema(id_column=...))",
        )
    label_col = given.label_column or find_column([c for c in columns if c != id_col], LABEL_NAMES)
    if label_col is None and require_labels:
        raise DataError(
            f"no label column found (looked for {', '.join(LABEL_NAMES)}; "
            f"columns: {column_names_text(columns)})",
            file=file,
            fix="name the column holding each patient's disease list with --label-col",
        )
    for c in given.categorical:
        if identifier_like(frame.get_column(c).cast(pl.Utf8)):
            raise identifier_error(c, frame.get_column(c), file)
    assigned = {id_col, label_col, *given.numeric, *given.categorical, *given.codes, *given.ignore}
    numeric, categorical, codes = list(given.numeric), list(given.categorical), list(given.codes)
    identifiers = []
    for c in columns:
        if c in assigned:
            continue
        s = frame.get_column(c)
        if no_value(s):  # an empty column (an Excel export's trailing one): no feature, and not needed to predict
            continue  # counted and named with the table's other unused columns (ignored_columns)
        formatted = formatted_number_rows(s)
        if formatted:
            raise DataError(
                f"numbers written for display ({len(formatted)} cell(s) with a thousands separator or a percent "
                "sign, such as 2,146 or 12%): the column would be read as text, a category or an identifier",
                file=file, column=c, rows=formatted, values=[s[i] for i in formatted[:5]],
                fix="write plain numbers (2146, 12; export without number formatting), or name the column with "
                    "--ignore",
            )
        if identifier_like(s) and not (isinstance(s.dtype, pl.List) or looks_like_code_list(s)):
            identifiers.append(c)
        elif s.dtype.is_numeric() or s.dtype == pl.Boolean:
            numeric.append(c)
        elif isinstance(s.dtype, pl.List) or looks_like_code_list(s) or "code" in c.lower():
            codes.append(c)
        elif numeric_share(s) >= 0.8:
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


def _prediction_id_column(frame: pl.DataFrame, schema: TableSchema, file: str, row_ids: bool = False
                          ) -> tuple[pl.DataFrame, TableSchema]:
    """The table and the trained schema with the id column of this table: the trained (or given) name where the
    table has it, else the first usual id name that is not a feature column (as in training). With `row_ids`,
    a table with neither gets its row numbers (1, 2, ...) as ids in a column of the trained name."""
    if schema.id_column in frame.columns:
        return frame, schema
    taken = {schema.label_column, *schema.feature_columns()}
    found = find_column([c for c in frame.columns if c not in taken], ID_NAMES)
    if found is None and header_looks_like_data(frame.columns):
        raise no_header_error(frame.columns, file)
    if found is None and row_ids:
        return frame.with_columns(pl.Series(schema.id_column, [str(i + 1) for i in range(frame.height)])), schema
    if found is None:
        raise DataError(
            f"no patient id column: '{schema.id_column}' is not in the file and none of "
            f"{', '.join(ID_NAMES)} is either",
            file=file,
            fix="name the id column with --id-col",
        )
    return frame, TableSchema(**{**schema.to_dict(), "id_column": found})


def table_from_frame(
    frame: pl.DataFrame,
    *,
    source: str = "<table>",
    schema: TableSchema | None = None,
    require_labels: bool = True,
    fixed_schema: bool = False,
    row_ids: bool = False,
) -> PatientTable:
    """Validate a polars DataFrame as a patient table.

    With ``fixed_schema`` (prediction with a trained model) the roles are taken as given and every
    feature column must be present; the label column is optional. With ``row_ids`` too, a table without a
    patient id column has its row numbers as ids (predicting from Python: the results are in row order).
    """
    if frame.height == 0:
        raise DataError("the table is empty (no data rows)", file=source, fix="give a table with at least one patient")
    made_ids = False
    if fixed_schema:
        assert schema is not None
        given_columns = set(frame.columns)
        frame, schema = _prediction_id_column(frame, schema, source, row_ids)
        made_ids = schema.id_column not in given_columns
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
            fix="give every row a patient id" + (", or leave the id column out (the rows are then read in their "
                                                 "order)" if row_ids else ""),
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
        np.column_stack([numeric_column(frame, c, source) for c in schema.numeric])
        if schema.numeric
        else np.zeros((frame.height, 0))
    )
    categorical = {}
    for c in schema.categorical:
        vals = frame.get_column(c).cast(pl.Utf8).str.strip_chars().to_list()
        categorical[c] = [v if v not in ("", None) else None for v in vals]
    codes = {c: parse_code_column(frame, c, source) for c in schema.codes}
    labels = parse_code_column(frame, schema.label_column, source, labels=True) if schema.label_column else None
    notes, names = {}, {}
    used = {schema.id_column, schema.label_column, *schema.feature_columns(), *schema.identifier_like}
    ignored = [c for c in frame.columns if c not in used]
    empty = [c for c in ignored if no_value(frame.get_column(c))]
    if empty:  # said apart: why they are out, and a header cell left blank named so
        notes["empty_columns_left_out"] = len(empty)
        names["empty_columns_left_out"] = [c or "(no name)" for c in empty]
        ignored = [c for c in ignored if c not in empty]
    if ignored:
        notes["ignored_columns"], names["ignored_columns"] = len(ignored), ignored
    if fixed_schema and made_ids:  # no id column: the rows are the patients, in order (said, not silent)
        notes["rows_without_patient_id_column"] = frame.height
    identifiers = [c for c in schema.identifier_like if c in frame.columns]
    if identifiers:
        notes["identifier_like_columns"], names["identifier_like_columns"] = len(identifiers), identifiers
    return PatientTable(
        source=source,
        schema=schema,
        patient_ids=id_str,
        numeric=numeric,
        categorical=categorical,
        codes=codes,
        labels=labels,
        notes=notes,
        names=names,
        id_dtype=ids.dtype if ids.dtype.is_integer() else None,
    )


def frame_of(data, source: str = "<table>") -> pl.DataFrame:
    """A patient table held in memory, as a polars DataFrame: a polars DataFrame or LazyFrame, a pandas DataFrame
    (a named index, such as patient ids set as the index, becomes a column; NaN is pandas' missing value and
    reads as an empty cell), a pyarrow Table, or a dict of columns. Anything else (a numpy array, a list) has
    no column names to find the id, label and feature columns by, and is refused."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    # Looked up, not imported: a user holding a pandas or pyarrow table has imported its package already.
    pd, pa = sys.modules.get("pandas"), sys.modules.get("pyarrow")
    if pd is not None and isinstance(data, pd.DataFrame):
        return pl.from_pandas(data, include_index=True)
    if pa is not None and isinstance(data, pa.Table):
        return pl.from_arrow(data)
    if isinstance(data, dict):
        try:
            return pl.DataFrame(data)
        except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
            raise DataError(f"a dict of columns that is not a table ({reader_detail(exc)})", file=source,
                            fix="give columns of equal length, one value per patient") from None
    raise DataError(f"data of type {type(data).__name__} is not a patient table: a table needs named columns (the patient id, "
                    "the labels, the features)", file=source,
                    fix="give a polars or pandas DataFrame, a pyarrow Table, a dict of columns, or the path of a "
                    "CSV or Parquet file")


def read_table(
    path: str | Path,
    *,
    schema: TableSchema | None = None,
    require_labels: bool = True,
    fixed_schema: bool = False,
    row_ids: bool = False,
) -> PatientTable:
    """Read and validate a CSV or Parquet patient table. See :func:`table_from_frame`."""
    path = Path(path)
    frame = _read_frame(path, schema.id_column if schema is not None else None)
    return table_from_frame(
        frame, source=str(path), schema=schema, require_labels=require_labels, fixed_schema=fixed_schema,
        row_ids=row_ids,
    )
