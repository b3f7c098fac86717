"""Read and write event streams: MEDS datasets and long events tables (CSV/Parquet).

MEDS (Medical Event Data Standard, schema 0.4): `data/**/*.parquet` with `subject_id` (int64), `time`
(timestamp, null for static facts), `code` (string), `numeric_value` (float, nullable), optional
`text_value`; `metadata/codes.parquet`, optional `metadata/subject_splits.parquet` (splits `train`,
`tuning`, `held_out`) and `metadata/dataset.json`. Only polars/pyarrow are used, not MEDS tooling.

Every reader returns frames normalised to (subject_id i64, time datetime[us], code str,
numeric_value f32) and a dict of counted exclusions; bad data raises DataError naming file, subject
and column.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ehrdx.data.csv_errors import check_short_rows, csv_read_error, header_hint, without_blank_lines
from ehrdx.data.subject_ids import is_text_ids, map_text_ids
from ehrdx.data.table import column_names_text
from ehrdx.errors import DataError, ident, reader_detail
from ehrdx.times import naive_utc, parse_offset_times

MEDS_COLUMNS = ("subject_id", "time", "code", "numeric_value")
MEDS_SPLITS = ("train", "tuning", "held_out")
# the count of times whose fraction of a second the store (whole seconds) cuts off: events, prediction times
FRACTION_CUT = "times_with_a_fraction_of_a_second_cut_to_the_second"
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max: the store keeps values as float32

# The exact Arrow types of the MEDS 0.4 schemas (meds.DataSchema, CodeMetadataSchema, SubjectSplitSchema,
# LabelSchema). polars writes large_string and large_list by default, which the standard's validator
# refuses, so every MEDS file is cast to these on write (tests/test_meds_schema.py checks with `meds`).
MEDS_DATA_TYPES = {"subject_id": pa.int64(), "time": pa.timestamp("us"), "code": pa.string(),
                   "numeric_value": pa.float32(), "text_value": pa.large_string()}
MEDS_CODES_TYPES = {"code": pa.string(), "description": pa.string(), "parent_codes": pa.list_(pa.string())}
MEDS_SPLITS_TYPES = {"subject_id": pa.int64(), "split": pa.string()}
MEDS_LABEL_TYPES = {"subject_id": pa.int64(), "prediction_time": pa.timestamp("us"), "boolean_value": pa.bool_(),
                    "integer_value": pa.int64(), "float_value": pa.float32(), "categorical_value": pa.string()}


@dataclass
class EventShard:
    """One chunk of events, normalised, with what was excluded or repaired in it."""

    source: str
    frame: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)  # what a count counts, where it has names
    # Text subject ids mapped to int64 (see ehrdx.data.subject_ids): subject_id, original_subject_id.
    subject_map: pl.DataFrame | None = None


ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
               "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _parse_times(text: pl.Series, time_format: str | None) -> pl.Series:
    """Parse text times row by row with the given format, or the first ISO 8601 form that fits."""
    text = text.str.strip_chars()
    formats = (time_format,) if time_format else ISO_FORMATS
    tries = [naive_utc(text.str.to_datetime(format=f, strict=False, exact=True, time_unit="us")) for f in formats]
    parsed = pl.select(pl.coalesce(tries)).to_series()
    return parsed if time_format else parse_offset_times(text, parsed)


def _missing_column_fix(role: str, col: str, columns: list[str]) -> str:
    """How to fix a missing column: the usual answer, or what the header suggests went wrong."""
    hint = header_hint(col, columns)
    if hint:
        return hint
    flag = {"subject id": "--subject-col", "time": "--time-col", "code": "--code-col"}.get(role)
    return f"name the {role} column in the column mapping" + (f" ({flag} NAME for an events table)" if flag else "")


def _cast_keeping_track(values: pl.Series, dtype: pl.DataType) -> tuple[pl.Series, list[int]]:
    """Cast leniently; also return the first rows whose non-empty value did not survive the cast."""
    cast = values.cast(dtype, strict=False)
    lost = cast.is_null() & values.is_not_null()
    if values.dtype.is_float() and dtype.is_integer():  # 15.5 would become 15, another patient's id
        lost = lost | (cast.is_not_null() & (cast.cast(values.dtype) != values)).fill_null(False)
    return cast, lost.arg_true().head(5).to_list()


def normalise_events(
    frame: pl.DataFrame,
    source: str,
    *,
    subject_col: str = "subject_id",
    time_col: str = "time",
    code_col: str = "code",
    value_col: str | None = "numeric_value",
    time_format: str | None = None,
    text_ids: bool = False,
) -> EventShard:
    """Validate and normalise one frame of events. Static rows (null time) are kept. With `text_ids`
    (a long events table), subject ids that are not all canonical integers are kept as text and mapped
    to int64 (:mod:`ehrdx.data.subject_ids`); otherwise they must be integers, as MEDS requires."""
    counts: dict[str, int] = {}
    for role, col in (("subject id", subject_col), ("time", time_col), ("code", code_col)):
        if col not in frame.columns:
            raise DataError(
                f"no {role} column '{col}' (columns: {column_names_text(frame.columns)})",
                file=source, column=col, fix=_missing_column_fix(role, col, frame.columns),
            )
    extra = [c for c in frame.columns if c not in {subject_col, time_col, code_col, value_col, "text_value"}]
    if extra:
        counts["ignored_columns"] = len(extra)
    names = {"ignored_columns": extra} if extra else {}

    subj = shown = frame.get_column(subject_col)
    subject_map = None
    if text_ids and is_text_ids(subj):
        subj, subject_map = map_text_ids(subj)
    if not subj.dtype.is_integer() or subj.dtype == pl.UInt64:  # a uint64 above 2**63 - 1 has no int64
        cast, rows = _cast_keeping_track(subj, pl.Int64)
        if rows:
            wide = subj.dtype.is_integer()
            raise DataError("subject ids beyond the int64 range MEDS allows" if wide else "subject ids must be integers",
                            file=source, column=subject_col, rows=rows, values=[subj[r] for r in rows],
                            fix="map subject ids to integers of at most 2**63 - 1 (MEDS uses int64)")
        subj = cast
    if subj.is_null().any():
        rows = subj.is_null().arg_true().head(5).to_list()
        raise DataError("empty subject ids", file=source, column=subject_col, rows=rows,
                        fix="every event needs a subject id")

    t = frame.get_column(time_col)
    if t.dtype == pl.Utf8:
        parsed = _parse_times(t, time_format)
        bad = parsed.is_null() & t.is_not_null() & (t.str.strip_chars() != "")
        if bad.any():
            rows = bad.arg_true().head(5).to_list()
            raise DataError(
                f"unparseable times ({int(bad.sum())} cell(s)); first subject {ident(shown[rows[0]])}",
                file=source, column=time_col, rows=rows, values=[t[r] for r in rows],
                fix="write times as ISO 8601 (2024-01-31, 2024-01-31T08:15:00 or with a UTC offset, "
                    "2024-01-31T08:15:00+02:00) or give --time-format",
            )
        t = parsed
    elif t.dtype == pl.Date:
        t = t.cast(pl.Datetime("us"))
    elif isinstance(t.dtype, pl.Datetime):
        t = naive_utc(t).cast(pl.Datetime("us"))
    elif t.dtype == pl.Null:
        t = t.cast(pl.Datetime("us"))
    else:
        raise DataError(f"times have type {t.dtype}, expected timestamps or ISO 8601 text",
                        file=source, column=time_col, fix="store times as timestamps")

    # the store keeps whole seconds: a time's fraction of a second is cut off (events 0.3 s apart then share a
    # visit, and a prediction time is written back without its fraction), counted so that it is seen
    n_fraction = int(((t.dt.epoch("us") % 1_000_000) != 0).sum() or 0)
    if n_fraction:
        counts[FRACTION_CUT] = n_fraction

    code = frame.get_column(code_col)
    if code.dtype != pl.Utf8:
        code = code.cast(pl.Utf8)
    code = code.str.strip_chars()

    if value_col and value_col in frame.columns:
        v = frame.get_column(value_col)
        if v.dtype == pl.Utf8:  # " 5.5 " is a number, as a time or code with spaces around it is read; "  " empty
            v = v.str.strip_chars()
            v = pl.select(pl.when(v.str.len_chars() > 0).then(v)).to_series().alias(value_col)
        if not v.dtype.is_numeric():
            cast, rows = _cast_keeping_track(v, pl.Float64)
            if rows:
                raise DataError(f"text in the numeric value column; first subject {ident(shown[rows[0]])}",
                                file=source, column=value_col, rows=rows, values=[v[r] for r in rows],
                                fix="write numbers with a decimal point (5.5, not 5,5), put text results in "
                                    "text_value, or empty the cell")
            v = cast
        v = v.cast(pl.Float64)
        nonfinite = v.is_not_null() & ~v.is_finite()
        if nonfinite.any():
            counts["nonfinite_values_set_to_null"] = int(nonfinite.sum())
            v = pl.when(nonfinite).then(None).otherwise(v)
            v = pl.select(v).to_series()
        # the store keeps float32: a finite float64 beyond its range (1e300) would become inf there and turn
        # the code's mean into inf, silently zeroing every value of that code
        too_large = v.abs() > FLOAT32_MAX
        if too_large.any():
            counts["values_beyond_float32_range_set_to_null"] = int(too_large.sum())
            v = pl.select(pl.when(too_large).then(None).otherwise(v)).to_series()
        v = v.cast(pl.Float32)
    else:
        v = pl.Series("numeric_value", [None] * frame.height, dtype=pl.Float32)
        if value_col and frame.height:  # said, not silent: a MEDS shard without it reads with no values
            counts["files_without_a_numeric_value_column"] = 1

    out = pl.DataFrame({"subject_id": subj.cast(pl.Int64), "time": t, "code": code, "numeric_value": v})
    null_code = out.get_column("code").is_null() | (out.get_column("code") == "")
    if null_code.any():
        counts["null_codes_excluded"] = int(null_code.sum())
        out = out.filter(~null_code)
    # Exact duplicate rows are kept (a lab can be drawn twice at one time) but counted, so that a doubled
    # export is seen; so are timed events before the patient's recorded birth, and after the first recorded death.
    n_dup = out.height - out.n_unique()
    if n_dup:
        counts["duplicate_events"] = n_dup
    births = out.filter(pl.col("code") == "MEDS_BIRTH").group_by("subject_id").agg(
        pl.col("time").min().alias("_b"), pl.col("time").n_unique().alias("_n"))
    if births.height:
        early = out.join(births, on="subject_id", how="inner").filter(pl.col("time") < pl.col("_b"))
        if early.height:
            counts["events_before_birth"] = early.height
            # their age is unknown: a birth after the first visit starts is not read (nothing later is)
            counts["patients_with_events_before_birth_left_without_age"] = early.get_column("subject_id").n_unique()
        n_twice = int((births.get_column("_n") > 1).sum())
        if n_twice:  # the earliest is the birth (ehrdx.data.patients.birth_times)
            counts["patients_with_several_birth_times_earliest_taken"] = n_twice
    deaths = out.filter(pl.col("code") == "MEDS_DEATH").group_by("subject_id").agg(pl.col("time").min().alias("_d"))
    if deaths.height:
        n_late = out.join(deaths, on="subject_id", how="inner").filter(pl.col("time") > pl.col("_d")).height
        if n_late:
            counts["events_after_death"] = n_late
    # Events out of order (by subject, then time with static rows first) are sorted, and counted.
    key_t = out.get_column("time").dt.epoch("us").fill_null(-(2**63))
    key = pl.DataFrame({"s": out.get_column("subject_id"), "t": key_t})
    backwards = (key["s"] < key["s"].shift(1)) | ((key["s"] == key["s"].shift(1)) & (key["t"] < key["t"].shift(1)))
    n_back = int(backwards.fill_null(False).sum())
    if n_back:
        counts["events_out_of_order_sorted"] = n_back
        out = out.sort("subject_id", "time", nulls_last=False, maintain_order=True)
    return EventShard(source=source, frame=out, counts=counts, names=names, subject_map=subject_map)


def meds_shard_paths(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError("MEDS directory not found", file=str(root), fix="give the dataset root (it holds data/)")
    shards = sorted((root / "data").glob("**/*.parquet"))
    if not shards:
        raise DataError("no data/**/*.parquet files", file=str(root),
                        fix="a MEDS dataset keeps its events in data/<split>/<n>.parquet")
    return shards


def iter_meds(root: str | Path, paths: list[str | Path] | None = None) -> Iterator[EventShard]:
    """Yield the dataset's shards (or the given shard files) one at a time (memory is bounded by the
    largest shard)."""
    for path in meds_shard_paths(root) if paths is None else [Path(p) for p in paths]:
        try:
            frame = pl.read_parquet(path, glob=False)
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"not a readable parquet file ({exc})", file=str(path)) from exc
        yield normalise_events(frame, str(path))


def iter_event_table(
    path: str | Path,
    *,
    subject_col: str = "subject_id",
    time_col: str = "time",
    code_col: str = "code",
    value_col: str | None = "numeric_value",
    time_format: str | None = None,
) -> Iterator[EventShard]:
    """A long events table (one row per event) from CSV or Parquet, with a column mapping. Subject ids
    that are not all canonical integers are kept as text (``007`` is not ``7``) and mapped to int64 for
    the store (:mod:`ehrdx.data.subject_ids`)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path), fix="check the path")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pl.read_parquet(path, glob=False)
        else:
            # every column as text: the value column is parsed below, naming the rows that are not numbers
            # (type inference from the first rows stopped at a late text cell, in any column, unnamed)
            frame = pl.read_csv(path, glob=False, infer_schema=False)
            frame = without_blank_lines(frame, path)
            check_short_rows(frame, path)
    except pl.exceptions.PolarsError as exc:
        raise csv_read_error(path, exc) from exc
    if value_col and value_col != "numeric_value" and value_col not in frame.columns:
        # a value column named by the user must be there: without it every value would be dropped unsaid
        # (the default name may be absent: a table of codes only)
        raise DataError(f"no numeric value column '{value_col}' (columns: {column_names_text(frame.columns)})",
                        file=str(path), column=value_col,
                        fix="name the value column with --value-col, or leave it out for a table without values")
    yield normalise_events(frame, str(path), subject_col=subject_col, time_col=time_col, code_col=code_col,
                           value_col=value_col, time_format=time_format, text_ids=True)


