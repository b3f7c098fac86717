"""The one estimator: multi-label disease prediction from a patient table or from event streams.

    clf = EHRClassifier(model="gru", task="window:365d", labels="prefix:DX//", new_onset=True)
    clf.fit(store, train_rows, val_rows)             # an event store (ehrdx.open_store) and patient rows
    proba = clf.predict_samples(store, clf.samples(store, test_rows))
    metrics = clf.evaluate(store, test_rows)         # all labels, new onset, by prior visits

    clf = EHRClassifier().fit("train.csv")           # a patient table: 15% held out for validation
    proba = clf.predict_proba("new.csv")             # [patients, labels]

scikit-learn's contract: `__init__` stores its arguments unchanged, `get_params`/`set_params`/`clone` work,
everything derived (`model_name_`, `task_`, `selector_`, `train_config_`) and learned (`label_vocab_`,
`encoder_`, `model_`, `thresholds_`, `history_`, `fit_summary_`) is set by `fit`, and every other method
checks that it is fitted. What the data is, is the source's business (ehrdx.sources); which network or
model learns from it, the registry's (ehrdx.models.registry); this class holds what is common to all.
Everything learned comes from the training patients; validation patients stop training and tune thresholds.
(About 400 lines in one file on purpose: it is the one public class, its artifacts already live in
estimator_io.py and its argument checks in train/settings.py.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ehrdx.artifacts import load_model, register_family, save_model
from ehrdx.data.bits import label_counts
from ehrdx.data.samples import Samples
from ehrdx.data.splits import check_rows, split_patients
from ehrdx.data.store import EventStore
from ehrdx.data.table import PatientTable, frame_of, read_table, table_from_frame
from ehrdx.data.windows import context_note
from ehrdx.errors import DataError, ModelError, on_command_line, python_terms, warn_caller
from ehrdx.estimator_io import Artifacts
from ehrdx.evaluate.metrics import describe_rows, evaluate_predictions, evaluate_samples, tune_thresholds
from ehrdx.input_settings import visit_gap_differs, with_visit_gap
from ehrdx.models.registry import EVENTS, SEQUENCE, TABLE, ModelKind, get_model
from ehrdx.pretrained import EncoderStart, check_pretrained_patients, file_sha256, settings_from_encoder
from ehrdx.sources.events import EventSource
from ehrdx.sources.table import TableSource
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.scan import label_code_notes
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec, codes_of_labels
from ehrdx.train.ensemble import ENSEMBLE  # noqa: F401  (registers the `auto` model)
from ehrdx.train.fit import fit_model
from ehrdx.train.loop import TrainConfig
from ehrdx.train.scores import model_probabilities, model_scores
from ehrdx.train.settings import check_settings

DEFAULT_MODEL = {TABLE: "mlp", EVENTS: "auto"}
DEFAULT_LABELS = "prefix:DX//"  # event streams: codes DX//<label>
DEFAULT_PATIENCE = {TABLE: 4, EVENTS: 3}
# Errors say the command-line options behind the settings (most are raised for `ehrdx`); raised to a Python
# caller of the methods below they say these parameters (ehrdx.errors.python_terms).
PARAMETERS = {"--labels": "labels", "--task": "task", "--model": "model", "--hidden": "hidden", "--heads": "heads",
              "--layers": "layers", "--dropout": "dropout", "--lr": "lr", "--weight-decay": "weight_decay",
              "--batch-size": "batch_size", "--epochs": "max_epochs", "--patience": "patience", "--seed": "seed",
              "--val-fraction": "val_fraction", "--context": "context", "--init": "init", "--probe": "probe=True",
              "--new-onset": "new_onset=True", "--no-censor": "censor=False",
              "--infer-introduced": "infer_introduced=True", "--device": "device", "--precision": "precision",
              "--until": "open_store(until=...)", "--test-fraction": "patient_splits(fractions=...)"}
in_python_terms = python_terms(PARAMETERS)
EVENT_ONLY = {"task": "next-visit", "labels": None, "new_onset": False, "censor": True, "infer_introduced": False}


class EHRClassifier(Artifacts, BaseEstimator):
    """Multi-label disease prediction. Settings (one name each, for tables and event streams alike):

    model           a name from the registry (`ehrdx.models.registry.model_names()`); None: mlp for a table,
                    auto (gbm, gru and gbm-counts averaged with one weighting for all labels, equal weights
                    unless the validation patients clearly prefer another) for event streams
    task, labels    event streams: prediction task (next-visit, window:365d) and label selection (prefix:DX//,
                    regex:..., map:FILE); new_onset, censor, infer_introduced refine them. A table's labels are
                    its label column.
    hidden, layers, heads, dropout, code_dim    network size (layers None: the model's default)
    lr, weight_decay, batch_size, max_epochs, patience, pos_weight    training (None: the model's or the
                    source's default)
    monitor, schedule, warmup, min_steps    early stopping on validation loss (or masked macro auroc/auprc),
                    a constant or warm-up + cosine learning rate, the least optimiser steps (train/loop.py)
    min_code_count  event codes rarer than this in training read as the unknown code
    val_fraction    share of patients held out for validation when `fit` is given no validation rows
    seed, device, precision, schema (a TableSchema for tables)
    gbm_params      LightGBM settings over the gbm model's defaults (e.g. {"num_leaves": 31}); None: defaults
    context         sequence models (gru, lstm, transformer, auto's gru): read at most about this many of the
                    latest visits (N to 2N, data/windows.py) plus a summary of the earlier ones; None: the whole
                    history. Refused for models that do not read sequences.
    init, probe     event streams: start from a pretrained encoder directory (ehrdx pretrain): its input
                    vocabulary, sizes (hidden, layers, heads None: the encoder's) and body weights; `probe`
                    trains the label head only, on the frozen body (ehrdx.pretrained). model None: the
                    encoder's model; auto: the ensemble, its network member the encoder's model
    """

    def __init__(self, *, model: str | None = None, task: str | TaskSpec = "next-visit",
                 labels: str | LabelSelector | None = None, new_onset: bool = False, censor: bool = True,
                 hidden: int = 128, layers: int | None = None, heads: int = 4, dropout: float = 0.1,
                 code_dim: int = 32, lr: float = 2e-3, weight_decay: float = 1e-4, batch_size: int | None = None,
                 max_epochs: int = 30, patience: int | None = None, pos_weight: bool = False,
                 monitor: str = "loss", schedule: str = "constant", warmup: float = 0.0, min_steps: int = 0,
                 min_code_count: int = 1, val_fraction: float = 0.15, seed: int = 0, device: str = "cpu",
                 precision: str = "auto", infer_introduced: bool = False, schema=None,
                 gbm_params: dict | None = None, context: int | None = None, init: str | None = None,
                 probe: bool = False) -> None:
        self.model, self.task, self.labels, self.new_onset, self.censor = model, task, labels, new_onset, censor
        self.hidden, self.layers, self.heads, self.dropout, self.code_dim = hidden, layers, heads, dropout, code_dim
        self.lr, self.weight_decay, self.batch_size, self.max_epochs = lr, weight_decay, batch_size, max_epochs
        self.patience, self.pos_weight, self.min_code_count = patience, pos_weight, min_code_count
        self.monitor, self.schedule, self.warmup, self.min_steps = monitor, schedule, warmup, min_steps
        self.val_fraction, self.seed, self.device, self.precision = val_fraction, seed, device, precision
        self.infer_introduced, self.schema, self.gbm_params = infer_introduced, schema, gbm_params
        self.context, self.init, self.probe = context, init, probe

    # -- settings resolved for a source ----------------------------------------------------------
    def resolve_settings(self, kind: str) -> ModelKind:
        """Set what the settings mean for a source of this kind (`model_name_`, `task_`, `selector_`,
        `train_config_`); refuse settings that apply to the other kind only."""
        self.source_kind_ = kind
        self.model_name_ = self.model or DEFAULT_MODEL[kind]
        spec = get_model(self.model_name_, kind)
        if kind == TABLE:
            given = [k for k, v in EVENT_ONLY.items() if getattr(self, k) != v]
            if given:
                raise ModelError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to event streams "
                                 "only: a patient table's labels are its label column, one per patient\n  fix: "
                                 "leave them out for a table, or give events (MEDS, a long table or OMOP)")
            self.task_, self.selector_ = None, None
        else:
            self.task_ = self.task if isinstance(self.task, TaskSpec) else TaskSpec.parse(self.task, self.new_onset,
                                                                                           self.censor)
            labels = self.labels if self.labels is not None else DEFAULT_LABELS
            self.selector_ = labels if isinstance(labels, LabelSelector) else LabelSelector.parse(labels)
        self._check_context(spec, kind)
        self.layers_ = self.layers if self.layers is not None else spec.default_layers
        self.train_config_ = TrainConfig(
            lr=self.lr, weight_decay=self.weight_decay, batch_size=self.batch_size or spec.default_batch_size,
            max_epochs=self.max_epochs, patience=self.patience or DEFAULT_PATIENCE[kind], pos_weight=self.pos_weight,
            monitor=self.monitor, schedule=self.schedule, warmup=self.warmup, min_steps=self.min_steps,
            seed=self.seed, device=self.device, precision=self.precision)
        return spec

    def _check_context(self, spec: ModelKind, kind: str) -> None:
        if self.context is None:
            return
        inputs = spec.inputs_for(kind)
        if SEQUENCE not in (inputs if isinstance(inputs, tuple) else (inputs,)):
            raise ModelError(f"context bounds the visits a sequence model reads; {self.model_name_} does not read "
                             "visit sequences\n  fix: leave context out, or choose gru, lstm, transformer or auto")
        if isinstance(self.context, bool) or not isinstance(self.context, int | np.integer) or self.context < 1:
            raise ModelError(f"context must be a positive number of visits or None, not {self.context!r}")

    @property
    def new_onset_(self) -> bool:
        return bool(self.task_ is not None and self.task_.new_onset)

    # -- sources ---------------------------------------------------------------------------------
    def source(self, data, targets=None, *, for_fit: bool = False):
        """The source behind `data`: an event store (with given `targets`, if any) or a patient table
        (a PatientTable, a CSV/Parquet path, or a table in memory: ehrdx.data.table.frame_of)."""
        if isinstance(data, EventSource | TableSource):
            return data
        if isinstance(data, EventStore):
            differs = None if for_fit else visit_gap_differs(getattr(self, "input_", None),
                                                             int(data.meta.get("visit_gap_seconds", 0)))
            if differs and not on_command_line():  # the command has said so (its --visit-gap note)
                warn_caller(differs)
            return EventSource(data, targets)
        if isinstance(data, PatientTable):
            return TableSource(data)
        if isinstance(data, str | os.PathLike) and Path(data).is_dir():  # a MEDS or OMOP folder, most likely
            raise DataError("a folder, not a patient table: event data is read into a store first", file=str(data),
                            fix="store = ehrdx.open_store(meds=PATH) (or omop=PATH, or events=FILE for a long table), then "
                                "fit(store) / predict_proba(store)")
        if hasattr(self, "encoder_") and getattr(self, "source_kind_", TABLE) == EVENTS and not for_fit:
            # read as a patient table, an events file was refused for want of a label column (--label-col)
            given = "a file" if isinstance(data, str | os.PathLike) else f"a {type(data).__name__}"
            raise DataError(f"this model learned from event streams, and {given} was given, which would be read as a "
                            "patient table (one row per patient)",
                            file=str(data) if isinstance(data, str | os.PathLike) else None,
                            fix="read the events into a store first: store = ehrdx.open_store(events=FILE) (or meds=, "
                                "omop=), then predict_proba(store) or predict_samples(store, samples(store, rows))")
        fitted = hasattr(self, "encoder_") and getattr(self, "source_kind_", TABLE) == TABLE and not for_fit
        # predicting needs no patient id: a table without one is read in row order (ids 1, 2, ...)
        kwargs = ({"schema": self.encoder_.schema, "require_labels": False, "fixed_schema": True, "row_ids": True}
                  if fitted else {"schema": self.schema, "require_labels": True})
        table = read_table(data, **kwargs) if isinstance(data, str | os.PathLike) else table_from_frame(
            frame_of(data), **kwargs)
        return TableSource(table)

    def _default_rows(self, source) -> tuple[np.ndarray, np.ndarray]:
        """Train and validation rows when `fit` is given none: a seeded share (val_fraction) held out,
        stratified by label set for a table."""
        f = self.val_fraction
        if source.kind == TABLE:
            y = LabelVocab.fit(source.table.labels or []).encode(source.table.labels or [])[0]
        else:
            y = np.zeros((len(source), 0), dtype=np.float32)
        tr, va, _ = split_patients(y, (1 - f, f, 0.0), seed=self.seed)
        return tr, va

    # -- fit -------------------------------------------------------------------------------------
    @in_python_terms
    def fit(self, data, train_rows=None, val_rows=None, *, val=None, targets=None,
            on_epoch: Callable[[int, float, float | None], None] | None = None,
            checkpoint: str | Path | None = None, resume: bool = False,
            on_start: Callable[[], None] | None = None) -> EHRClassifier:
        """Fit on the `train_rows` of `data` (a store or a table); `val_rows` (or a separate `val` table)
        stop training and tune thresholds (none given with `train_rows`: no early stopping, thresholds 0.5).
        Without rows, a seeded share (val_fraction) of patients is held out for validation.
        `targets`: given labels for an event store. `checkpoint`/`resume`: per-epoch checkpoints. `on_start` is
        called once the labels and samples are checked, before the model is fitted (e.g. to show a progress bar
        only then)."""
        # both default models (mlp for a table, auto for events) are networks
        check_settings(self.get_params(), self.init, epochs=get_model(self.model or DEFAULT_MODEL[TABLE]).epochs)
        source = self.source(data, targets, for_fit=True)
        spec = self.resolve_settings(source.kind)
        val_source = source if val is None else self.source(val, for_fit=True)
        if val is not None and source.kind != TABLE:
            raise DataError("a separate validation source is for patient tables; an event store's validation "
                            "patients are rows of the same store", file=source.name,
                            fix="give fit(store, train_rows, val_rows) (ehrdx.patient_splits makes them)")
        if train_rows is None:
            train_rows, val_rows = self._default_rows(source) if val is None else (np.arange(len(source)), None)
        train_rows = check_rows(train_rows, len(source), "train_rows", source.name)
        if val_rows is None:  # a separate validation table: all of it; training rows alone: no validation
            val_rows = np.arange(len(val_source)) if val is not None else np.zeros(0, np.int64)
        val_rows = check_rows(val_rows, len(val_source), "val_rows", val_source.name)
        self._check_parts(source, train_rows, val_source, val_rows)
        pretrained, sizes = None, {}
        self.pretrained_ = None  # a refit without an encoder keeps no record of an earlier fit's
        if self.init is not None or self.probe:  # the encoder's model, sizes and vocabulary (ehrdx.pretrained)
            pretrained, spec, sizes = settings_from_encoder(self, source.kind)
            check_pretrained_patients(pretrained, {"validation": np.asarray(source.store.subject_ids)[val_rows]})
        self.label_vocab_ = source.fit_labels(train_rows, self.selector_, self.infer_introduced)
        self.encoder_ = pretrained.input_encoder if pretrained else source.fit_encoder(train_rows, self.min_code_count)
        train_s = self.samples(source, train_rows)
        val_s = self.samples(val_source, val_rows)
        if len(train_s) == 0:
            raise DataError("no training samples with a known label (every patient has a single visit, or "
                            "all windows are censored)", file=source.name,
                            fix="use a window task (--task window:365d), or --no-censor, or both (a patient with "
                                "one visit has no next visit, and a window after it is censored)")
        torch.manual_seed(self.seed)
        # What the model reads, at prediction too: set only once every check above passed (a fit that fails on
        # its input leaves a fitted model as it was), and not changed by set_params after fit
        self.context_ = self.context
        if source.kind == EVENTS:  # how the store split visits: a store split otherwise is said at prediction
            self.input_ = with_visit_gap(getattr(self, "input_", None), int(source.store.meta["visit_gap_seconds"]))
        train_set, val_set = self.dataset(source, train_s), self.dataset(val_source, val_s)
        settings = {"hidden": self.hidden, "layers": self.layers_, "heads": self.heads, "dropout": self.dropout,
                    "code_dim": self.code_dim, "n_codes": self.encoder_.n_codes, "train": self.train_config_,
                    "gbm_params": self.gbm_params, **sizes}
        self.model_ = spec.build(train_set, len(self.label_vocab_), settings)
        start, members = None, getattr(self.model_, "has_members", False)
        if pretrained is not None:  # the body, and each label's row from its codes' pretrained rows
            codes = codes_of_labels(source.store, self.selector_, train_rows)
            start = EncoderStart(pretrained, [codes.get(lab, []) for lab in self.label_vocab_.labels], self.probe)
            if members:  # auto: its network member, when the ensemble builds it
                self.model_.start_network = start
        if on_start is not None:
            on_start()
        try:
            with start(self.model_) if start is not None and not members else contextlib.nullcontext():
                self.history_ = fit_model(self.model_, train_set, val_set, self.train_config_, on_epoch,
                                          checkpoint=checkpoint, resume=resume)
        finally:
            if members:
                self.model_.start_network = None  # the encoder is not kept with the model
        if start is not None:
            # its absolute path: ehrdx update reads the encoder again, maybe from another working directory
            self.pretrained_ = {"directory": str(Path(pretrained.where).resolve()), "probe": bool(self.probe),
                                "config_sha256": file_sha256(Path(pretrained.where) / "config.json"),
                                "labels_from_encoder": start.labels_started}
        self.thresholds_ = (tune_thresholds(val_s.y_bits, val_s.train_mask_bits(self.new_onset_), self.scores(
            val_source, val_s)) if len(val_s) else np.full(len(self.label_vocab_), 0.5))
        self.fit_summary_ = self._fit_summary(source, train_rows, train_s, train_set, val_source, val_rows, val_s,
                                              val_set)
        return self

    def _check_parts(self, source, train_rows, val_source, val_rows) -> None:
        if source.kind == TABLE:
            ids = source.table.patient_ids
            if {ids[i] for i in train_rows} & {val_source.table.patient_ids[i] for i in val_rows}:
                raise DataError("the same patient ids appear in training and validation data", file=source.name,
                                column=source.table.schema.id_column,
                                fix="split by patient: each patient belongs to one part only")
        elif np.intersect1d(train_rows, val_rows).size:
            raise DataError("the same patients are in training and validation", file=source.name,
                            fix="split by patient: each patient belongs to one part only")
        if len(train_rows) == 0:
            raise DataError("no training patients", file=source.name)

    def _fit_summary(self, source, train_rows, train_s, train_set, val_source, val_rows, val_s, val_set) -> dict:
        out = {"train_patients": len(train_rows), "val_patients": len(val_rows),
               **({"without_validation": self._without_validation(len(val_rows))} if len(val_s) == 0 else {})}
        # a label the training samples give one class only: the model cannot learn it, and says so
        pos, known = label_counts(train_s.y_bits, train_s.train_mask_bits(self.new_onset_))
        hits = {what: hit for what, hit in (("no_positives", pos == 0), ("no_negatives", (pos == known) & (known > 0)))
                if hit.any()}
        if hits:  # the first 50 names, and how many in all (thousands of labels on a few patients: most of them)
            out["labels_with_one_class_in_training"] = {what: [self.labels_[j] for j in np.flatnonzero(hit)[:50]]
                                                        for what, hit in hits.items()}
            out["labels_with_one_class_in_training_counts"] = {what: int(hit.sum()) for what, hit in hits.items()}
        if source.kind == TABLE:
            out.update(train=source.summary(train_s, train_set), val=val_source.summary(val_s, val_set),
                       # names only: columns left out because their values are (almost) unique per patient
                       identifier_like_columns=list(source.table.schema.identifier_like),
                       train_patient_ids=sorted(source.table.patient_ids[i] for i in train_rows),
                       val_patient_ids=sorted(val_source.table.patient_ids[i] for i in val_rows))
            return out
        sources: dict[str, int] = {}
        for s in self.label_vocab_.introduced_from():
            if s:
                sources[s] = sources.get(s, 0) + 1
        out.update(train_samples=len(train_s), val_samples=len(val_s), train=source.summary(train_s, train_set),
                   val=val_source.summary(val_s, val_set), labels=len(self.label_vocab_),
                   input_codes=self.encoder_.n_codes - 1, labels_with_introduced_at=sources,
                   **({"pretrained": self.pretrained_} if getattr(self, "pretrained_", None) else {}))
        selector = getattr(self, "selector_", None)
        if selector is not None and selector.kind == "map":  # a label of the map no training patient has: said
            mapped = {lab for labels in selector.mapping.values() for lab in labels}
            absent = sorted(mapped - set(self.label_vocab_.labels))
            if absent:
                out["map_labels_left_out"] = {"count": len(absent), "labels": absent[:50],
                                              "why": "in the label map, but no training patient has a code of them"}
        if selector is not None and source.targets is None:  # given targets: labels are not read from codes
            out.update(label_code_notes(source.store, selector, train_rows))
        if self.context_ is not None:
            out.update(context_note(self.context_, [train_s, val_s]))
        return out

    def _without_validation(self, val_patients: int) -> str:
        """What a fit without validation samples did instead of early stopping and tuning thresholds."""
        m, epochs = self.model_, self.history_.epochs_run
        if isinstance(m, torch.nn.Module):
            stop = f"no early stopping, all {epochs} epochs ran"
        elif getattr(m, "has_members", False):
            stop = f"the members weighted equally, the network member ran all {epochs} epochs"
        elif hasattr(m, "gbm"):
            stop = f"no early stopping, each label's booster ran {m.gbm.rounds_without_validation} rounds"
        else:
            stop = "no early stopping (this model has none)"
        return f"no validation samples ({val_patients} validation patients): {stop}; thresholds 0.5, none tuned"

    # -- samples and predictions -----------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "label_vocab_"):
            raise ModelError(f"this {type(self).__name__} is not fitted yet: call fit() or ehrdx.load()")

    @property
    def labels_(self) -> list[str]:
        self._check_fitted()
        return list(self.label_vocab_.labels)

    @in_python_terms
    def samples(self, data, rows: np.ndarray | None = None, *, times=None, require_labels: bool = True,
                targets=None) -> Samples:
        """Samples of the given patients (all by default): for event streams at visit ends, at given
        (row, time) pairs, or at the prediction times of given `targets`; one per patient for a table."""
        self._check_fitted()
        source = self.source(data, targets)
        rows = None if rows is None else check_rows(rows, len(source), "rows", source.name)
        return source.samples(rows, self.label_vocab_, self.task_, self.selector_, times=times,
                              require_labels=require_labels)

    def dataset(self, data, samples: Samples):
        """What the model reads for these samples (a SequenceSet, SampleSet, MatrixSet or HistorySet; for a
        model that reads several kinds, a dict of them by kind)."""
        self._check_fitted()
        source = self.source(data)
        inputs = get_model(self.model_name_).inputs_for(source.kind)
        bounded = {"context": self.context_} if self.context_ is not None else {}  # sequences only (_check_context)
        if isinstance(inputs, tuple):
            return {kind: source.dataset(samples, self.encoder_, kind, self.new_onset_,
                                         **(bounded if kind == SEQUENCE else {})) for kind in inputs}
        return source.dataset(samples, self.encoder_, inputs, self.new_onset_, **bounded)

    def predict_samples(self, data, samples: Samples) -> np.ndarray:
        """Probability of every label (``labels_`` order) for every sample."""
        self._check_fitted()
        if len(samples) == 0:
            return np.zeros((0, len(self.label_vocab_)), dtype=np.float32)
        return model_probabilities(self.model_, self.dataset(data, samples))

    @in_python_terms
    def predict_proba(self, data, rows: np.ndarray | None = None) -> np.ndarray:
        """Probability of every label for every patient row of a table, or every sample (visit end) of the
        given patients of an event store. `last_prediction_summary_` says what was unseen in training. A table
        needs no patient id column: its rows come back in their order (a row with an empty id in an id column
        is refused, as a broken export)."""
        source = self.source(data)
        samples = self.samples(source, rows, require_labels=False)
        proba = self.predict_samples(source, samples)
        if source.kind == TABLE:
            self.last_prediction_summary_ = source.summary(samples, self.dataset(source, samples))
        return proba

    @in_python_terms
    def predict(self, data, rows: np.ndarray | None = None, *, threshold: float | None = None) -> np.ndarray:
        """Multi-hot predictions for the rows predict_proba scores, at the tuned per-label thresholds (or one
        fixed threshold)."""
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number)
                                      or not 0 <= threshold <= 1):
            raise ModelError(f"threshold {threshold!r} is not a probability from 0 to 1\n  fix: leave it out for "
                             "the tuned per-label thresholds (thresholds_), or give one such as 0.5")
        proba = self.predict_proba(data, rows)
        thr = self.thresholds_ if threshold is None else np.full(proba.shape[1], threshold)
        return proba >= thr[None, :]

    @in_python_terms
    def evaluate(self, data, rows: np.ndarray | None = None, proba: np.ndarray | None = None,
                 samples: Samples | None = None) -> dict:
        """Metrics at 0.5 and at the tuned thresholds. Event streams: per prediction time, for all labels, new
        onset only, and by number of prior visits; a table: per patient, with a summary of unseen values."""
        self._check_fitted()
        source = self.source(data)
        samples = samples if samples is not None else self.samples(source, rows)
        proba = proba if proba is not None else self.scores(source, samples)
        if source.kind == EVENTS:
            return evaluate_samples(samples, proba, self.labels_, self.thresholds_, self.label_vocab_.descriptions())
        if source.table.labels is None:
            raise DataError("evaluation needs a label column", file=source.name,
                            fix=f"add the '{self.encoder_.schema.label_column}' column")
        result = evaluate_predictions(samples.y, samples.mask, proba, self.labels_, self.thresholds_)
        describe_rows(result["per_label"], self.label_vocab_.descriptions())
        result["summary"] = source.summary(samples, self.dataset(source, samples))
        return result

    def scores(self, data, samples: Samples):
        """predict_samples for evaluation: the same probabilities, kept as scores computed a block at a time
        (ranking.HeadScores) where a sequence model's [samples, labels] table would be large."""
        self._check_fitted()
        if len(samples) == 0:
            return np.zeros((0, len(self.label_vocab_)))
        return model_scores(self.model_, self.dataset(data, samples))

    def to(self, device: str = "auto") -> EHRClassifier:
        """Move the network to a device for prediction (auto, cpu, cuda, cuda:N); models that are not
        networks run on the CPU whatever is asked."""
        from ehrdx.train.device import resolve_device

        self._check_fitted()
        if isinstance(self.model_, torch.nn.Module):
            self.model_.to(resolve_device(device))
        return self

    # -- artifacts (the parts are written and read by ehrdx.estimator_io.Artifacts) ----------------
    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        encoder = (getattr(self, "pretrained_", None) or {}).get("directory")
        if encoder is not None and Path(directory).resolve() == Path(encoder).resolve():
            # the encoder is an input: a model saved over it loses it, and update can no longer check it
            raise ModelError(f"{directory}: this is the pretrained encoder the model started from (init): saving "
                             f"here would replace it\n  fix: save the model to another directory")
        return save_model(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> EHRClassifier:
        return load_model(directory)


register_family("table", ("preprocessing.json", "labels.json", "model.safetensors"), EHRClassifier.from_parts)
register_family("events", ("preprocessing.json", "labels.json", "task.json", "model.safetensors"),
                EHRClassifier.from_parts)

EventClassifier = EHRClassifier  # the name event-stream code used before there was one estimator
