"""A patient table as a source: one row per patient, one prediction time each (the table's own moment), the
labels of its label column. There are no events, so no task windows, no new-onset mode and no sequences: the
models that read ROWS or a MATRIX learn from it (ehrdx.models.registry)."""

from __future__ import annotations

import numpy as np
import polars as pl

from ehrdx.data.batches import MATRIX, ROWS, MatrixSet, SampleSet
from ehrdx.data.counts import count_matrix
from ehrdx.data.preprocess import TablePreprocessor
from ehrdx.data.samples import Samples
from ehrdx.data.splits import split_patients
from ehrdx.data.table import PatientTable
from ehrdx.errors import DataError, ModelError
from ehrdx.sources.base import NOT_IN_MODEL
from ehrdx.tasks.labels import LabelVocab


class TableSource:
    kind = "table"

    def __init__(self, table: PatientTable) -> None:
        self.table = table
        self.name = table.source

    def __len__(self) -> int:
        return len(self.table)

    def fit_labels(self, rows: np.ndarray, selector=None, infer_introduced: bool = False) -> LabelVocab:
        labels = self.table.labels or []
        vocab = LabelVocab.fit([labels[i] for i in rows])
        # no ICD-10-CM descriptions: a table's label column does not say which vocabulary its labels are from
        if len(vocab) == 0:
            raise DataError("no disease labels in the training patients", file=self.name,
                            column=self.table.schema.label_column,
                            fix="at least one training patient needs at least one disease")
        return vocab

    def fit_encoder(self, rows: np.ndarray, min_code_count: int = 1) -> TablePreprocessor:
        part = self.table.subset(rows)
        return TablePreprocessor(part.schema).fit(part)

    def samples(self, rows: np.ndarray | None, vocab: LabelVocab, task=None, selector=None, *, times=None,
                require_labels: bool = True) -> Samples:
        """One sample per row; labels from the label column (all unknown where the table has none)."""
        rows = np.arange(len(self.table)) if rows is None else np.asarray(rows, dtype=np.int64)
        n, L = len(rows), len(vocab)
        counts: dict[str, int] = {}
        if self.table.labels is not None:
            y, unknown = vocab.encode([self.table.labels[i] for i in rows])
            mask = np.ones((n, L), dtype=bool)
            counts = {NOT_IN_MODEL + lab: c for lab, c in unknown.items()}
        else:
            y, mask = np.zeros((n, L), dtype=np.float32), np.zeros((n, L), dtype=bool)
        zeros = np.zeros(n, dtype=np.int64)
        return Samples(row=rows, time=zeros, cutoff=zeros, n_visits=zeros, window_end=zeros, y=y, mask=mask,
                       history=np.zeros((n, L), dtype=bool), counts=counts)

    def dataset(self, samples: Samples, encoder: TablePreprocessor, inputs: str, new_onset: bool = False):
        features = encoder.transform(self.table.subset(samples.row))
        if inputs == ROWS:
            return SampleSet(features, samples.y_bits, samples.mask_bits)
        if inputs == MATRIX:
            return MatrixSet(count_matrix(features, encoder.n_codes), samples.y_bits, samples.mask_bits)
        raise ModelError(f"a patient table cannot make model inputs of kind '{inputs}' (no events: "
                         "sequence models need an event stream)")

    def summary(self, samples: Samples, dataset) -> dict:
        """Patients, feature values unseen in training, labels the model does not know (as the table
        classifier reported them)."""
        unknown = getattr(dataset, "features", None)
        out: dict = {"patients": len(samples), "unknown": dict(unknown.unknown) if unknown is not None else {}}
        labels = {k[len(NOT_IN_MODEL):]: v for k, v in samples.counts.items() if k.startswith(NOT_IN_MODEL)}
        if labels:
            out["labels_not_in_model"] = labels
        # what reading the table left out (extra columns, by name) or made up (row numbers as ids)
        out.update({k: self.table.names.get(k, v) for k, v in self.table.notes.items()})
        return out

    @property
    def notes(self) -> dict[str, int]:
        """What reading the table left out or found odd, counted by reason."""
        return dict(self.table.notes)

    @property
    def names(self) -> dict[str, list[str]]:
        """What a note counts, where it has names (e.g. the ignored columns)."""
        return dict(self.table.names)

    @property
    def warnings(self) -> list[str]:
        """What reading the table did without, in words: nothing so far (its oddities are counted)."""
        return []

    def default_splits(self, seed: int, fractions=(0.7, 0.15, 0.15), selector=None, **_):
        """Train/validation/test rows, seeded, stratified by each patient's label set."""
        labels = self.table.labels or [[] for _ in range(len(self.table))]
        y, _ = LabelVocab.fit(labels).encode(labels)
        return split_patients(y, fractions, seed=seed)

    def oracle(self, oracle: pl.DataFrame, samples: Samples, labels: list[str]) -> np.ndarray:
        """Oracle probabilities (from ehrdx synth) aligned to the samples' patients and to `labels`."""
        ids = [self.table.patient_ids[i] for i in samples.row]
        frame = oracle.with_columns(pl.col(oracle.columns[0]).cast(pl.Utf8).alias("_id"))
        missing_cols = [f"p_{lab}" for lab in labels if f"p_{lab}" not in frame.columns]
        if missing_cols:
            raise DataError(f"oracle has no column(s) {', '.join(missing_cols)}",
                            fix="use the oracle written with the data")
        aligned = pl.DataFrame({"_id": ids}).join(frame, on="_id", how="left", maintain_order="left")
        mat = aligned.select([f"p_{lab}" for lab in labels]).to_numpy().astype(np.float64)
        if np.isnan(mat).any():
            raise DataError("oracle lacks some patients of the table", fix="use the oracle written with the data")
        return mat
