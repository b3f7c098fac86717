"""OMOP CDM 5.4 exports (CSV or Parquet) as event shards for the store.

Tables read (each optional except `person`): person, visit_occurrence, condition_occurrence,
drug_exposure, measurement, observation, death, and concept when it is there. Each table may be a file
`<table>.csv`, `<table>.csv.gz` or `<table>.parquet`, or a directory of Parquet parts `<table>/*.parquet`.

Events (MEDS-shaped: subject_id = person_id, time, code, numeric_value):
  person                MEDS_BIRTH at birth_datetime (else year/month/day of birth);
                        GENDER//<gender_source_value, else F/M from gender_concept_id 8532/8507>, static
  death                 MEDS_DEATH at death_datetime (else death_date)
  visit_occurrence      <visit prefix>[//<visit_source_value>] at the visit's start
  condition_occurrence  code at condition_start_datetime (else _date)
  drug_exposure         code at drug_exposure_start_datetime (else _date)
  measurement           code with value_as_number at measurement_datetime (else _date)
  observation           code with value_as_number at observation_datetime (else _date)

Codes keep the vocabulary as the prefix. With `codes="source"` (the default) a row's code is
`<vocabulary_id>//<concept_code>` of its *_source_concept_id when a concept table gives it (e.g.
ICD10CM//E11.9), else `<table prefix>//<*_source_value>` (prefixes: CONDITION, DRUG, MEASUREMENT,
OBSERVATION, VISIT, or as given, e.g. {"condition": "ICD10CM"}). With `codes="concept"` it is the
standard concept: `<vocabulary_id>//<concept_code>` of *_concept_id, or OMOP_CONCEPT//<id> without a
concept table. A date without a time is taken as midnight. Rows without a person, a time or a code are
counted and left out. Persons are read in chunks (`persons_per_shard`), so memory is bounded by a chunk.
Rows of the CDM's other event tables (procedure_occurrence, device_exposure, ...) are counted, not read.

One job in one file (just over 400 lines): one format's reader, whose table-file helpers serve it alone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ehrdx.data.csv_errors import blank_rows, csv_read_error, short_rows_error
from ehrdx.data.meds import EventShard, normalise_events
from ehrdx.errors import DataError, reader_detail

DEFAULT_PREFIXES = {"visit": "VISIT", "condition": "CONDITION", "drug": "DRUG", "measurement": "MEASUREMENT",
                    "observation": "OBSERVATION"}
GENDER_CONCEPTS = {8532: "F", 8507: "M"}


@dataclass(frozen=True)
class _Spec:
    table: str
    kind: str  # key of DEFAULT_PREFIXES
    concept: str
    source_concept: str
    source_value: str
    datetime: str
    date: str
    value: str | None = None


SPECS = (
    _Spec("visit_occurrence", "visit", "visit_concept_id", "visit_source_concept_id", "visit_source_value",
          "visit_start_datetime", "visit_start_date"),
    _Spec("condition_occurrence", "condition", "condition_concept_id", "condition_source_concept_id",
          "condition_source_value", "condition_start_datetime", "condition_start_date"),
    _Spec("drug_exposure", "drug", "drug_concept_id", "drug_source_concept_id", "drug_source_value",
          "drug_exposure_start_datetime", "drug_exposure_start_date"),
    _Spec("measurement", "measurement", "measurement_concept_id", "measurement_source_concept_id",
          "measurement_source_value", "measurement_datetime", "measurement_date", "value_as_number"),
    _Spec("observation", "observation", "observation_concept_id", "observation_source_concept_id",
          "observation_source_value", "observation_datetime", "observation_date", "value_as_number"),
)

# CDM 5.4 tables of patient events that are not read: their rows are counted when present
UNREAD_TABLES = ("procedure_occurrence", "device_exposure", "visit_detail", "specimen", "note", "episode")


def _find(root: Path, table: str) -> Path | None:
    """`<table>.parquet`, `.csv`, `.csv.gz` or a directory of Parquet parts; lower or upper case."""
    for name in (table, table.upper()):
        for candidate in (root / f"{name}.parquet", root / f"{name}.csv", root / f"{name}.csv.gz"):
            if candidate.is_file():
                return candidate
        if (root / name).is_dir() and any((root / name).glob("*.parquet")):
            return root / name
    return None


@functools.lru_cache(maxsize=64)
def _blank_rows(path: Path, size: int, mtime_ns: int) -> tuple[int, ...]:
    """blank_rows of a file as it is now (its size and time): a table is scanned again for every chunk of
    persons, and a pass over a large file (the csv module's, where it has a blank line) once is enough."""
    return tuple(blank_rows(path))


def _scan(path: Path) -> pl.LazyFrame:
    try:
        if path.is_dir():
            return pl.scan_parquet(str(path / "*.parquet"))
        if path.suffix == ".parquet":
            return pl.scan_parquet(path, glob=False)
        frame = pl.scan_csv(path, glob=False, infer_schema=False)  # text first; each column is parsed on purpose below
        stat = path.stat()
        blank = _blank_rows(path, stat.st_size, stat.st_mtime_ns)  # rows of empty cells polars makes of blank
        if not blank:  # lines: no rows (csv_errors.py)
            return frame
        # only where polars' row is empty too (where the csv module counts rows otherwise, nothing is dropped)
        empty = pl.all_horizontal(pl.all().exclude("_row").is_null())
        return frame.with_row_index("_row").filter(~(pl.col("_row").is_in(blank) & empty)).drop("_row")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"could not be read ({reader_detail(exc)})", file=str(path)) from exc


