"""Every model of the benchmark behind one signature: `run(prepared, settings) -> (proba, info)`, with
`proba` [held-out samples, labels] in `prepared.labels` order. A new model is one line in MODELS."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import scipy.sparse as sp

from ehrdx.data.samples import Samples
from ehrdx.data.sequences import YEAR, birth_times
from ehrdx.data.store import EventStore, concat_ranges
from external.protocol import Prepared


@dataclass
class Settings:
    max_epochs: int = 15
    seed: int = 0
    threads: int = 1


Runner = Callable[[Prepared, Settings], tuple[np.ndarray, dict]]


def ehrdx_model(model: str, **params) -> Runner:
    """ehrdx's EventClassifier through its Python API, fitted on the task's targets at the protocol's
    prediction times (training patients; the tuning patients stop training and tune thresholds)."""

    def run(p: Prepared, s: Settings) -> tuple[np.ndarray, dict]:
        from ehrdx.estimator import EventClassifier

        clf = EventClassifier(model=model, task=p.task, labels=p.selector, max_epochs=s.max_epochs, seed=s.seed,
                              **params)
        t0 = time.perf_counter()
        clf.fit(p.store, p.rows["train"], p.rows["tuning"], targets=p.targets)
        fit_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        proba = clf.predict_samples(p.store, p.samples["held_out"])
        columns = [clf.labels_.index(lab) for lab in p.labels]
        h = clf.history_
        return proba[:, columns], {"fit_seconds": round(fit_seconds, 2),
                                   "predict_seconds": round(time.perf_counter() - t1, 2),
                                   "epochs_run": h.epochs_run, "best_epoch": getattr(h, "best_epoch", None),
                                   "train_samples": clf.fit_summary_["train_samples"]}

    return run


def ehrdx_pretrained(model: str, pretrain_epochs: int = 5) -> Runner:
    """`ehrdx pretrain` on the training patients (stopping on the tuning patients' next-visit loss; no label
    read), then `model` fitted from that encoder (`init`, the encoder's sizes) as ehrdx_model fits it."""

    def run(p: Prepared, s: Settings) -> tuple[np.ndarray, dict]:
        import tempfile

        from ehrdx.pretrain import pretrain

        t0 = time.perf_counter()
        encoder = pretrain(p.store, (p.rows["train"], p.rows["tuning"], p.rows["held_out"]),
                           max_epochs=pretrain_epochs, seed=s.seed)
        where = tempfile.mkdtemp(prefix="ehrdx_encoder_")
        encoder.save(where)
        pretrain_seconds = time.perf_counter() - t0
        proba, info = ehrdx_model(model, init=where, hidden=None)(p, s)
        return proba, {**info, "pretrain_seconds": round(pretrain_seconds, 2)}

    return run


def ehrdx_searched(model: str, trials: int) -> Runner:
    """`ehrdx train --search TRIALS` as a user runs it: Optuna's seeded search of the model's settings (each
    member's for auto) scored on the tuning patients, then the model fitted with the best, as ehrdx_model."""

    def run(p: Prepared, s: Settings) -> tuple[np.ndarray, dict]:
        from ehrdx.estimator import EventClassifier
        from ehrdx.search import search_settings

        clf = EventClassifier(model=model, task=p.task, labels=p.selector, max_epochs=s.max_epochs, seed=s.seed)
        t0 = time.perf_counter()
        found = search_settings(clf, p.store, (p.rows["train"], p.rows["tuning"], p.rows["held_out"]), trials,
                                targets=p.targets)
        search_seconds = time.perf_counter() - t0
        proba, info = ehrdx_model(model, **{k: v for k, v in found["chosen"].items()})(p, s)
        best = {m: round(r["best_tuning_auprc"], 4) for m, r in found["members"].items()}
        return proba, {**info, "search_seconds": round(search_seconds, 2), "chosen": found["chosen"],
                       "best_tuning_auprc": best}

    return run


def new_onset_training(runner: Runner) -> Runner:
    """`runner` on the task in new-onset mode: trained (and stopped, thresholds tuned) only on the samples
    where a label was not recorded at or before the prediction time; predicted and scored as before."""

    def run(p: Prepared, s: Settings) -> tuple[np.ndarray, dict]:
        return runner(replace(p, task=replace(p.task, new_onset=True)), s)

    return run


def code_counts(store: EventStore, samples: Samples, columns: np.ndarray) -> sp.csr_matrix:
    """[samples, codes + 1]: how often each code occurs at or before the prediction time (static facts
    included), then age in years. `columns` maps store code ids to columns (-1: not a feature)."""
    starts, ends = np.asarray(store.offsets)[samples.row], samples.cutoff
    pos = concat_ranges(starts, ends)
    owner = np.repeat(np.arange(len(samples)), ends - starts)
    col = columns[np.asarray(store.codes)[pos]]
    keep = col >= 0
    n_cols = int(columns.max()) + 1
    counts = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (owner[keep], col[keep])),
                           shape=(len(samples), n_cols))
    age = (samples.time - birth_times(store, samples.row)) / YEAR
    return sp.hstack([counts, sp.csr_matrix(age[:, None].astype(np.float32))], format="csr")


