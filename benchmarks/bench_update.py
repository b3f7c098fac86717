"""Adding labels to a trained model vs retraining from scratch: quality, forgetting and wall time.

    .venv/bin/python benchmarks/bench_update.py --patients 6000 --scenario interest   (or --scenario time)

Scenarios on the built-in longitudinal cohort (next-visit task, GRU):
  interest  the old model was trained on all the data with the 10 original diseases; the update adds
            E11.2, E11.9 and U07.1 with a label map that has them (new conditions of interest)
  time      the old model was trained on the data as of 2020-01-01 (before U07.1 existed and before
            E11 was split); the update brings the data up to 2024 and the new labels with it
For each way to start the new rows (probe, auto = parent/code/description, mean) and each protection
(distill, none, with or without a replay of the old training data) it reports old-label macro AUROC before and after (forgetting), new-label macro AUROC
and the update's wall time, beside a model retrained from scratch on all the data with all labels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.tasks.select import LabelSelector
from ehrdx.update import compare_before_after, update_model

VARIANTS = [("probe", "distill", False), ("probe", "none", False), ("probe", "none", True), ("probe", "distill", True),
            ("auto", "distill", False), ("parent", "distill", False), ("code", "distill", False),
            ("description", "distill", False), ("mean", "distill", False)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=6000)
    ap.add_argument("--scenario", choices=("interest", "time"), default="interest")
    ap.add_argument("--model", default="gru")
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of the update")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated inits to run (default: all variants)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="ehrdx_update_")
    cohort = generate_longitudinal(args.patients, seed=0)
    paths = write_longitudinal(cohort, tmp)
    full = f"map:{paths['label_map']}"
    store = open_store(meds=paths["meds"], store_dir=f"{tmp}/store")
    splits = patient_splits(store, paths["meds"], 0)
    if args.scenario == "interest":
        cohort.label_map.head(10).write_csv(f"{tmp}/old_map.csv")
        old_store, old_labels, selector = store, f"map:{tmp}/old_map.csv", LabelSelector.parse(full)
    else:
        old_store = open_store(meds=paths["meds"], store_dir=f"{tmp}/old_store", until="2020-01-01")
        old_labels, selector = full, None
    old_splits = patient_splits(old_store, paths["meds"], 0)
    t0 = time.perf_counter()
    old = EventClassifier(model=args.model, labels=old_labels, max_epochs=30).fit(old_store, old_splits[0], old_splits[1])
    print(json.dumps({"scenario": args.scenario, "patients": args.patients, "old_labels": old.labels_,
                      "old_fit_seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    t0 = time.perf_counter()
    scratch = EventClassifier(model=args.model, labels=full, max_epochs=30).fit(store, splits[0], splits[1])
    scratch_seconds = time.perf_counter() - t0
    r = compare_before_after(old, scratch, store, splits[2])
    print(json.dumps({"variant": "retrain from scratch", "seconds": round(scratch_seconds, 1),
                      "old_before": round(r["old_labels_macro_auroc_before"], 4),
                      "old_after": round(r["old_labels_macro_auroc_after"], 4),
                      "new": round(r["new_labels_macro_auroc"], 4)}), flush=True)
    only = set(args.only.split(",")) if args.only else None
    for init, protect, replay in VARIANTS:
        if only and init not in only:
            continue
        t0 = time.perf_counter()
        _, rep = update_model(old, store, splits, selector=selector, init=init, protect=protect, epochs=args.epochs,
                              replay=(old_store, old_splits[0]) if replay else None)
        seconds = time.perf_counter() - t0
        print(json.dumps({"variant": f"update init={init} protect={protect} replay={replay} epochs={args.epochs}",
                          "seconds": round(seconds, 1), "time_vs_retrain": round(seconds / scratch_seconds, 3),
                          "old_before": round(rep["old_labels_macro_auroc_before"], 4),
                          "old_after": round(rep["old_labels_macro_auroc_after"], 4),
                          "new": round(rep["new_labels_macro_auroc"], 4),
                          "new_vs_retrain": round(rep["new_labels_macro_auroc"] - r["new_labels_macro_auroc"], 4),
                          "init_used": rep["init"]}), flush=True)


if __name__ == "__main__":
    main()
