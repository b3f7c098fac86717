"""An event store as a source: prediction times at visit ends (or given), labels from the task's windows over
the events or from given targets (a long table or MEDS task directories)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.batches import HISTORY, MATRIX, ROWS, SEQUENCE, MatrixSet, SampleSet
from ehrdx.data.bits import row_blocks
from ehrdx.data.counts import count_matrix, history_features
from ehrdx.data.history import HistorySet
from ehrdx.data.meds import MEDS_SPLITS, map_split_names, read_subject_splits
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.data.sparse import SparseTable
from ehrdx.data.splits import SPLIT_RULE, rarest_label, split_strata
from ehrdx.data.store import EventStore
from ehrdx.errors import DataError, ModelError
from ehrdx.sources.base import NOT_IN_MODEL
from ehrdx.tasks.chunks import PATIENTS_WITHOUT_SAMPLES
from ehrdx.tasks.icd10 import fill_icd10
from ehrdx.tasks.labels import LabelVocab, describe_from_codes
from ehrdx.tasks.scan import codes_of_labels, label_first_times, labels_missing_from
from ehrdx.tasks.select import LabelSelector, check_label_spellings
from ehrdx.tasks.targets import Targets
from ehrdx.tasks.task import (
    TaskSpec,
    build_samples,
    code_label_index,
    mask_before_introduction,
    rows_of_subjects,
)


def given_tables(targets: Targets, given: np.ndarray, col: np.ndarray, window_end: np.ndarray,
                 introduced: np.ndarray, introduced_from) -> tuple[SparseTable, SparseTable, dict[str, int]]:
    """Given targets in the vocabulary's columns (`col`: each label's column in the targets, -1: none) for
    the samples whose targets row is `given`, packed, a block of samples at a time (no [S, L] table);
    entries whose window ends before the label's introduction are unknown (counted, as
    mask_before_introduction counts them)."""
    L, have = len(col), col >= 0
    ys, masks, masked = [], [], Counter()
    for r in row_blocks(len(given), L):
        rows = given[r]
        y, mask = np.zeros((len(rows), L), dtype=bool), np.zeros((len(rows), L), dtype=bool)
        y[:, have] = np.asarray(targets.y_bits[rows])[:, col[have]]
        mask[:, have] = np.asarray(targets.mask_bits[rows])[:, col[have]]
        masked.update(mask_before_introduction(mask, window_end[r], introduced, introduced_from))
        ys.append(SparseTable.from_dense(y))
        masks.append(SparseTable.from_dense(mask))
    if not ys:
        return (SparseTable.from_entries(0, L, np.zeros(0, np.int64), np.zeros(0, np.int64)),) * 2 + ({},)
    return SparseTable.concat(ys), SparseTable.concat(masks), dict(masked)


def input_name(store: EventStore) -> str:
    """What messages call the store: the data it was read from (its MEDS folder, events file or OMOP folder),
    since the store itself is by default a temporary folder the user never named; else its folder."""
    sources = [Path(s) for s in store.meta.get("sources", [])]
    if not sources:
        return str(store.directory)
    common = Path(os.path.commonpath(sources)) if len(sources) > 1 else sources[0]
    for folder in (common, *common.parents):  # MEDS shards lie under data/, at any depth (one shard: its file)
        if folder.name == "data" and (folder.parent / "metadata").is_dir():
            return str(folder.parent)
    return str(common)


class EventSource:
    kind = "events"

    def __init__(self, store: EventStore, targets: Targets | None = None) -> None:
        self.store = store
        self.targets = targets
        self.name = input_name(store)

    def __len__(self) -> int:
        return len(self.store)

    # -- fitted on training rows -----------------------------------------------------------------
    def fit_labels(self, rows: np.ndarray, selector: LabelSelector, infer_introduced: bool) -> LabelVocab:
        """The labels recorded among `rows`, each with its codes, description and introduction date."""
        store, targets = self.store, self.targets
        if targets is None:
            first = label_first_times(store, rows, selector)
        else:  # labels with a known positive among training patients; first record = first positive time
            t_rows = rows_of_subjects(store, store.store_ids(targets.subject_id, "targets"), "targets")
            in_train = np.isin(t_rows, rows)
            first = {}
            for j, lab in enumerate(targets.labels):  # a label's column at a time (targets may be index lists)
                pos = targets.y_bits[:, j] & targets.mask_bits[:, j] & in_train
                if pos.any():
                    first[lab] = int(targets.time[pos].min())
        spec = str(selector.spec)  # named by what the user gave, not the store's (often temporary) folder
        check_label_spellings(first, file=spec[4:] if spec.startswith("map:") else None, column="--labels",
                              fix=f"the event codes that --labels '{spec}' reads these labels from differ only in "
                              "case or spaces: correct the codes, or give --labels map:FILE mapping every spelling "
                              "to one label")
        codes = codes_of_labels(store, selector, rows)
        info = {lab: {"codes": sorted(codes.get(lab, [])), **selector.info.get(lab, {})} for lab in first}
        describe_from_codes(info, store.code_descriptions())  # the data's own code descriptions
        fill_icd10(info, first)  # ICD-10-CM parents/descriptions where the optional package is installed
        vocab = LabelVocab.from_first_times(first, info, infer_introduced)
        if len(vocab) == 0:  # named by what the user gave (--labels, its map), not the store's folder
            raise DataError(f"no label code of --labels '{spec}' occurs in the {len(rows):,} training patients' events"
                            + ("" if targets is None else " (targets: no known positive among them)"),
                            file=spec[4:] if spec.startswith("map:") else None,
                            fix="check --labels against the codes in the data (ehrdx reads them from events; "
                            "--until and the split decide which events the training patients have)")
        return vocab

    def fit_encoder(self, rows: np.ndarray, min_code_count: int) -> EventEncoder:
        return EventEncoder.fit(self.store, rows, min_code_count)

    # -- samples and model inputs ----------------------------------------------------------------
    def samples(self, rows: np.ndarray | None, vocab: LabelVocab, task: TaskSpec, selector: LabelSelector, *,
                times=None, require_labels: bool = True) -> Samples:
        """Samples of the given patients (all by default) at visit ends or at (row, time) pairs; with this
        source's targets, at their prediction times and with their labels instead of the task's windows."""
        store, targets = self.store, self.targets
        rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
        index = code_label_index(store, selector, vocab)
        L = len(vocab)
        introduced = vocab.introduced_seconds()
        introduced_from = vocab.introduced_from()
        if targets is None:
            out = build_samples(store, rows, task, index, L, times=times, require_labels=require_labels,
                                introduced=introduced, introduced_from=introduced_from)
            # Labels in the data that this model does not know (e.g. newer codes): left out, and said so.
            for lab in labels_missing_from(store, rows, selector, vocab):
                out.counts[NOT_IN_MODEL + lab] = 1
            return out
        t_rows = rows_of_subjects(store, store.store_ids(targets.subject_id, "targets"), "targets")
        keep = np.isin(t_rows, rows)
        s = build_samples(store, rows, task, index, L, times=(t_rows[keep], targets.time[keep]),
                          require_labels=False)
        # Align the given labels to the samples (both are unique by (row, time)) and to the vocabulary.
        origin = int(targets.time.min(initial=0))
        key_t = t_rows[keep].astype(np.int64) * 2**40 + targets.time[keep] - origin
        key_s = s.row.astype(np.int64) * 2**40 + s.time - origin
        order = np.argsort(key_t)
        at = order[np.searchsorted(key_t[order], key_s)]
        col = np.array([targets.labels.index(lab) if lab in targets.labels else -1 for lab in vocab.labels])
        have = col >= 0
        given = np.flatnonzero(keep)[at]  # the targets' row of each sample
        s.y, s.mask, masked = given_tables(targets, given, col, s.window_end, np.where(have, introduced, -np.inf),
                                           introduced_from)
        s.counts.update(masked)
        if not have.all():
            s.counts["labels_not_in_targets"] = int((~have).sum())
        if require_labels:
            usable = s.mask_bits.rows_any()
            if (~usable).any():
                s.counts["samples_without_known_labels_left_out"] = int((~usable).sum())
                before = len(np.unique(s.row))
                s = s.subset(usable)
                lost = before - len(np.unique(s.row)) + s.counts.get(PATIENTS_WITHOUT_SAMPLES, 0)
                if lost:  # patients none of whose samples is left: said as patients too
                    s.counts[PATIENTS_WITHOUT_SAMPLES] = lost
        return s

    def dataset(self, samples: Samples, encoder: EventEncoder, inputs: str, new_onset: bool,
                context: int | None = None):
        if inputs == SEQUENCE:  # context: the visits a sequence reads (data/windows.py); None: all
            return SequenceSet(self.store, samples, encoder, new_onset=new_onset, context=context)
        # The targets and training mask stay packed (no [S, L] copy): models read a batch's rows or a label's
        # column at a time.
        y, known = samples.y_bits, samples.train_mask_bits(new_onset)
        if inputs == HISTORY:
            return HistorySet(self.store, samples, encoder, y, known)
        features = history_features(self.store, samples, encoder)
        if inputs == ROWS:
            return SampleSet(features, y, known)
        if inputs == MATRIX:
            return MatrixSet(count_matrix(features, encoder.n_codes), y, known)
        raise ModelError(f"an event source cannot make model inputs of kind '{inputs}'")

    def summary(self, samples: Samples, dataset) -> dict:
        return {"excluded": samples.counts}

    @property
    def notes(self) -> dict[str, int]:
        """What reading the events left out, counted by reason."""
        return dict(self.store.counts)

    @property
    def names(self) -> dict[str, list[str]]:
        """What a note counts, where it has names (e.g. the ignored columns)."""
        return self.store.names

    @property
    def warnings(self) -> list[str]:
        """What reading the events did without, in words (e.g. an unreadable codes.parquet)."""
        return self.store.warnings

    # -- splits and the oracle -------------------------------------------------------------------
    def default_splits(self, seed: int, fractions=(0.7, 0.15, 0.15), selector: LabelSelector | None = None,
                       meds: str | Path | None = None, split_names: dict[str, str] | None = None,
                       rule: int = SPLIT_RULE):
        """Train/validation/test rows: MEDS subject_splits (train/tuning/held_out) where the dataset has
        them, else a seeded split stratified by each patient's rarest label. `split_names` maps other split
        names (test, val ...) to those three; an unmapped other name is an error. `rule`: the seeded split's
        (data.splits.SPLIT_RULE; a saved model's own is `split_rule_`)."""
        ids = np.asarray(self.store.subject_ids)
        if meds is not None:
            splits = read_subject_splits(meds)
            if splits is not None:
                path = str(Path(meds) / "metadata" / "subject_splits.parquet")
                twice = splits.get_column("subject_id").is_duplicated()
                if twice.any():  # the join below would make each one two patients
                    raise DataError(f"{splits.filter(twice).get_column('subject_id').n_unique()} subject(s) listed "
                                    "more than once", file=path, column="subject_id",
                                    rows=twice.arg_true().head(5).to_list(),
                                    fix="list each subject once, in one split")
                splits = map_split_names(splits, split_names, path)
                frame = pl.DataFrame({"subject_id": ids, "row": np.arange(len(ids))}).join(
                    splits, on="subject_id", how="left")
                missing = frame.filter(pl.col("split").is_null()).height
                if missing:
                    raise DataError(f"{missing} subject(s) have no split", file=path,
                                    column="split", fix="list every subject in subject_splits.parquet")
                return tuple(np.sort(frame.filter(pl.col("split") == s).get_column("row").to_numpy())
                             for s in MEDS_SPLITS)
        strata = self.patient_strata(selector) if selector is not None else np.full(len(ids), -1, np.int64)
        return split_strata(strata, fractions, seed=seed, rule=rule)

    def patient_strata(self, selector: LabelSelector) -> np.ndarray:
        """Each patient's rarest label ever recorded (data.splits.rarest_label): the strata of the seeded split."""
        store = self.store
        vocab = LabelVocab(sorted({lab for c in store.code_names for lab in selector.labels_of(c)}))
        if len(vocab) == 0:
            return np.full(len(store), -1, np.int64)
        at, lab = code_label_index(store, selector, vocab).expand(np.asarray(store.codes).astype(np.int64))
        row = np.searchsorted(np.asarray(store.offsets), at, side="right") - 1
        pairs = np.unique(row * len(vocab) + lab)  # each (patient, label) once
        return rarest_label(len(store), pairs // len(vocab), pairs % len(vocab), len(vocab))

    def oracle(self, oracle: pl.DataFrame, samples: Samples, labels: list[str]) -> np.ndarray:
        """Oracle probabilities (from ehrdx synth) aligned to samples (by subject and prediction time)."""
        missing_cols = [f"p_{lab}" for lab in labels if f"p_{lab}" not in oracle.columns]
        if missing_cols:
            raise DataError(f"oracle has no column(s) {', '.join(missing_cols)}",
                            fix="use the oracle written with the data")
        key = pl.DataFrame({"subject_id": np.asarray(self.store.subject_ids)[samples.row], "t": samples.time})
        frame = oracle.with_columns(pl.col("prediction_time").dt.epoch("s").alias("t"))
        mat = key.join(frame, on=["subject_id", "t"], how="left", maintain_order="left").select(
            [f"p_{lab}" for lab in labels]).to_numpy().astype(np.float64)
        if np.isnan(mat).any():
            raise DataError("the oracle lacks some prediction times of this task",
                            fix="the built-in oracle covers the next-visit task at visit ends")
        return mat