def _check_rows(path: Path | None) -> None:
    """A CSV table's rows with fewer fields than its header are an error naming them: scanned lazily, they
    would be read with their last columns empty (a measurement without its value), without a word."""
    if path is not None and path.is_file() and path.suffix != ".parquet":
        error = short_rows_error(path)
        if error is not None:
            raise error


def _collect(frame: pl.LazyFrame, path: Path) -> pl.DataFrame:
    """Tables are scanned lazily, so a file's bad rows (a row longer than the header) surface here, where
    they are first read: said naming the file, not as polars' traceback."""
    try:
        return frame.collect()
    except pl.exceptions.PolarsError as exc:
        raise csv_read_error(path, exc) from exc


def _lower(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.rename({c: c.lower() for c in frame.collect_schema().names() if c != c.lower()})


def _time(frame: pl.LazyFrame, datetime_col: str, date_col: str) -> pl.Expr:
    """The row's time: its datetime when given, else its date at midnight (text or typed columns)."""
    names = frame.collect_schema().names()
    parts = []
    for col in (datetime_col, date_col):
        if col in names:
            c = pl.col(col)
            dtype = frame.collect_schema()[col]
            if dtype == pl.Utf8:
                c = pl.coalesce(c.str.strip_chars().str.to_datetime(format=f, strict=False, time_unit="us")
                                for f in ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S",
                                          "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"))
            parts.append(c.cast(pl.Datetime("us")))
    return pl.coalesce(parts) if parts else pl.lit(None, dtype=pl.Datetime("us"))


def _int(col: str, names: list[str]) -> pl.Expr:
    return pl.col(col).cast(pl.Int64, strict=False) if col in names else pl.lit(None, dtype=pl.Int64)


def _text(col: str, names: list[str]) -> pl.Expr:
    return (pl.col(col).cast(pl.Utf8).str.strip_chars() if col in names else pl.lit(None, dtype=pl.Utf8))


