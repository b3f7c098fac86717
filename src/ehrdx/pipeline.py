"""The main job, for any source (a patient table or event streams): split by patient, fit, evaluate on the
held-out patients, compare with the oracle and with baseline models. Shared by `ehrdx train`, the demo and
the benchmarks; written once, above the sources (ehrdx.sources)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from ehrdx.data.splits import kfold_patients, split_patients
from ehrdx.errors import DataError
from ehrdx.estimator import DEFAULT_MODEL, EHRClassifier
from ehrdx.evaluate.metrics import HEADLINE, K_VALUES, evaluate_predictions, evaluate_samples, tune_thresholds
from ehrdx.models.registry import EVENTS, TABLE, get_model
from ehrdx.tasks.labels import LabelVocab
from ehrdx.train.mixing import RULE as MIX_RULE


def headline(result: dict) -> dict:
    keys = (*HEADLINE, *[f"recall_at_{k}" for k in K_VALUES])
    return {k: result.get(k) for k in keys}


def train_and_evaluate(
    data,
    clf: EHRClassifier,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int | None = None,
    oracle: pl.DataFrame | None = None,
    baselines: tuple[str, ...] = (),
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    on_baseline: Callable[[str], None] | None = None,
    targets=None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_start: Callable[[], None] | None = None,
) -> tuple[EHRClassifier, dict]:
    """Fit `clf` on the training rows of `data` (early stopping and thresholds on validation), evaluate on
    the test rows; `splits` (train, validation, test rows) default to the source's seeded split. With an
    `oracle` (ehrdx synth), the oracle's scores on the same samples; with `baselines`, the same job for each
    named model with default settings. `on_start`: as `EHRClassifier.fit`'s (the model's fit only). Returns the
    fitted model and metrics.json's content."""
    source = clf.source(data, targets, for_fit=True)
    baselines = tuple(dict.fromkeys(baselines))  # one fit each ("gbm,gbm" fitted it twice)
    for name in baselines:  # a typo fails now, not after the model is fitted
        get_model(name, source.kind)
    same = [name for name in baselines if baseline_is_the_model(clf, name, source.kind)]
    baselines = tuple(name for name in baselines if name not in same)
    tr, va, te = splits if splits is not None else source.default_splits(
        clf.seed if seed is None else seed, fractions)
    for a, b in ((tr, va), (tr, te), (va, te)):
        if np.intersect1d(a, b).size:
            raise DataError("split parts share patients", fix="each patient belongs to one part only")
    t0 = time.perf_counter()
    clf.fit(source, tr, va, on_epoch=on_epoch, checkpoint=checkpoint, resume=resume, on_start=on_start)
    events = source.kind == EVENTS
    metrics: dict = {
        **({"task": clf.task_.to_dict()} if events else {}), "model": clf.model_name_,
        "split": {"train": len(tr), "val": len(va), "test": len(te), "seed": int(clf.seed)},
        "labels": clf.labels_, "train_summary": {k: v for k, v in clf.fit_summary_.items() if not k.endswith("_ids")},
        "history": clf.history_.to_dict(), "fit_seconds": round(time.perf_counter() - t0, 2),
        "excluded": source.notes, **({"excluded_names": source.names} if source.names else {}),
        **({"warnings": source.warnings} if source.warnings else {}),
        **({"baselines_left_out": {"names": same, "why": "the model itself, with the same settings: its column "
                                   "would repeat the model's"}} if same else {}),
    }
    if len(te) == 0:  # nothing to compare the baselines or the oracle on: said, not skipped without a word
        skipped = [*(["baselines " + ",".join(baselines)] if baselines else []),
                   *(["oracle"] if oracle is not None else [])]
        if skipped:
            metrics["not_evaluated"] = {"what": skipped, "why": "no test patients"}
        return clf, metrics
    test_s = clf.samples(source, te)
    result = clf.evaluate(source, samples=test_s)
    if events:
        metrics.update(test=result["all"], test_new_onset=result["new_onset"],
                       test_by_prior_visits=result["by_prior_visits"],
                       test_samples={"samples": result["samples"], "patients": result["patients"],
                                     "excluded": result["excluded"]})
    else:
        metrics["test"] = result
    if hasattr(clf.model_, "member_probabilities"):  # the auto ensemble: every candidate and the choice
        metrics.update(_candidates(clf, source, test_s))
    if oracle is not None and (not events or (clf.task_.kind == "next-visit" and targets is None)):
        metrics.update(_oracle_metrics(clf, source, oracle, va, test_s))
    if baselines:
        metrics["baselines"] = {}
        for name in baselines:
            if on_baseline is not None:
                on_baseline(name)
            settings = {"model": name, "seed": clf.seed, "max_epochs": clf.max_epochs, "device": clf.device,
                        "precision": clf.precision}
            if events:
                settings.update(task=clf.task_, labels=clf.selector_, infer_introduced=clf.infer_introduced)
            b = EHRClassifier(**settings)
            t1 = time.perf_counter()
            b.fit(source, tr, va)
            seconds = round(time.perf_counter() - t1, 2)
            r = b.evaluate(source, samples=test_s)
            metrics["baselines"][name] = ({"test": headline(r["all"]), "test_new_onset": headline(r["new_onset"]),
                                           "fit_seconds": seconds} if events else
                                          {"test": headline(r), "fit_seconds": seconds})
    return clf, metrics


