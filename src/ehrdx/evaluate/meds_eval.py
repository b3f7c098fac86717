"""Predictions in the MEDS prediction schema, one file per label, so that `meds-evaluation` can score them.

The MEDS ecosystem's scorer (`meds-evaluation`, `meds-evaluation-cli predictions_path=FILE output_file=OUT.json`) reads
one binary task per Parquet file with the columns

  subject_id int64, prediction_time timestamp[us], boolean_value bool (the true label),
  predicted_boolean_value bool, predicted_boolean_probability float32

(its `PredictionSchema`: MEDS's label schema plus the two predicted columns). A directory written here holds
one such file per label and `labels.json`, which maps each file to its label (label codes hold '/' and ':',
so file names are a number and a safe form of the code) and says what each file holds.

A file's rows are the samples whose label is known for that label, exactly the elements ehrdx's own metrics
score: a censored or not-yet-defined label is left out, never written as a negative, and for a new-onset
model a label already in the patient's history is left out too (`known` is the caller's mask). So
`roc_auc_score(boolean_value, predicted_boolean_probability)` is ehrdx's per-label AUROC, up to the float32
the schema stores probabilities in: rounding keeps their order, and can only tie two probabilities closer
than float32 tells apart (counted per label as `probabilities_tied_by_float32`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ehrdx.data.meds import write_parquet_typed
from ehrdx.errors import DataError
from ehrdx.ranking import block_elements, label_blocks

FORMAT = "meds-eval"
MANIFEST = "labels.json"
ID_MAP = "subject_ids.parquet"
PREDICTION_TYPES = {"subject_id": pa.int64(), "prediction_time": pa.timestamp("us"), "boolean_value": pa.bool_(),
                    "predicted_boolean_value": pa.bool_(), "predicted_boolean_probability": pa.float32()}
SCORER = ("pip install meds-evaluation; meds-evaluation-cli predictions_path=DIR/FILE output_file=FILE.json "
          "(one label per file; its roc_auc_score is computed on every row)")


def label_file_name(index: int, label: str, width: int = 3) -> str:
    """A file name for the `index`-th label: the number keeps names unique, the code keeps them readable."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")[:60]
    return f"{index:0{width}d}_{safe or 'label'}.parquet"


def check_meds_eval_dir(directory: str | Path, option: str = "--out") -> None:
    """Refuse, before any work, a directory that exists and holds anything but an earlier meds-eval output:
    writing replaces the whole directory, and ehrdx replaces only what it wrote."""
    root = Path(directory)
    if not root.is_dir() or not any(root.iterdir()):
        return
    manifest = root / MANIFEST
    try:
        ours = json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise DataError(f"{option} is a directory that holds other files, and a meds-eval output replaces "
                        "its directory whole", file=str(root),
                        fix=f"give {option} a new or empty directory (or one an earlier --format meds-eval wrote)")


def write_meds_eval(
    directory: str | Path,
    subject_id: np.ndarray,
    time: np.ndarray,
    y: np.ndarray,
    known: np.ndarray,
    proba: np.ndarray,
    labels: list[str],
    thresholds: np.ndarray,
    *,
    original_ids: pl.Series | None = None,
    about: dict | None = None,
) -> dict:
    """Write one MEDS prediction file per label with known samples, and `labels.json`; returns the manifest.

    Per sample: `subject_id` (int64), `time` (prediction time, seconds since 1970); per sample and label:
    `y` the true label, `known` whether it is known (only those are written), `proba` the probability;
    `thresholds` per label give `predicted_boolean_value` (probability >= threshold). `y`, `known` and `proba`
    are [S, L] arrays or tables read like them (packed targets, ranking.HeadScores): a block of labels is
    read at a time. `original_ids` (text,
    per sample) is given where the input's ids were text mapped to the int64 `subject_id`: the pairs are
    written to subject_ids.parquet. `about` (model, split, what was excluded) goes into the manifest.
    The directory is built beside `directory` and moved into place at the end, replacing an earlier
    meds-eval output (check_meds_eval_dir refuses any other)."""
    root = Path(directory)
    check_meds_eval_dir(root)
    subject_id = np.asarray(subject_id, dtype=np.int64)
    time = np.asarray(time, dtype=np.int64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    order = np.lexsort((time, subject_id))  # rows by subject, then time, in every file
    width = max(3, len(str(len(labels) - 1)))
    root.parent.mkdir(parents=True, exist_ok=True)
    build = root.parent / f".{root.name}.{os.getpid()}.tmp"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    rows, ids_sorted, time_sorted = [], subject_id[order], time[order]
    try:
        for b in label_blocks(len(order), len(labels), block_elements(proba)):  # no [S, L] copy of any input
            known_b = np.asarray(known[:, b], dtype=bool)[order]
            truth_b = np.asarray(y[:, b])[order] > 0.5
            proba_b = np.asarray(proba[:, b], dtype=np.float64)[order]
            for i, j in enumerate(range(b.start, b.stop)):
                rows.append(_write_label(build, j, labels[j], width, known_b[:, i], ids_sorted, time_sorted,
                                         truth_b[:, i], proba_b[:, i], thresholds[j]))
        ids = "as in the input (integers)"
        if original_ids is not None:
            pairs = pl.DataFrame({"subject_id": subject_id, "original_subject_id": original_ids.cast(pl.Utf8)})
            write_parquet_typed(pairs.unique().sort("subject_id"), build / ID_MAP,
                                {"subject_id": pa.int64(), "original_subject_id": pa.string()})
            ids = (f"the input's text ids, numbered as int64 (the MEDS schema's type) by the event store's rule; "
                   f"{ID_MAP} maps subject_id back to original_subject_id")
        manifest = {"format": FORMAT, "schema": {k: str(v) for k, v in PREDICTION_TYPES.items()},
                    "scorer": SCORER, "subject_id": ids, **(about or {}), "labels": rows}
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _replace_dir(build, root)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return manifest


def _write_label(build: Path, j: int, label: str, width: int, known: np.ndarray, subject_id: np.ndarray,
                 time: np.ndarray, truth: np.ndarray, proba: np.ndarray, threshold: float) -> dict:
    """Write label `j`'s file (its known samples; the inputs are in file order) and return its manifest row."""
    row = {"label": label, "file": None, "rows": int(known.sum()), "positives": int(truth[known].sum()),
           "threshold": float(threshold)}
    p64 = proba[known]
    p32 = p64.astype(np.float32)
    row["probabilities_tied_by_float32"] = int(len(np.unique(p64)) - len(np.unique(p32)))
    row["status"] = ("no known samples: no file" if not row["rows"] else "no positives" if not row["positives"]
                     else "no negatives" if row["positives"] == row["rows"] else "ok")
    if row["rows"]:
        row["file"] = label_file_name(j, label, width)
        frame = pl.DataFrame({
            "subject_id": subject_id[known],
            "prediction_time": (pl.Series(time[known]) * 1_000_000).cast(pl.Datetime("us")),
            "boolean_value": truth[known],
            "predicted_boolean_value": p64 >= threshold,
            "predicted_boolean_probability": p32,
        })
        write_parquet_typed(frame, build / row["file"], PREDICTION_TYPES)
    return row


def _replace_dir(new: Path, root: Path) -> None:
    """Move `new` to `root`; an existing `root` (checked to be ours or empty) is moved aside first and removed."""
    old = root.parent / f".{root.name}.{os.getpid()}.old"
    if root.exists():
        os.replace(root, old)
    os.replace(new, root)
    shutil.rmtree(old, ignore_errors=True)