class OmopReader:
    def __init__(self, root: str | Path, *, codes: str = "source", prefixes: dict[str, str] | None = None,
                 persons_per_shard: int = 100_000) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError("OMOP directory not found", file=str(self.root), fix="give the folder of the CDM tables")
        if codes not in ("source", "concept"):
            raise DataError(f"unknown OMOP code choice {codes!r}", fix="use source or concept")
        unknown = sorted(set(prefixes or {}) - set(DEFAULT_PREFIXES))
        if unknown:
            raise DataError(f"unknown OMOP table kind(s) in prefixes: {', '.join(unknown)}",
                            fix=f"use {', '.join(DEFAULT_PREFIXES)}")
        self.codes, self.prefixes = codes, {**DEFAULT_PREFIXES, **(prefixes or {})}
        self.persons_per_shard = persons_per_shard
        self._numbers_checked: set[tuple[Path, str]] = set()
        person = _find(self.root, "person")
        if person is None:
            raise DataError("no person table (person.csv, person.parquet or person/*.parquet)", file=str(self.root),
                            fix="export the OMOP person table beside the others")
        self.person_path = person
        self.paths = {s.table: _find(self.root, s.table) for s in SPECS}
        self.death_path = _find(self.root, "death")
        concept = _find(self.root, "concept")
        for path in (person, *self.paths.values(), self.death_path, concept):  # once each, before any is read
            _check_rows(path)
        self.concepts = None
        if concept is not None:
            c = _lower(_scan(concept))
            names = c.collect_schema().names()
            need = {"concept_id", "vocabulary_id", "concept_code"}
            if not need <= set(names):
                raise DataError(f"concept table lacks {', '.join(sorted(need - set(names)))}", file=str(concept))
            vocab_code = pl.col("vocabulary_id").cast(pl.Utf8) + "//" + pl.col("concept_code").cast(pl.Utf8)
            self.concepts = _collect(c.select(_int("concept_id", names).alias("cid"), vocab_code.alias("vocab_code")),
                                     concept)

    def _persons(self) -> pl.DataFrame:
        p = _lower(_scan(self.person_path))
        names = p.collect_schema().names()
        if "person_id" not in names:
            raise DataError("no person_id column", file=str(self.person_path), column="person_id")
        year = _int("year_of_birth", names)
        born = pl.coalesce(
            _time(p, "birth_datetime", "birth_datetime"),
            pl.datetime(year, _int("month_of_birth", names).fill_null(1), _int("day_of_birth", names).fill_null(1),
                        time_unit="us"))
        gender = pl.coalesce(_text("gender_source_value", names).replace("", None),
                             _int("gender_concept_id", names).replace_strict(GENDER_CONCEPTS, default=None,
                                                                              return_dtype=pl.Utf8))
        frame = p.select(_int("person_id", names).alias("subject_id"), born.alias("birth"), gender.alias("gender"))
        return _collect(frame, self.person_path).sort("subject_id")

    def _code(self, spec: _Spec, names: list[str]) -> tuple[pl.Expr, bool]:
        """The code expression of a table's rows, and whether it needs the concept join."""
        prefix = self.prefixes[spec.kind]
        value = _text(spec.source_value, names)
        fallback = pl.when(value.is_null() | (value == "")).then(pl.lit(prefix)).otherwise(prefix + "//" + value)
        if self.codes == "concept":
            if self.concepts is None:
                return "OMOP_CONCEPT//" + _int(spec.concept, names).cast(pl.Utf8), False
            return pl.col("vocab_code"), True
        if self.concepts is None or spec.source_concept not in names:
            return fallback, False
        return pl.coalesce(pl.col("vocab_code"), fallback), True

    def shards(self) -> Iterator[EventShard]:
        persons = self._persons()
        ids = persons.get_column("subject_id")
        n_null = int(ids.is_null().sum())
        for start in range(0, max(persons.height, 1), self.persons_per_shard):
            chunk = persons.slice(start, self.persons_per_shard).drop_nulls("subject_id")
            if chunk.height == 0:
                continue
            lo, hi = int(chunk["subject_id"].min()), int(chunk["subject_id"].max())
            frames, counts = [], {}
            if start == 0 and n_null:
                counts["omop_person_rows_without_person_id_excluded"] = n_null
            frames.append(chunk.select("subject_id", pl.col("birth").alias("time"), pl.lit("MEDS_BIRTH").alias("code"),
                                       pl.lit(None, dtype=pl.Float64).alias("numeric_value")).drop_nulls("time"))
            frames.append(chunk.drop_nulls("gender").select(
                "subject_id", pl.lit(None, dtype=pl.Datetime("us")).alias("time"),
                ("GENDER//" + pl.col("gender")).alias("code"), pl.lit(None, dtype=pl.Float64).alias("numeric_value")))
            for spec in SPECS:
                path = self.paths[spec.table]
                if path is None:
                    continue
                frames.append(self._table(spec, path, lo, hi, counts))
            if self.death_path is not None:
                d = _lower(_scan(self.death_path))
                names = d.collect_schema().names()
                frames.append(self._rows(d, names, lo, hi, _time(d, "death_datetime", "death_date"),
                                         pl.lit("MEDS_DEATH"), None, self.death_path, "death", counts))
            events = pl.concat([f.select(pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(pl.Datetime("us")),
                                         pl.col("code").cast(pl.Utf8), pl.col("numeric_value").cast(pl.Float64))
                                for f in frames])
            # rows of persons missing from the person table were counted once, up front
            events = events.filter(pl.col("subject_id").is_in(chunk.get_column("subject_id").implode()))
            if start == 0:
                counts.update(self._orphans(persons))
                counts.update(self._unread())
            events = events.sort("subject_id", "time", "code", "numeric_value", nulls_last=False)
            shard = normalise_events(events, f"{self.root} (persons {lo}..{hi})")
            for k, v in counts.items():
                shard.counts[k] = shard.counts.get(k, 0) + v
            yield shard

    def _unread(self) -> dict[str, int]:
        """Rows of CDM event tables in the directory that ehrdx does not read (procedure_occurrence ...):
        counted, so that a table left beside the others is not taken for read."""
        out = {}
        for name in UNREAD_TABLES:
            path = _find(self.root, name)
            if path is not None:
                n = _collect(_scan(path).select(pl.len()), path).item()
                if n:
                    out[f"omop_{name}_rows_not_read"] = int(n)
        return out

    def _orphans(self, persons: pl.DataFrame) -> dict[str, int]:
        """Rows of each table whose person_id is not in the person table: counted, left out."""
        known = persons.select(pl.col("subject_id").drop_nulls()).lazy()
        out = {}
        tables = [(s.table, self.paths[s.table]) for s in SPECS] + [("death", self.death_path)]
        for name, path in tables:
            if path is None:
                continue
            t = _lower(_scan(path))
            names = t.collect_schema().names()
            if "person_id" not in names:
                continue
            n = _collect(t.select(_int("person_id", names).alias("subject_id")).join(known, on="subject_id", how="anti")
                         .select(pl.len()), path).item()
            if n:
                out[f"omop_{name}_rows_for_persons_not_in_person_excluded"] = int(n)
        return out

    def _table(self, spec: _Spec, path: Path, lo: int, hi: int, counts: dict) -> pl.DataFrame:
        t = _lower(_scan(path))
        names = t.collect_schema().names()
        if "person_id" not in names:
            raise DataError("no person_id column", file=str(path), column="person_id")
        self._require_columns(spec, path, names)
        code, join = self._code(spec, names)
        if join:
            key = spec.concept if self.codes == "concept" else spec.source_concept
            t = t.join(self.concepts.lazy(), left_on=_int(key, names), right_on="cid", how="left")
            names = t.collect_schema().names()
        value = None
        if spec.value and spec.value in names:
            value = pl.col(spec.value)
            if not t.collect_schema()[spec.value].is_numeric():  # a CSV's text: checked, then read
                self._check_numbers(path, spec.value)
                value = value.cast(pl.Utf8).str.strip_chars()
            value = value.cast(pl.Float64, strict=False)
        return self._rows(t, names, lo, hi, _time(t, spec.datetime, spec.date), code, value, path, spec.table,
                          counts)

    def _check_numbers(self, path: Path, column: str) -> None:
        """Text that is not a number in a value column (`<5`, `5,5`, `high`) is an error naming the rows, as in
        an events table: read leniently it would become an empty value without a word."""
        if (path, column) in self._numbers_checked:  # once per table, not per chunk of persons
            return
        t = _lower(_scan(path)).with_row_index("_row")
        text = pl.col(column).cast(pl.Utf8).str.strip_chars()
        bad = t.filter(text.is_not_null() & (text != "") & text.cast(pl.Float64, strict=False).is_null())
        n = _collect(bad.select(pl.len()), path).item()
        if n:
            first = _collect(bad.select("_row", column).head(5), path)
            raise DataError(f"{n:,} cell(s) of {column} are text, not numbers", file=str(path), column=column,
                            rows=first.get_column("_row").to_list(), values=first.get_column(column).to_list(),
                            fix=f"write numbers with a decimal point in {column}, put text results in "
                                "value_as_string (or value_source_value), or empty the cell")
        self._numbers_checked.add((path, column))

    def _require_columns(self, spec: _Spec, path: Path, names: list[str]) -> None:
        """A column the table's events need, absent from the whole table, is an error, not every row left out
        (no time) or read as one code (no source value) or without values (no value_as_number)."""
        if spec.datetime not in names and spec.date not in names:
            raise DataError(f"no {spec.date} or {spec.datetime} column: none of its rows has a time",
                            file=str(path), column=spec.date,
                            fix=f"export the table with {spec.date} (and {spec.datetime} where known)")
        if self.codes == "concept":
            if spec.concept not in names:
                raise DataError(f"no {spec.concept} column, which --omop-codes concept reads", file=str(path),
                                column=spec.concept, fix=f"export {spec.concept}, or use --omop-codes source")
        elif spec.kind != "visit" and spec.source_value not in names and not (
                self.concepts is not None and spec.source_concept in names):
            have = f"{spec.source_concept} and a concept table" if self.concepts is None else spec.source_concept
            raise DataError(f"no {spec.source_value} column (nor {have}): every row would read as the bare "
                            f"code {self.prefixes[spec.kind]}", file=str(path), column=spec.source_value,
                            fix=f"export {spec.source_value}, or the concept table with {spec.source_concept}; "
                                "or --omop-codes concept")
        if spec.table == "measurement" and spec.value not in names:
            raise DataError(f"no {spec.value} column: every measurement would be read without its value",
                            file=str(path), column=spec.value,
                            fix=f"export {spec.value} (an empty cell is fine for a measurement without a number)")

    @staticmethod
    def _rows(t: pl.LazyFrame, names: list[str], lo: int, hi: int, time: pl.Expr, code: pl.Expr,
              value: pl.Expr | None, path: Path, table: str, counts: dict) -> pl.DataFrame:
        pid = _int("person_id", names)
        rows = _collect(t.filter(pid.is_between(lo, hi)).select(
            pid.alias("subject_id"), time.alias("time"), code.alias("code"),
            (value if value is not None else pl.lit(None, dtype=pl.Float64)).alias("numeric_value")), path)
        missing = rows.get_column("time").is_null() | rows.get_column("code").is_null()
        if missing.any():
            key = f"omop_{table}_rows_without_time_or_code_excluded"
            counts[key] = counts.get(key, 0) + int(missing.sum())
            rows = rows.filter(~missing)
        return rows


