"""Multi-label targets on disk, in two forms (MEDS's label schema holds one value per row, so it has no
multi-label form of its own).

Long table (Parquet or CSV), columns subject_id, prediction_time, label, value:
  - one row with an empty label for every prediction time (so a time with no positive still exists);
  - a row (label, value=true) for every positive;
  - a row (label, value empty) for every label that is unknown at that time (masked: censored, not yet
    defined, or already recorded in new-onset mode);
  every other label at a listed time is a negative.

MEDS task directories: DIR/<label>/labels.parquet per label, in the MEDS label schema (subject_id,
prediction_time, boolean_value); all labels share the same prediction times, and a time missing from a
label's file means that label is unknown there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.bits import BitTable, PackedTargets
from ehrdx.data.csv_errors import check_short_rows, csv_read_error, without_blank_lines
from ehrdx.data.meds import FRACTION_CUT, MEDS_LABEL_TYPES, write_parquet_typed
from ehrdx.data.sparse import SparseTable
from ehrdx.data.store import EventStore
from ehrdx.data.subject_ids import is_text_ids
from ehrdx.errors import DataError


@dataclass
class Targets(PackedTargets):
    """Given labels: per prediction time, its positives and unknown labels, kept as index lists (`y_bits`,
    `mask_bits`; given dense, converted), read and written a label's column at a time; `y` and `mask`
    are the whole dense tables on demand (small label sets)."""

    subject_id: np.ndarray  # [S] int64, or text where the events table had text ids (ehrdx.data.subject_ids)
    time: np.ndarray  # [S] seconds
    labels: list[str]
    y_bits: BitTable  # [S, L] positives
    mask_bits: BitTable  # [S, L] True where known
    counts: dict[str, int] = field(default_factory=dict)  # what reading changed: times cut to the second

    def __post_init__(self) -> None:
        self.y_bits = self.y_bits if isinstance(self.y_bits, BitTable) else SparseTable.from_dense(
            np.asarray(self.y_bits) > 0.5)
        self.mask_bits = self.mask_bits if isinstance(self.mask_bits, BitTable) else SparseTable.from_dense(
            np.asarray(self.mask_bits, dtype=bool))

    @property
    def mask(self) -> np.ndarray:
        return self.y_mask

    def __len__(self) -> int:
        return len(self.subject_id)


def _ts(seconds: np.ndarray) -> pl.Series:
    return (pl.Series(np.asarray(seconds, dtype=np.int64)) * 1_000_000).cast(pl.Datetime("us"))


def write_long(targets: Targets, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = pl.DataFrame({"subject_id": targets.subject_id, "prediction_time": _ts(targets.time)})
    parts = [base.with_columns(pl.lit(None, pl.Utf8).alias("label"), pl.lit(None, pl.Boolean).alias("value"))]
    for j, label in enumerate(targets.labels):
        pos = targets.y_bits[:, j] & targets.mask_bits[:, j]  # a label's column at a time
        unk = ~targets.mask_bits[:, j]
        parts.append(base.filter(pl.Series(pos)).with_columns(pl.lit(label).alias("label"),
                                                              pl.lit(True).alias("value")))
        parts.append(base.filter(pl.Series(unk)).with_columns(pl.lit(label).alias("label"),
                                                              pl.lit(None, pl.Boolean).alias("value")))
    frame = pl.concat(parts).sort("subject_id", "prediction_time", "label", nulls_last=False)
    if path.suffix.lower() == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def write_meds_tasks(targets: Targets, directory: str | Path) -> Path:
    root = Path(directory)
    if np.asarray(targets.subject_id).dtype.kind not in "iu":
        raise DataError("MEDS label files need integer subject ids and these are text", file=str(root),
                        fix="write the targets as a long table (--format long), which keeps text ids")
    for j, label in enumerate(targets.labels):
        if not label or "/" in label or label in (".", ".."):
            raise DataError(f"label {label!r} cannot be a directory name", fix="rename the label in the label map")
        keep = targets.mask_bits[:, j]
        out = root / label / "labels.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        frame = pl.DataFrame({"subject_id": targets.subject_id[keep], "prediction_time": _ts(targets.time[keep]),
                              "boolean_value": targets.y_bits[:, j][keep]})
        write_parquet_typed(frame, out, MEDS_LABEL_TYPES)
    return root


def read_targets(path: str | Path) -> Targets:
    """A long table (file) or a directory of per-label MEDS task directories."""
    path = Path(path)
    if path.is_dir():
        return _read_meds_tasks(path)
    if not path.exists():
        raise DataError("targets file not found", file=str(path), fix="check the path")
    try:  # a bad row is an error naming the file (and the row, where it is too long or too short)
        if path.suffix.lower() != ".csv":
            frame = pl.read_parquet(path, glob=False)
        else:
            frame = pl.read_csv(path, glob=False, schema_overrides={
                "subject_id": pl.Utf8, "prediction_time": pl.Datetime("us"), "label": pl.Utf8, "value": pl.Boolean})
            frame = without_blank_lines(frame, path)
            check_short_rows(frame, path)
    except pl.exceptions.PolarsError as exc:
        raise csv_read_error(path, exc, problem="could not be read as a targets table (subject_id, prediction_time, "
                                                "label, value)") from exc
    if "subject_id" in frame.columns and not is_text_ids(frame.get_column("subject_id")):
        frame = frame.with_columns(pl.col("subject_id").cast(pl.Int64))  # integer ids, as written
    for col in ("subject_id", "prediction_time", "label"):
        if col not in frame.columns:
            raise DataError(f"no '{col}' column", file=str(path), column=col,
                            fix="a targets table has subject_id, prediction_time, label and value")
    if "value" not in frame.columns:  # positives only
        frame = frame.with_columns(pl.when(pl.col("label").is_not_null()).then(True).alias("value"))
    frame = frame.with_columns(pl.col("prediction_time").cast(pl.Datetime("us")).dt.epoch("s").alias("t"))
    bad = frame.get_column("t").is_null()
    if bad.any():
        rows = bad.arg_true().head(5).to_list()
        raise DataError("empty prediction times", file=str(path), column="prediction_time", rows=rows)
    counts = whole_seconds(frame, str(path))
    times = frame.select("subject_id", "t").unique().sort("subject_id", "t")
    labels = sorted(frame.get_column("label").drop_nulls().unique().to_list())
    index = {lab: j for j, lab in enumerate(labels)}
    n, L = times.height, len(labels)
    rows = times.with_row_index("i")
    lab = frame.filter(pl.col("label").is_not_null()).join(rows, on=["subject_id", "t"], how="left")
    i = lab.get_column("i").to_numpy().astype(np.int64)
    j = np.array([index[v] for v in lab.get_column("label").to_list()], dtype=np.int64)
    val = boolean_values(lab.get_column("value"), path, "value")
    known, positive = val.is_not_null().to_numpy(), val.fill_null(False).to_numpy()
    # Index lists, not [S, L] arrays: the positives, and per time its unknown labels (every other is known).
    y = SparseTable.from_entries(n, L, i[positive], j[positive])
    mask = SparseTable.from_entries(n, L, i[~known], j[~known], flip=np.ones(n, bool))
    return Targets(times.get_column("subject_id").to_numpy(), times.get_column("t").to_numpy(), labels, y, mask,
                   counts)


def whole_seconds(frame: pl.DataFrame, source: str, rows_named: bool = True) -> dict[str, int]:
    """The store keeps whole seconds, and so do given targets (`t`): their prediction times whose fraction of a
    second is cut are counted (as the events' are, meds.FRACTION_CUT); two times of a patient that become one
    are refused, as --times refuses them (each would take the other's labels)."""
    us = pl.col("prediction_time").cast(pl.Datetime("us")).dt.epoch("us")
    times = frame.select("subject_id", "t", us.alias("us")).unique()
    cut = int((times.get_column("us") != times.get_column("t") * 1_000_000).sum())
    clash = times.select(pl.struct("subject_id", "t").is_duplicated()).to_series()
    if clash.any():
        both = times.filter(clash).select("subject_id", "t").unique()
        rows = (frame.with_row_index("row").join(both, on=["subject_id", "t"]).get_column("row").sort().head(5)
                .to_list() if rows_named else None)
        raise DataError(f"{both.height} prediction time(s) of a patient are given more than once within one second "
                        f"({int(clash.sum())} different times): cut to the whole seconds the event store keeps, each "
                        "would be one prediction time",
                        file=source, column="prediction_time", rows=rows,
                        fix="give each patient's prediction times at least a second apart, or as one time")
    return {FRACTION_CUT: cut} if cut else {}


def boolean_values(value: pl.Series, path: Path, column: str) -> pl.Series:
    """Target values as booleans: true, or a number above 0.5 (0/1 integers or probabilities, as Parquet
    files often hold them); an empty value stays empty (unknown)."""
    if value.dtype == pl.Boolean:
        return value
    if value.dtype.is_numeric():
        return value.cast(pl.Float64) > 0.5  # a comparison keeps nulls
    raise DataError(f"target values of type {value.dtype}", file=str(path), column=column,
                    fix="write true/false (or 1/0), empty for an unknown label")


def _read_meds_tasks(root: Path) -> Targets:
    files = sorted(root.glob("*/labels.parquet")) or sorted(root.glob("*/*.parquet"))
    if not files:
        raise DataError("no <label>/labels.parquet task directories", file=str(root),
                        fix="write one MEDS task directory per label (subject_id, prediction_time, boolean_value)")
    frames = []
    for f in files:
        fr = pl.read_parquet(f, glob=False)
        for col in ("subject_id", "prediction_time", "boolean_value"):
            if col not in fr.columns:
                raise DataError(f"no '{col}' column", file=str(f), column=col, fix="use the MEDS label schema")
        frames.append(fr.select("subject_id", pl.col("prediction_time").cast(pl.Datetime("us")),
                                pl.lit(f.parent.name).alias("label"),
                                boolean_values(fr.get_column("boolean_value"), f, "boolean_value").alias("value")))
    long = pl.concat(frames).with_columns(pl.col("prediction_time").dt.epoch("s").alias("t"))
    counts = whole_seconds(long, str(root), rows_named=False)  # rows of several files: the folder is named
    times = long.select("subject_id", "t").unique().sort("subject_id", "t").with_row_index("i")
    labels = sorted({f.parent.name for f in files})
    index = {lab: j for j, lab in enumerate(labels)}
    n, L = times.height, len(labels)
    joined = long.join(times, on=["subject_id", "t"], how="left")
    i = joined.get_column("i").to_numpy().astype(np.int64)
    j = np.array([index[v] for v in joined.get_column("label").to_list()], dtype=np.int64)
    val = joined.get_column("value")  # booleans (each file's read by boolean_values)
    known, positive = val.is_not_null().to_numpy(), val.fill_null(False).to_numpy()
    y = SparseTable.from_entries(n, L, i[positive], j[positive])
    # absent from a label's file: unknown. Most entries are known: packed first, then each row lists its fewer
    # exceptions (its unknown labels where most are known).
    mask = SparseTable.from_dense(BitTable.from_entries(n, L, i[known], j[known]))
    return Targets(times.get_column("subject_id").to_numpy(), times.get_column("t").to_numpy(), labels, y, mask,
                   counts)


def targets_from_samples(store: EventStore, samples, labels: list[str], new_onset: bool = False) -> Targets:
    """The targets ehrdx computed for a task, ready to write."""
    ids = store.original_ids(np.asarray(store.subject_ids)[samples.row]).to_numpy()  # as the user wrote them
    return Targets(ids, samples.time, list(labels), samples.y_bits, samples.train_mask_bits(new_onset))