def read_subject_splits(root: str | Path) -> pl.DataFrame | None:
    path = Path(root) / "metadata" / "subject_splits.parquet"
    if not path.exists():
        return None
    try:
        frame = pl.read_parquet(path, glob=False)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"not a readable parquet file ({reader_detail(exc)})", file=str(path),
                        fix="rewrite it (subject_id int64, split string), or remove it to split by --seed") from exc
    for col in ("subject_id", "split"):
        if col not in frame.columns:
            raise DataError(f"no '{col}' column", file=str(path), column=col,
                            fix="subject_splits.parquet holds subject_id and split")
    ids, rows = _cast_keeping_track(frame.get_column("subject_id"), pl.Int64)
    if rows:
        raise DataError("subject ids must be integers", file=str(path), column="subject_id", rows=rows,
                        values=[frame.get_column("subject_id")[r] for r in rows],
                        fix="write the subject ids as in data/ (MEDS uses int64)")
    return pl.DataFrame({"subject_id": ids, "split": frame.get_column("split").cast(pl.Utf8)})


def write_parquet_typed(frame: pl.DataFrame, path: str | Path, types: dict[str, pa.DataType]) -> Path:
    """Write `frame` as Parquet with the named columns cast to exactly these Arrow types (others as
    polars has them): what a MEDS validator reads back is then the standard's own schema."""
    table = frame.to_arrow()
    schema = pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in table.schema])
    pq.write_table(table.cast(schema), path)
    return Path(path)


