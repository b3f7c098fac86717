"""The main job, shared by the CLI and the demo: split by patient, fit, evaluate, compare with the oracle."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from ehrdx.api import EHRClassifier
from ehrdx.data.splits import kfold_patients, split_patients
from ehrdx.data.table import PatientTable
from ehrdx.errors import DataError
from ehrdx.evaluate.metrics import HEADLINE, evaluate_predictions, tune_thresholds
from ehrdx.tasks.labels import LabelVocab


def _oracle_matrix(oracle: pl.DataFrame, table: PatientTable, labels: list[str], rows: np.ndarray) -> np.ndarray:
    """Oracle probabilities aligned to table rows and to the model's label order."""
    ids = [table.patient_ids[i] for i in rows]
    frame = oracle.with_columns(pl.col(oracle.columns[0]).cast(pl.Utf8).alias("_id"))
    missing_cols = [f"p_{lab}" for lab in labels if f"p_{lab}" not in frame.columns]
    if missing_cols:
        raise DataError(f"oracle has no column(s) {', '.join(missing_cols)}", fix="use the oracle written with the data")
    aligned = pl.DataFrame({"_id": ids}).join(frame, on="_id", how="left", maintain_order="left")
    mat = aligned.select([f"p_{lab}" for lab in labels]).to_numpy().astype(np.float64)
    if np.isnan(mat).any():
        raise DataError("oracle lacks some patients of the table", fix="use the oracle written with the data")
    return mat


def train_and_evaluate(
    table: PatientTable,
    clf: EHRClassifier,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    oracle: pl.DataFrame | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    checkpoint=None,
    resume: bool = False,
) -> tuple[EHRClassifier, dict]:
    """Split patients, fit on train (early stopping and thresholds on validation), evaluate on test."""
    y_all, _ = LabelVocab.fit(table.labels).encode(table.labels)
    tr, va, te = split_patients(y_all, fractions, seed=seed)
    return _fit_eval(table, clf, tr, va, te, oracle, on_epoch, checkpoint, resume)


def _fit_eval(table, clf, tr, va, te, oracle, on_epoch, checkpoint=None, resume=False):
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te)), "split parts overlap"
    train_t, val_t, test_t = table.subset(tr), table.subset(va), table.subset(te)
    clf.fit(train_t, val_t, on_epoch=on_epoch, checkpoint=checkpoint, resume=resume)
    metrics: dict = {
        "split": {"train": len(tr), "val": len(va), "test": len(te), "seed": int(clf.seed)},
        "labels": clf.labels_,
        "train_summary": {k: v for k, v in clf.fit_summary_.items() if not k.endswith("_ids")},
        "history": clf.history_.to_dict(),
        "excluded": dict(table.notes),
    }
    if len(te):
        metrics["test"] = clf.evaluate(test_t)
    if oracle is not None and len(te):
        labels = clf.labels_
        y_te, _ = clf.label_vocab_.encode(test_t.labels)
        y_va, _ = clf.label_vocab_.encode(val_t.labels)
        p_va = _oracle_matrix(oracle, table, labels, va)
        thr = tune_thresholds(y_va, np.ones_like(y_va, bool), p_va) if len(va) else None
        metrics["oracle"] = evaluate_predictions(
            y_te, np.ones_like(y_te, bool), _oracle_matrix(oracle, table, labels, te), labels, thr
        )
    return clf, metrics


def cross_validate(
    table: PatientTable,
    make_clf: Callable[[], EHRClassifier],
    k: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    on_fold: Callable[[int, dict], None] | None = None,
) -> dict:
    """Grouped (by patient) K-fold: each fold is the test set once; the rest is split train/validation."""
    y_all, _ = LabelVocab.fit(table.labels).encode(table.labels)
    folds = kfold_patients(y_all, k, seed=seed)
    per_fold = []
    for f, test_rows in enumerate(folds):
        rest = np.sort(np.concatenate([folds[g] for g in range(k) if g != f]))
        tr_local, va_local, _ = split_patients(y_all[rest], (1 - val_fraction, val_fraction, 0.0), seed=seed + f)
        _, m = _fit_eval(table, make_clf(), rest[tr_local], rest[va_local], test_rows, None, None)
        fold_metrics = {key: m["test"][key] for key in HEADLINE}
        per_fold.append(fold_metrics)
        if on_fold is not None:
            on_fold(f, fold_metrics)
    summary = {}
    for key in HEADLINE:
        vals = [fm[key] for fm in per_fold if fm[key] is not None]
        summary[key] = {"mean": float(np.mean(vals)) if vals else None,
                        "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
    return {"k": k, "folds": per_fold, "summary": summary}
