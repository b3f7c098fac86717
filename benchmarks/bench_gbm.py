"""Benchmark the gradient-boosting model on history features against the logistic baseline on counts.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_gbm.py --patients 5000 --task next-visit --threads 1

Builds the built-in longitudinal cohort, converts it to the store and splits patients (train, tuning, test).
Fits the logistic baseline (EventClassifier model="logistic": count_matrix(history_features)) and the GBM
(data/history.py HistoryFeaturizer + models/gbm.py GBMModel) on the same training samples and the same
new-onset masks, the GBM early-stopped on the tuning patients. Reports held-out macro AUROC/AUPRC (all
labels and new onset), the oracle where the simulator has one (next-visit), and seconds for features, fit
and prediction; also the GBM on the logistic baseline's count features (--no-count-gbm to skip), to show
what the history features add. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np

from ehrdx.data.counts import count_matrix, history_features
from ehrdx.data.history import DAY, HistoryFeaturizer
from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EventClassifier
from ehrdx.evaluate.metrics import evaluate_samples, tune_thresholds
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.models.gbm import GBMModel
from ehrdx.sources.events import EventSource


def scores(result: dict) -> dict:
    return {f"{part}_{k}": round(result[part][k], 4) for part in ("all", "new_onset")
            for k in ("macro_auroc", "macro_auprc") if result[part].get(k) is not None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=5000)
    ap.add_argument("--task", default="next-visit", help="next-visit or window:<N>d")
    ap.add_argument("--all-labels", action="store_true", help="train on every known label, not new onset only")
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--windows", default="30,365", help="recent-count windows in days")
    ap.add_argument("--max-codes", type=int, default=None)
    ap.add_argument("--params", default="{}", help="LightGBM parameter overrides as JSON")
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--early-stopping", type=int, default=50)
    ap.add_argument("--count-gbm", action=argparse.BooleanOptionalAction, default=True,
                    help="also fit the GBM on the logistic baseline's count features")
    args = ap.parse_args()
    new_onset = not args.all_labels
    tmp = tempfile.mkdtemp(prefix="ehrdx_bench_gbm_")
    cohort = generate_longitudinal(args.patients, seed=0)
    paths = write_longitudinal(cohort, tmp)
    store = open_store(meds=paths["meds"], store_dir=f"{tmp}/store")
    tr, va, te = patient_splits(store, paths["meds"], args.seed)
    print(json.dumps({"patients": args.patients, "task": args.task, "new_onset": new_onset, "threads": args.threads,
                      "train/val/test patients": [len(tr), len(va), len(te)], "machine": platform.machine(),
                      "lightgbm": __import__("lightgbm").__version__}), flush=True)

    base = EventClassifier(model="logistic", task=args.task, labels=f"map:{paths['label_map']}",
                           new_onset=new_onset, seed=args.seed)
    t0 = time.perf_counter()
    base.fit(store, tr, va)
    logistic_fit = time.perf_counter() - t0
    train_s, val_s, test_s = (base.samples(store, r) for r in (tr, va, te))
    labels = base.labels_
    t0 = time.perf_counter()
    r_log = base.evaluate(store, samples=test_s)
    logistic_predict = time.perf_counter() - t0
    print(json.dumps({"model": "logistic on count_matrix", "fit_s (incl. samples, features, thresholds)":
                      round(logistic_fit, 2), "features+fit_s": round(base.history_.seconds, 2),
                      "predict+evaluate_s": round(logistic_predict, 2), "train_samples": len(train_s),
                      "test_samples": len(test_s), "labels": len(labels), **scores(r_log)}), flush=True)

    def gbm_run(name: str, featurise) -> None:
        t0 = time.perf_counter()
        X, X_val = featurise(train_s), featurise(val_s)
        feature_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        gbm = GBMModel(json.loads(args.params), num_boost_round=args.rounds,
                       early_stopping_rounds=args.early_stopping, num_threads=args.threads)
        gbm.fit(X, train_s.y, train_s.train_mask(new_onset), X_val, val_s.y, val_s.train_mask(new_onset),
                seed=args.seed)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        proba = 1 / (1 + np.exp(-gbm.decision_function(featurise(test_s))))
        predict_s = time.perf_counter() - t0
        proba_val = 1 / (1 + np.exp(-gbm.decision_function(X_val)))
        r = evaluate_samples(test_s, proba, labels, tune_thresholds(val_s.y, val_s.train_mask(new_onset), proba_val))
        print(json.dumps({"model": name, "features_s (train+val)": round(feature_s, 2), "fit_s": round(fit_s, 2),
                          "features+predict_s (test)": round(predict_s, 2), "features": X.shape[1],
                          "nnz_per_sample": round(X.nnz / max(X.shape[0], 1), 1),
                          "rounds": [info.get("rounds", 0) for info in gbm.labels_],
                          "json_MB": round(len(json.dumps(gbm.to_dict())) / 1e6, 2), **scores(r)}), flush=True)

    windows = tuple(int(d) * DAY for d in args.windows.split(","))
    t0 = time.perf_counter()
    feat = HistoryFeaturizer(windows=windows, max_codes=args.max_codes).fit(store, tr, base.encoder_)
    print(json.dumps({"featuriser fit_s": round(time.perf_counter() - t0, 3)}), flush=True)
    gbm_run("gbm on history features", lambda s: feat.transform(store, s))
    if args.count_gbm:
        n_codes = base.encoder_.n_codes
        gbm_run("gbm on count_matrix", lambda s: count_matrix(history_features(store, s, base.encoder_), n_codes))
    if base.task_.kind == "next-visit":
        o_val = EventSource(store).oracle(cohort.oracle, val_s, labels)
        o = evaluate_samples(test_s, EventSource(store).oracle(cohort.oracle, test_s, labels), labels,
                             tune_thresholds(val_s.y, val_s.train_mask(new_onset), o_val))
        print(json.dumps({"model": "oracle (simulator's hidden state)", **scores(o)}), flush=True)


if __name__ == "__main__":
    main()
