"""Peak memory of training on a large cohort (the store is memory-mapped).

    .venv/bin/python benchmarks/bench_memory.py --patients 1000000 [--model gru] [--epochs 1] [--threads 2]

First the built-in longitudinal cohort is generated in chunks of 100,000 patients (each with its own
seed and subject ids) and written as one MEDS dataset. Then a fresh process does what `ehrdx train`
does: converts MEDS to the store, splits by patient (MEDS splits), fits the model (validation pass and
threshold tuning included), and evaluates on the test patients; it reports its own peak RSS (VmHWM)
and the time of each step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 100_000


def peak_rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return -1


def write_cohort(n: int, root: Path) -> Path:
    """n patients in chunks, gathered into one MEDS dataset root/meds (+ root/label_map.csv)."""
    import polars as pl

    from ehrdx.data.synth import generate_longitudinal, write_longitudinal

    meds = root / "meds"
    (meds / "metadata").mkdir(parents=True, exist_ok=True)
    splits = []
    for k, start in enumerate(range(0, n, CHUNK)):
        c = generate_longitudinal(min(CHUNK, n - start), seed=k)
        c = dataclasses.replace(c, events=c.events.with_columns(pl.col("subject_id") + start),
                                oracle=c.oracle.with_columns(pl.col("subject_id") + start))
        part = write_longitudinal(c, root / f"chunk{k}")
        for f in (part["meds"] / "data").glob("*/*.parquet"):
            dest = meds / "data" / f.parent.name / f"{k}_{f.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dest)
        splits.append(pl.read_parquet(part["meds"] / "metadata" / "subject_splits.parquet"))
        if k == 0:
            for name in ("codes.parquet", "dataset.json"):
                if (part["meds"] / "metadata" / name).exists():
                    shutil.copy(part["meds"] / "metadata" / name, meds / "metadata" / name)
            shutil.copy(part["label_map"], root / "label_map.csv")
        shutil.rmtree(root / f"chunk{k}")
    pl.concat(splits).write_parquet(meds / "metadata" / "subject_splits.parquet")
    return meds


def train(meds: str, label_map: str, store_dir: str, model: str, epochs: int, threads: int) -> None:
    import torch

    from ehrdx.estimator import EventClassifier
    from ehrdx.events_pipeline import open_store, patient_splits

    torch.set_num_threads(threads)
    steps = {}
    t0 = time.perf_counter()
    store = open_store(meds=meds, store_dir=store_dir)
    steps["store"] = {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib": peak_rss_mib()}
    tr, va, te = patient_splits(store, meds, 0)
    t1 = time.perf_counter()
    clf = EventClassifier(model=model, labels=f"map:{label_map}", max_epochs=epochs, patience=epochs + 1)
    clf.fit(store, tr, va)
    steps["fit"] = {"seconds": round(time.perf_counter() - t1, 1), "peak_rss_mib": peak_rss_mib(),
                    "train_rows_per_s": round(clf.history_.samples_per_second)}
    t2 = time.perf_counter()
    result = clf.evaluate(store, te)
    steps["evaluate"] = {"seconds": round(time.perf_counter() - t2, 1), "peak_rss_mib": peak_rss_mib()}
    print(json.dumps({
        "patients": len(store), "events": store.meta["events"], "model": model, "epochs": epochs, "threads": threads,
        "train_samples": clf.fit_summary_["train_samples"], "test_samples": result["samples"],
        "test_macro_auroc": round(result["all"]["macro_auroc"], 4), "steps": steps,
        "peak_rss_mib": peak_rss_mib()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--model", default="gru")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train", nargs=3, metavar=("MEDS", "LABEL_MAP", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train:
        train(*args.train, args.model, args.epochs, args.threads)
        return
    with tempfile.TemporaryDirectory(prefix="ehrdx_mem_") as tmp:
        t0 = time.perf_counter()
        meds = write_cohort(args.patients, Path(tmp))
        print(json.dumps({"generated_patients": args.patients, "seconds": round(time.perf_counter() - t0, 1)}),
              flush=True)
        out = subprocess.run([sys.executable, __file__, "--train", str(meds), f"{tmp}/label_map.csv", f"{tmp}/store",
                              "--model", args.model, "--epochs", str(args.epochs), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True)
        print(out.stdout.strip())


if __name__ == "__main__":
    main()
