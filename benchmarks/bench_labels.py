"""Work per label: one GRU epoch plus evaluation with a few labels and with every code as a label.

    PYTHONPATH=src python benchmarks/bench_labels.py --meds /tmp/ext/data/eunomia_p2694_s0/meds
    ... --configs top10,all --profile --repeat 3   (a cProfile of each configuration; the fastest of 3 runs)

The MEDS set (e.g. Synthea-based Eunomia from bench_external.py) is converted into a store once; each
configuration then runs in its own subprocess (so that its peak RSS, ru_maxrss, is its own): a label
vocabulary (`top10`: a label map of the 10 SNOMED codes with the most training patients; `all`: every
timed code as a label, `regex:^(?!GENDER|MEDS_BIRTH)(.+)`), the window:365d task at every visit end, one
GRU epoch on the training patients, thresholds tuned on the validation patients, test metrics
(`evaluate_samples`) and the HTML report. Prints seconds per stage and peak RSS; the claim to check is
the ratio between configurations (issue 15: at most 2x the wall time and +300 MB for 27x the labels).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("samples", "epoch", "predict", "thresholds", "metrics", "report")


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def timed(table: dict, name: str, owner, attr: str, peaks: dict | None = None) -> None:
    """Wrap owner.attr so that its seconds add to table[name] (outermost call only), and the peak RSS
    after it is in peaks[name]."""
    inner = getattr(owner, attr)
    depth = [0]

    def wrapper(*a, **k):
        depth[0] += 1
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                table[name] = table.get(name, 0.0) + time.perf_counter() - t0
                if peaks is not None:
                    peaks[name] = peak_mb()

    setattr(owner, attr, wrapper)


def top_snomed_map(store_dir: Path, meds: Path, n: int, out: Path) -> str:
    """A label map of the n SNOMED codes with the most training patients (any time)."""
    import polars as pl

    train = pl.read_parquet(meds / "data" / "train" / "*.parquet", columns=["subject_id", "code"])
    top = (train.filter(pl.col("code").str.starts_with("SNOMED//")).unique().group_by("code").len()
           .sort(["len", "code"], descending=[True, False]).head(n)["code"].to_list())
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["code", "label"])
        for code in sorted(top):
            w.writerow([code, code.removeprefix("SNOMED//")])
    return f"map:{out}"


def run_one(args) -> dict:
    import numpy as np
    import torch

    import ehrdx.estimator as est
    from ehrdx.data.store import EventStore
    from ehrdx.estimator import EHRClassifier
    from ehrdx.evaluate import html
    from ehrdx.events_pipeline import patient_splits
    from ehrdx.sources.events import EventSource

    torch.set_num_threads(1)
    seconds: dict[str, float] = {}
    peaks: dict[str, int] = {"start": peak_mb()}
    timed(seconds, "samples", EventSource, "samples", peaks)
    timed(seconds, "epoch", est, "fit_model", peaks)
    timed(seconds, "predict", EHRClassifier, "predict_samples", peaks)
    timed(seconds, "thresholds", est, "tune_thresholds", peaks)
    timed(seconds, "metrics", est, "evaluate_samples", peaks)
    t_all = time.perf_counter()
    store = EventStore(args.store)
    tr, va, te = patient_splits(store, Path(args.meds), 0)
    labels = (top_snomed_map(Path(args.store), Path(args.meds), 10, Path(args.work) / "top10.csv")
              if args.config == "top10" else "regex:^(?!GENDER|MEDS_BIRTH)(.+)")
    clf = EHRClassifier(model="gru", task="window:365d", labels=labels, max_epochs=1,
                        seed=0)
    clf.fit(store, tr, va)
    test_s = clf.samples(store, te)
    proba = clf.predict_samples(store, test_s)
    result = clf.evaluate(store, samples=test_s, proba=proba)
    t0 = time.perf_counter()
    page = ""
    if not args.no_report:
        page = html.build_report(title="bench", samples=test_s, proba=proba, labels=clf.labels_,
                                 thresholds=clf.thresholds_, store=store, history=clf.history_.to_artifact(),
                                 descriptions=clf.label_vocab_.descriptions())
    seconds["report"] = time.perf_counter() - t0
    peaks["report"] = peak_mb()
    total = time.perf_counter() - t_all
    peak = peak_mb()
    return {"config": args.config, "labels": len(clf.labels_), "train_samples": clf.fit_summary_["train_samples"],
            "test_samples": len(test_s), "macro_auroc": result["all"]["macro_auroc"],
            "report_kb": round(len(page) / 1024), "seconds": {k: round(seconds.get(k, 0.0), 2) for k in STAGES},
            "total_seconds": round(total, 2), "peak_rss_mb": round(peak), "peak_rss_mb_after": peaks, "finite": bool(np.isfinite(proba).all())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meds", default="/tmp/ext/data/eunomia_p2694_s0/meds")
    ap.add_argument("--work", default="bench_out/labels")
    ap.add_argument("--configs", default="top10,all")
    ap.add_argument("--profile", action="store_true", help="also write a cProfile of each configuration")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration; the fastest is shown (a busy "
                    "machine's noise is mostly in the epoch)")
    ap.add_argument("--config", help=argparse.SUPPRESS)  # internal: run one configuration here
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.config:
        print(json.dumps(run_one(args)))
        return
    store_dir = work / "store"
    if not (store_dir / "meta.json").exists():
        from ehrdx.events_pipeline import open_store

        t0 = time.perf_counter()
        open_store(meds=args.meds, store_dir=store_dir)
        print(f"store: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = []
    for config in args.configs.split(","):
        cmd = [sys.executable]
        if args.profile:
            cmd += ["-m", "cProfile", "-o", str(work / f"{config}.prof")]
        cmd += [__file__, "--meds", args.meds, "--work", str(work), "--config", config, "--store", str(store_dir)]
        cmd += ["--no-report"] if args.no_report else []
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
        rows.append(min(runs, key=lambda r: r["total_seconds"]))
    print(f"\n| labels | samples (train/test) | {' | '.join(STAGES)} | total s | peak RSS MB |")
    print("|---|---|" + "---|" * len(STAGES) + "---|---|")
    for r in rows:
        print(f"| {r['labels']} | {r['train_samples']:,}/{r['test_samples']:,} | "
              + " | ".join(f"{r['seconds'][k]:.2f}" for k in STAGES) + f" | {r['total_seconds']:.1f} | {r['peak_rss_mb']} |")
    if len(rows) == 2:
        a, b = rows
        print(f"\nratio {b['labels']}/{a['labels']} labels: {b['total_seconds'] / a['total_seconds']:.2f}x wall time, "
              f"{b['peak_rss_mb'] - a['peak_rss_mb']:+d} MB peak RSS")


if __name__ == "__main__":
    main()
