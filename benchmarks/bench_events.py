"""Benchmark the event-stream path: training throughput per model and prediction throughput.

    .venv/bin/python benchmarks/bench_events.py --patients 5000 --threads 1   (and --threads 2)

Builds the built-in longitudinal cohort, converts it to the store, then for each model trains for a
fixed number of epochs (early stopping off) and reports optimisation-step throughput in prediction
rows (patient-time samples) per second and patients per second; then batched prediction rows per
second and the latency of one patient's prediction (all of its visit ends). Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch

from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256, help="patients per batch")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--models", default="gru,lstm,transformer,mlp")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = {"patients": args.patients, "threads": args.threads, "hidden": args.hidden, "batch": args.batch_size,
            "torch": torch.__version__, "machine": platform.machine()}
    tmp = tempfile.mkdtemp(prefix="ehrdx_bench_")
    cohort = generate_longitudinal(args.patients, seed=0)
    paths = write_longitudinal(cohort, tmp)
    store = open_store(meds=paths["meds"], store_dir=f"{tmp}/store")
    tr, va, te = patient_splits(store, paths["meds"], 0)
    info["visits_per_patient"] = round(store.meta["visits"] / len(store), 2)
    print(json.dumps(info), flush=True)
    for model in args.models.split(","):
        # mlp rows are single samples: give it the same number of samples per batch as a sequence batch
        clf = EventClassifier(model=model, labels=f"map:{paths['label_map']}", hidden=args.hidden,
                              batch_size=args.batch_size if model != "mlp" else args.batch_size * 2,
                              max_epochs=args.epochs, patience=args.epochs + 1)
        clf.fit(store, tr, va)
        h = clf.history_
        rows = clf.fit_summary_["train_samples"]
        per_patient = rows / len(tr)
        test_s = clf.samples(store, te, require_labels=False)
        clf.predict_samples(store, test_s)  # warm-up
        t0 = time.perf_counter()
        clf.predict_samples(store, test_s)
        predict_seconds = time.perf_counter() - t0
        one = [clf.samples(store, np.array([r]), require_labels=False) for r in te[:50]]
        lat = []
        for s in one:
            t1 = time.perf_counter()
            clf.predict_samples(store, s)
            lat.append(time.perf_counter() - t1)
        result = clf.evaluate(store, te)
        print(json.dumps({
            "model": model, "train_rows_per_s": round(h.samples_per_second),
            "train_patients_per_s": round(h.samples_per_second / per_patient),
            "predict_rows_per_s": round(len(test_s) / predict_seconds),
            "latency_one_patient_ms": round(1000 * float(np.median(lat)), 2),
            "epochs": h.epochs_run, "train_rows": rows,
            "test_macro_auroc": round(result["all"]["macro_auroc"], 3),
            "test_new_onset_macro_auprc": round(result["new_onset"]["macro_auprc"], 3),
        }), flush=True)


if __name__ == "__main__":
    main()
