"""Python API with scikit-learn's verbs: fit, predict_proba, predict, evaluate, save, load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ehrdx.artifacts import load_model, register_family, save_model
from ehrdx.data.batches import SampleSet
from ehrdx.data.preprocess import TablePreprocessor
from ehrdx.data.splits import split_patients
from ehrdx.data.table import PatientTable, TableSchema, read_table, table_from_frame
from ehrdx.errors import DataError, ModelError
from ehrdx.evaluate.metrics import describe_rows, evaluate_predictions, tune_thresholds
from ehrdx.models.mlp import MLPConfig, MLPModel, build_model
from ehrdx.tasks.icd10 import fill_icd10
from ehrdx.tasks.labels import LabelVocab
from ehrdx.train.loop import TrainConfig, TrainHistory, predict_logits, train_model

TableLike = PatientTable | pl.DataFrame | str | Path


class EHRClassifier:
    """Multi-label disease classifier for patient tables (one row per patient).

    Parameters mirror the CLI flags. Learned state ends in ``_``: ``preprocessor_``, ``label_vocab_``,
    ``model_``, ``thresholds_`` (per-label, tuned on validation), ``history_``, ``fit_summary_``.
    """

    def __init__(
        self,
        *,
        hidden: int = 128,
        depth: int = 2,
        dropout: float = 0.1,
        code_dim: int = 32,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 30,
        patience: int = 4,
        pos_weight: bool = False,
        seed: int = 0,
        val_fraction: float = 0.15,
        schema: TableSchema | None = None,
        device: str = "cpu",
        precision: str = "auto",
    ) -> None:
        self.hidden, self.depth, self.dropout, self.code_dim = hidden, depth, dropout, code_dim
        self.train_config = TrainConfig(
            lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs,
            patience=patience, pos_weight=pos_weight, seed=seed, device=device, precision=precision,
        )
        self.seed = seed
        self.val_fraction = val_fraction
        self.schema = schema

    # -- input -----------------------------------------------------------------------------------
    def _as_table(self, data: TableLike, *, for_fit: bool) -> PatientTable:
        if isinstance(data, PatientTable):
            return data
        fitted = hasattr(self, "preprocessor_")
        kwargs = (
            {"schema": self.preprocessor_.schema, "require_labels": False, "fixed_schema": True}
            if fitted and not for_fit
            else {"schema": self.schema, "require_labels": True}
        )
        if isinstance(data, pl.DataFrame):
            return table_from_frame(data, **kwargs)
        return read_table(data, **kwargs)

    def _samples(self, table: PatientTable) -> tuple[SampleSet, dict]:
        features = self.preprocessor_.transform(table)
        n, n_labels = len(table), len(self.label_vocab_)
        summary = {"patients": n, "unknown": dict(features.unknown)}
        if table.labels is not None:
            y, unknown_labels = self.label_vocab_.encode(table.labels)
            mask = np.ones((n, n_labels), dtype=bool)
            if unknown_labels:
                summary["labels_not_in_model"] = unknown_labels
        else:
            y = np.zeros((n, n_labels), dtype=np.float32)
            mask = np.zeros((n, n_labels), dtype=bool)
        return SampleSet(features, y, mask), summary

    # -- fit -------------------------------------------------------------------------------------
    def fit(
        self,
        data: TableLike,
        val: TableLike | None = None,
        on_epoch: Callable[[int, float, float | None], None] | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> EHRClassifier:
        """Fit on `data`. Without `val`, a stratified share of patients (val_fraction) is held out of
        `data` for early stopping and threshold tuning. Everything learned comes from training rows only.
        `checkpoint`: a directory for per-epoch checkpoints; `resume` continues from the one there."""
        table = self._as_table(data, for_fit=True)
        if val is None:
            y_all, _ = LabelVocab.fit(table.labels).encode(table.labels)
            f = self.val_fraction
            tr_rows, va_rows, _ = split_patients(y_all, (1 - f, f, 0.0), seed=self.seed)
            train_table, val_table = table.subset(tr_rows), table.subset(va_rows)
        else:
            train_table = table
            val_table = val if isinstance(val, PatientTable) else self._as_table(val, for_fit=True)
        if set(train_table.patient_ids) & set(val_table.patient_ids):
            raise DataError("the same patient ids appear in training and validation data",
                            file=table.source, column=table.schema.id_column,
                            fix="split by patient: each patient belongs to one part only")
        if len(train_table) == 0:
            raise DataError("no training patients", file=table.source)
        self.preprocessor_ = TablePreprocessor(train_table.schema).fit(train_table)
        self.label_vocab_ = LabelVocab.fit(train_table.labels)
        fill_icd10(self.label_vocab_.info, self.label_vocab_.labels)  # ICD-10-CM descriptions, if installed
        if len(self.label_vocab_) == 0:
            raise DataError("no disease labels in the training patients", file=table.source,
                            column=train_table.schema.label_column,
                            fix="at least one training patient needs at least one disease")
        train_set, train_summary = self._samples(train_table)
        val_set, val_summary = self._samples(val_table)

        torch.manual_seed(self.seed)
        config = MLPConfig(
            n_dense=self.preprocessor_.n_dense, n_codes=self.preprocessor_.n_codes,
            n_labels=len(self.label_vocab_), hidden=self.hidden, depth=self.depth,
            dropout=self.dropout, code_dim=self.code_dim,
        )
        self.model_ = MLPModel(config)
        self.model_.head.set_bias_from_prevalence(torch.from_numpy(train_set.y.mean(0)))
        self.history_: TrainHistory = train_model(self.model_, train_set, val_set, self.train_config, on_epoch,
                                                  checkpoint=checkpoint, resume=resume)
        if len(val_set):
            self.thresholds_ = tune_thresholds(val_set.y, val_set.y_mask, self._proba(val_set))
        else:
            self.thresholds_ = np.full(len(self.label_vocab_), 0.5)
        self.fit_summary_ = {
            "train_patients": len(train_table), "val_patients": len(val_table),
            "train": train_summary, "val": val_summary,
            # names only: columns left out because their values are (almost) unique per patient
            "identifier_like_columns": list(train_table.schema.identifier_like),
            "train_patient_ids": sorted(train_table.patient_ids), "val_patient_ids": sorted(val_table.patient_ids),
        }
        return self

    # -- predict ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ModelError("this EHRClassifier is not fitted yet: call fit() or ehrdx.load()")

    def _proba(self, samples: SampleSet) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-predict_logits(self.model_, samples).astype(np.float64)))

    def to(self, device: str = "auto") -> EHRClassifier:
        """Move the network to a device for prediction (auto, cpu, cuda, cuda:N)."""
        from ehrdx.train.device import resolve_device

        self._check_fitted()
        self.model_.to(resolve_device(device))
        return self

    @property
    def labels_(self) -> list[str]:
        self._check_fitted()
        return list(self.label_vocab_.labels)

    def predict_proba(self, data: TableLike) -> np.ndarray:
        """Probability of every label (columns in ``labels_`` order) for every patient row."""
        self._check_fitted()
        samples, self.last_prediction_summary_ = self._samples(self._as_table(data, for_fit=False))
        return self._proba(samples)

    def predict(self, data: TableLike, threshold: float | None = None) -> np.ndarray:
        """Multi-hot predictions at the tuned per-label thresholds (or one fixed threshold)."""
        proba = self.predict_proba(data)
        thr = self.thresholds_ if threshold is None else np.full(proba.shape[1], threshold)
        return proba >= thr[None, :]

    def evaluate(self, data: TableLike) -> dict:
        """All metrics on a labelled table, at 0.5 and at the tuned thresholds."""
        self._check_fitted()
        table = self._as_table(data, for_fit=False)
        if table.labels is None:
            raise DataError("evaluation needs a label column", file=table.source,
                            fix=f"add the '{self.preprocessor_.schema.label_column}' column")
        samples, summary = self._samples(table)
        result = evaluate_predictions(samples.y, samples.y_mask, self._proba(samples), self.labels_, self.thresholds_)
        describe_rows(result["per_label"], self.label_vocab_.descriptions())
        result["summary"] = summary
        return result

    # -- artifacts -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        return save_model(self, directory)

    @classmethod
    def load(cls, directory: str | Path) -> EHRClassifier:
        return load_model(directory)

    def artifact_parts(self) -> dict:
        return {
            "family": "table",
            "json": {"preprocessing.json": self.preprocessor_.to_dict(), "labels.json": self.label_vocab_.to_dict()},
            "state": {k: v.detach().contiguous().cpu() for k, v in self.model_.state_dict().items()},
            "config": {"model": self.model_.config.to_dict(), "train": self.train_config.to_dict(),
                       "thresholds": [float(t) for t in self.thresholds_],
                       "history": self.history_.to_artifact() if hasattr(self, "history_") else None},
        }

    @classmethod
    def from_parts(cls, config: dict, files: dict[str, dict], state: dict[str, torch.Tensor]) -> EHRClassifier:
        model_cfg = {k: v for k, v in config["model"].items() if k not in ("kind", "n_dense", "n_codes", "n_labels")}
        clf = cls(**model_cfg, **config["train"])
        clf.preprocessor_ = TablePreprocessor.from_dict(files["preprocessing.json"])
        clf.label_vocab_ = LabelVocab.from_dict(files["labels.json"])
        clf.model_ = build_model(config["model"])
        clf.model_.load_state_dict(state)
        clf.model_.eval()
        clf.thresholds_ = np.asarray(config["thresholds"], dtype=np.float64)
        return clf


register_family("table", ("preprocessing.json", "labels.json", "model.safetensors"), EHRClassifier.from_parts)
