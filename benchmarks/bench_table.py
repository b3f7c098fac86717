"""Benchmark the patient-table path at scale: synthesis, training throughput, prediction throughput.

    .venv/bin/python benchmarks/bench_table.py --patients 100000 [--threads 2] [--epochs 3]

Prints one JSON line per measurement and a summary; BENCHMARKS.md records the results.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from ehrdx.data.synth import generate_cohort
from ehrdx.data.table import table_from_frame
from ehrdx.estimator import EHRClassifier
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.splits import split_patients


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {"patients": args.patients, "threads": args.threads, "torch": torch.__version__,
               "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}

    t0 = time.perf_counter()
    cohort = generate_cohort(args.patients, seed=0)
    results["synth_seconds"] = round(time.perf_counter() - t0, 2)
    results["events"] = cohort.info["n_events"]

    t0 = time.perf_counter()
    table = table_from_frame(cohort.table)
    results["read_table_seconds"] = round(time.perf_counter() - t0, 2)

    y, _ = LabelVocab.fit(table.labels).encode(table.labels)
    tr, va, te = split_patients(y, seed=0)
    clf = EHRClassifier(hidden=args.hidden, batch_size=args.batch_size, max_epochs=args.epochs,
                        patience=args.epochs + 1, seed=0)
    t0 = time.perf_counter()
    clf.fit(table.subset(tr), table.subset(va))
    results["fit_seconds"] = round(time.perf_counter() - t0, 2)
    # Training samples/s: optimisation steps only (the loop times its own epochs minus validation).
    results["train_samples_per_second"] = round(clf.history_.samples_per_second)

    test = table.subset(te)
    clf.predict_proba(test)  # warm-up
    t0 = time.perf_counter()
    proba = clf.predict_proba(test)
    dt = time.perf_counter() - t0
    results["predict_patients_per_second"] = round(len(test) / dt)
    results["predict_includes"] = "preprocessing + forward, from a validated table"
    one = test.subset(np.array([0]))
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        clf.predict_proba(one)
        times.append(time.perf_counter() - t0)
    results["single_patient_latency_ms"] = round(1000 * float(np.median(times)), 2)
    results["test_macro_auroc"] = round(clf.evaluate(test)["macro_auroc"], 4)
    assert proba.shape == (len(test), len(clf.labels_))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