@dataclass(frozen=True)
class OmopSource:
    """Where an OMOP export is and how to read its codes (what the command line passes along)."""

    root: Path
    codes: str = "source"
    prefixes: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return str(self.root)

    def shards(self) -> Iterator[EventShard]:
        return OmopReader(self.root, codes=self.codes, prefixes=dict(self.prefixes)).shards()

    @classmethod
    def parse(cls, root: str | Path, codes: str = "source", prefixes: str | None = None) -> OmopSource:
        """`prefixes` as `condition=ICD10CM,measurement=LOINC`."""
        pairs = []
        for item in (prefixes or "").split(","):
            if not item.strip():
                continue
            kind, sep, prefix = item.partition("=")
            if not sep or not prefix.strip():
                raise DataError(f"unreadable OMOP prefix {item!r}", column="--omop-prefix",
                                fix="write kind=PREFIX pairs, e.g. condition=ICD10CM,measurement=LOINC")
            pairs.append((kind.strip(), prefix.strip()))
        return cls(Path(root), codes, tuple(pairs))


def iter_omop(root: str | Path, **kwargs) -> Iterator[EventShard]:
    """Event shards of an OMOP CDM export (see the module docstring)."""
    return OmopReader(root, **kwargs).shards()


def concept_names(root: str | Path, codes: set[str]) -> dict[str, str]:
    """concept_name of each of `codes` written as `<vocabulary_id>//<concept_code>` (the codes this reader
    writes from the concept table); empty without a concept table or its concept_name column."""
    from ehrdx.data.descriptions import named

    path = _find(Path(root), "concept")
    if path is None:
        return {}
    frame = _lower(_scan(path))
    if not {"vocabulary_id", "concept_code", "concept_name"} <= set(frame.collect_schema().names()):
        return {}
    code = pl.col("vocabulary_id").cast(pl.Utf8) + "//" + pl.col("concept_code").cast(pl.Utf8)
    picked = _collect(frame.select(code.alias("code"), pl.col("concept_name").cast(pl.Utf8).alias("description"))
                      .filter(pl.col("code").is_in(list(codes))), path)
    return named(picked, codes)
