"""The runs of `ehrdx demo` on built-in synthetic data, as library calls: the command prints what they return.

Event streams: a longitudinal cohort written as MEDS, a sequence model predicting the diseases coded at the next
visit (beside the gbm and logistic baselines and the oracle), and a growing label list: a model trained on the
data as of 2020-01-01 (before U07.1 and the E11 split) that takes the newer labels with `update_model`. Patient
table: a snapshot cohort and an MLP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ehrdx.data.synth import generate_cohort, generate_longitudinal, write_cohort, write_longitudinal
from ehrdx.data.table import read_table
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.pipeline import train_and_evaluate
from ehrdx.update import update_model

AS_OF = "2020-01-01"  # the growing-label demo's first model sees the data up to this date
BASELINES = ("gbm", "logistic")  # gradient boosting on history features: the baseline to beat
UPDATE_EPOCHS = 2  # update_model's default fine-tuning


def event_cohort(patients: int, seed: int, out: Path):
    """The longitudinal cohort, written as MEDS (with a label map) under `out`: (cohort, paths)."""
    cohort = generate_longitudinal(patients, seed)
    return cohort, write_longitudinal(cohort, out)


def event_classifier(paths: dict, model: str, hidden: int, epochs: int, seed: int) -> EHRClassifier:
    """The demo's event model: the next-visit task over the cohort's label map."""
    return EHRClassifier(model=model, task="next-visit", labels=f"map:{paths['label_map']}", hidden=hidden,
                           max_epochs=epochs, seed=seed)


def event_splits(st, paths: dict, seed: int):
    """Train, tuning and held-out store rows: the cohort's MEDS subject_splits."""
    return patient_splits(st, paths["meds"], seed)


def train_event_demo(st, splits, cohort, clf: EHRClassifier, on_epoch: Callable | None = None,
                     on_baseline: Callable[[str], None] | None = None):
    """Train `clf`, evaluate it beside the count baselines and the oracle: (clf, metrics), with the cohort's
    disease descriptions in metrics["labels_described"]."""
    clf, metrics = train_and_evaluate(st, clf, splits, oracle=cohort.oracle, baselines=BASELINES,
                                      on_epoch=on_epoch, on_baseline=on_baseline)
    metrics["labels_described"] = cohort.info["diseases"]
    return clf, metrics


def model_as_of(paths: dict, store_dir: Path, clf: EHRClassifier, seed: int, on_epoch: Callable | None = None):
    """`clf` fitted on the data as it was on AS_OF (its own store in `store_dir`)."""
    old_st = open_store(meds=paths["meds"], store_dir=store_dir, until=AS_OF)
    old_splits = event_splits(old_st, paths, seed)
    clf.fit(old_st, old_splits[0], old_splits[1], on_epoch=on_epoch)
    return clf


def grow_labels(old: EHRClassifier, st, paths: dict, seed: int, parent_dir: Path,
                on_epoch: Callable | None = None):
    """The AS_OF model updated with the labels of the whole data: (new model, update report)."""
    return update_model(old, st, event_splits(st, paths, seed), parent_dir=parent_dir, on_epoch=on_epoch)


def table_cohort(patients: int, seed: int, out: Path):
    """The snapshot cohort written under `out`, and its patient table read back: (cohort, table)."""
    cohort = generate_cohort(patients, seed)
    paths = write_cohort(cohort, out)
    return cohort, read_table(paths["table"])


def train_table_demo(table, cohort, hidden: int, depth: int, epochs: int, seed: int,
                     on_epoch: Callable | None = None):
    """An MLP on the patient table, evaluated beside the oracle: (clf, metrics), with the cohort's disease
    descriptions in metrics["labels_described"]."""
    clf = EHRClassifier(hidden=hidden, layers=depth, max_epochs=epochs, seed=seed)
    clf, metrics = train_and_evaluate(table, clf, seed=seed, oracle=cohort.oracle, on_epoch=on_epoch)
    metrics["labels_described"] = cohort.info["diseases"]
    return clf, metrics