def write_meds(
    root: str | Path,
    events: pl.DataFrame,
    *,
    splits: pl.DataFrame | None = None,
    codes: pl.DataFrame | None = None,
    dataset_name: str = "ehrdx_synthetic",
    shard_size: int = 50_000,
) -> Path:
    """Write events as a MEDS dataset: data/<split>/<n>.parquet sharded by subject, plus metadata."""
    root = Path(root)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    events = events.select(
        pl.col("subject_id").cast(pl.Int64), pl.col("time").cast(pl.Datetime("us")), pl.col("code").cast(pl.Utf8),
        pl.col("numeric_value").cast(pl.Float32),
    )
    subjects = events.select(pl.col("subject_id").unique().sort())
    if splits is None:
        splits = subjects.with_columns(pl.lit("train").alias("split"))
    splits = splits.select(pl.col("subject_id").cast(pl.Int64), pl.col("split").cast(pl.Utf8))
    write_parquet_typed(splits, root / "metadata" / "subject_splits.parquet", MEDS_SPLITS_TYPES)
    for split in splits.get_column("split").unique().sort():
        ids = splits.filter(pl.col("split") == split).get_column("subject_id").sort()
        for n, start in enumerate(range(0, len(ids), shard_size)):
            chunk = ids.slice(start, shard_size)
            out = root / "data" / split / f"{n}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            shard = events.filter(pl.col("subject_id").is_in(chunk.implode())).sort(
                "subject_id", "time", nulls_last=False, maintain_order=True)
            write_parquet_typed(shard, out, MEDS_DATA_TYPES)
    if codes is None:
        codes = events.select(pl.col("code").unique().sort()).with_columns(
            pl.lit(None, dtype=pl.Utf8).alias("description"),
            pl.lit(None, dtype=pl.List(pl.Utf8)).alias("parent_codes"),
        )
    write_parquet_typed(codes, root / "metadata" / "codes.parquet", MEDS_CODES_TYPES)
    (root / "metadata" / "dataset.json").write_text(json.dumps({
        "dataset_name": dataset_name, "dataset_version": "1", "etl_name": "ehrdx", "etl_version": "0.1.0",
        "meds_version": "0.4.0", "created_at": datetime.now(UTC).isoformat(),
    }, indent=2))
    return root