def lgbm_counts(p: Prepared, s: Settings, new_onset: bool = False, **params) -> tuple[np.ndarray, dict]:
    """The baseline users compare against: count each code before the prediction time, one
    LGBMClassifier per label (training samples where the label is known), early stopping on tuning.
    LightGBM's defaults (lr 0.05), or `params` over them. `new_onset`: trained only where the label was not
    recorded before the prediction time."""
    import lightgbm as lgb

    t0 = time.perf_counter()
    train_codes = np.unique(np.asarray(p.store.codes)[concat_ranges(
        np.asarray(p.store.offsets)[p.rows["train"]], np.asarray(p.store.offsets)[p.rows["train"] + 1])])
    columns = np.full(len(p.store.code_names), -1, np.int64)
    columns[train_codes] = np.arange(len(train_codes))
    X = {k: code_counts(p.store, p.samples[k], columns) for k in ("train", "tuning", "held_out")}
    proba = np.zeros((len(p.samples["held_out"]), len(p.labels)))
    trees = []
    for j in range(len(p.labels)):
        tr, va = p.samples["train"], p.samples["tuning"]
        m, mv = tr.mask[:, j], va.mask[:, j]
        if new_onset:  # fit and stop on the samples where the label was not yet recorded
            m, mv = m & ~tr.history[:, j], mv & ~va.history[:, j]
        y, yv = tr.y[m, j], va.y[mv, j]
        if y.min() == y.max():
            proba[:, j] = y.mean()
            continue
        clf = lgb.LGBMClassifier(**{"n_estimators": 1000, "learning_rate": 0.05, "n_jobs": s.threads,
                                    "random_state": s.seed, "verbose": -1, **params})
        fit_args = {}
        if 0 < yv.sum() < len(yv):
            fit_args = {"eval_X": (X["tuning"][mv],), "eval_y": (yv,), "callbacks": [lgb.early_stopping(50, verbose=False)]}
        else:
            clf.set_params(n_estimators=200)
        clf.fit(X["train"][m], y, **fit_args)
        trees.append(int(clf.best_iteration_ or clf.n_estimators))
        proba[:, j] = clf.predict_proba(X["held_out"])[:, 1]
    return proba, {"fit_seconds": round(time.perf_counter() - t0, 2), "features": int(X["train"].shape[1]),
                   "trees_per_label_median": float(np.median(trees)) if trees else 0}


MODELS: dict[str, Runner] = {
    "gru": ehrdx_model("gru"),
    "transformer": ehrdx_model("transformer"),
    "transformer-1layer": ehrdx_model("transformer", layers=1),  # one block (the default is 2): issue 15's cost
    "logistic": ehrdx_model("logistic"),
    "gbm": ehrdx_model("gbm"),
    "auto-fit": ehrdx_model("auto"),  # auto as a user runs it (the variants below share one fit)
    "auto-pretrained": ehrdx_pretrained("auto"),  # the same from an encoder pretrained on the training patients
    "gru-pretrained": ehrdx_pretrained("gru"),
    "lgbm-counts": lgbm_counts,
    "auto-search10": ehrdx_searched("auto", 10),  # train --search 10 (10 settings of gbm, then of the GRU)
    "gbm-search10": ehrdx_searched("gbm", 10),
    # trained on new onset only (the task's new_onset mode; lgbm-counts on the same samples)
    "gru-newonset": new_onset_training(ehrdx_model("gru")),
    "gbm-newonset": new_onset_training(ehrdx_model("gbm")),
    "auto-newonset": new_onset_training(ehrdx_model("auto")),
    "lgbm-counts-newonset": partial(lgbm_counts, new_onset=True),
    # the same with smaller, subsampled trees (on Eunomia the defaults stop after ~5 trees per label)
    "lgbm-counts-small": partial(lgbm_counts, num_leaves=15, min_child_samples=50, subsample=0.8, subsample_freq=1,
                                 colsample_bytree=0.8, reg_lambda=1.0),
}

# auto's combination rules and its members alone, from one fit per set and seed (external/automix.py)
from external.automix import VARIANTS

MODELS.update(VARIANTS)