# Settings a baseline takes from the model whatever they are (the task, labels, split, input), so they do not
# tell a baseline from the model; the others do (a gbm with its own gbm_params is another model).
_SHARED_WITH_BASELINES = ("model", "task", "labels", "new_onset", "censor", "infer_introduced", "schema",
                          "val_fraction", "seed", "max_epochs", "device", "precision")


def baseline_is_the_model(clf: EHRClassifier, name: str, kind: str) -> bool:
    """Whether the baseline `name` (fitted with default settings) would be `clf` again: same model, and every
    setting of `clf` that a baseline does not share at its default."""
    if name != (clf.model or DEFAULT_MODEL[kind]):
        return False
    mine, default = clf.get_params(), EHRClassifier(model=name).get_params()
    return all(mine[k] == default[k] for k in mine if k not in _SHARED_WITH_BASELINES)


def _candidates(clf: EHRClassifier, source, test_s) -> dict:
    """Each member of an ensemble on the test samples, and the per-label weights chosen on tuning samples."""
    ens = clf.model_
    probs = ens.member_probabilities(clf.dataset(source, test_s))
    candidates = {}
    for name, p in zip(ens.names, probs):
        r = evaluate_samples(test_s, p, clf.labels_, None)
        candidates[name] = {"test": headline(r["all"]), "test_new_onset": headline(r["new_onset"])}
    per_label = ens.weights_report(clf.labels_)
    return {"candidates": candidates, "ensemble": {"members": list(ens.names), "per_label": per_label,
                                                   "chosen_on": MIX_RULE}}


def _oracle_metrics(clf: EHRClassifier, source, oracle: pl.DataFrame, val_rows, test_s) -> dict:
    """The oracle's metrics on the test samples, at thresholds tuned on the validation samples as the
    model's were."""
    labels = clf.labels_
    val_s = clf.samples(source, val_rows)
    thr = (tune_thresholds(val_s.y_bits, val_s.train_mask_bits(clf.new_onset_), source.oracle(oracle, val_s, labels))
           if len(val_s) else None)
    p = source.oracle(oracle, test_s, labels)
    if source.kind == TABLE:
        return {"oracle": evaluate_predictions(test_s.y, test_s.mask, p, labels, thr)}
    o = evaluate_samples(test_s, p, labels, thr)
    return {"oracle": o["all"], "oracle_new_onset": o["new_onset"]}


def cross_validate(
    data,
    make_clf: Callable[[], EHRClassifier],
    k: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    on_fold: Callable[[int, dict], None] | None = None,
) -> dict:
    """Grouped (by patient) K-fold of a patient table: each fold is the test set once; the rest is split
    train/validation."""
    source = make_clf().source(data, for_fit=True)
    if source.kind != TABLE:
        raise DataError("cross-validation is for patient tables", fix="split event streams with MEDS subject_splits")
    labels = source.table.labels
    y_all, _ = LabelVocab.fit(labels).encode(labels)
    if k < 2 or k > len(source):  # each fold's test part needs a patient (kfold_patients' ValueError named neither)
        raise DataError(f"{k} folds need {k} patients or more (a test patient each); the table has {len(source):,}"
                        if k >= 2 else f"{k} folds: cross-validation needs at least 2", file=source.name, column="--cv",
                        fix=f"give --cv from 2 to {len(source):,}" if len(source) >= 2 else
                        "cross-validation needs at least 2 patients: train once (leave --cv out)")
    folds = kfold_patients(y_all, k, seed=seed)
    per_fold = []
    left_out: dict[str, dict[str, int]] = {"labels_not_in_model": {}, "unknown": {}}
    for f, test_rows in enumerate(folds):
        rest = np.sort(np.concatenate([folds[g] for g in range(k) if g != f]))
        tr_local, va_local, _ = split_patients(y_all[rest], (1 - val_fraction, val_fraction, 0.0), seed=seed + f)
        _, m = train_and_evaluate(source, make_clf(), (rest[tr_local], rest[va_local], test_rows))
        fold_metrics = {key: m["test"][key] for key in HEADLINE}
        for what, counts in left_out.items():  # each patient is tested in one fold: the sums count patients
            for name, n in m["test"].get("summary", {}).get(what, {}).items():
                counts[name] = counts.get(name, 0) + int(n)
        per_fold.append(fold_metrics)
        if on_fold is not None:
            on_fold(f, fold_metrics)
    summary = {}
    for key in HEADLINE:
        vals = [fm[key] for fm in per_fold if fm[key] is not None]
        summary[key] = {"mean": float(np.mean(vals)) if vals else None,
                        "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
    return {"k": k, "folds": per_fold, "summary": summary,
            "test_left_out": {what: counts for what, counts in left_out.items() if counts}}