def map_split_names(frame: pl.DataFrame, mapping: dict[str, str] | None, source: str) -> pl.DataFrame:
    """Subject splits with every split name mapped to train/tuning/held_out. A name that is neither a MEDS
    split nor mapped is an error listing the names found: its patients are never silently left out."""
    mapping = mapping or {}
    names = frame.get_column("split").unique().drop_nulls().sort().to_list()
    unknown = [n for n in names if n not in mapping and n not in MEDS_SPLITS]
    if unknown:
        counts = frame.group_by("split").len().sort("split")
        found = ", ".join(f"{s} ({n:,} subjects)" for s, n in counts.iter_rows() if s is not None)
        example = ",".join(f"{n}={_guess(n)}" for n in unknown)
        raise DataError(f"split name(s) {', '.join(repr(n) for n in unknown)} are not MEDS splits "
                        f"({', '.join(MEDS_SPLITS)}); splits found: {found}", file=source, column="split",
                        fix=f"map them with --split-names, e.g. --split-names {example}")
    if not mapping:
        return frame
    return frame.with_columns(pl.col("split").replace(mapping))


def _guess(name: str) -> str:
    low = name.lower()
    if low.startswith(("val", "tun", "dev")):
        return "tuning"
    if low.startswith(("test", "held", "hold", "eval")):
        return "held_out"
    return "train" if low.startswith("train") else "held_out"
