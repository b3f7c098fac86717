"""Long histories (issue 15, part 1): a bounded context for the sequence models, GRU against Transformer.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_long.py \
        --meds /tmp/ext/data/clinosim_p2500_s1/meds --train-patients 300 --test-patients 150 \
        --contexts none,32,64,128 --steps 60 --out /tmp/bench_long/out

For each model (gru, transformer) and context (none = the whole history): a short fixed training
(--steps optimiser steps, rounded up to whole epochs, no early stopping; validation on the set's tuning
patients only picks the better epoch), then the held-out new-onset and all-label macro AUROC. A fixed
number of steps, not epochs: windows make more, shorter sequences, so an epoch has more steps. Each
configuration runs in a process forked from this one after the data is prepared, one after another
(so each one's memory is its own): seconds per training epoch (the loop's own clock: optimiser steps
only) and the peak resident memory while fitting above the memory before it (sampled every 5 ms).
Ratios: Transformer / GRU at each context, and each context / none for each model. First, one attention
call (forward and backward, 16 x 4 heads x 1,024 visits) as the Transformer ran it before (a mask and
dropout on the weights) and as it runs now (is_causal), time and peak memory.

Data: a MEDS set read with ehrdx's protocol for external sets (benchmarks/external/protocol.py:
window:365d with censoring, the 25 most common labels among training patients) with prediction times
at every visit end and visits split at every new timestamp (--visit-gap 0), so inpatient stays are
long runs of visits: on clinosim_p2500_s1 that is 194 visits per patient on average and 3,639 at
most (eunomia_p2694_s0: 35 on average, 118 at most, too short for a context of 32-128 to bite).
Patients are a seeded sample of each split (--train-patients, --test-patients; tuning: a third of
--train-patients). Writes long.json into --out and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Self

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from external import bootstrap
from external.protocol import prepare

from ehrdx.estimator import EHRClassifier


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class PeakRSS:
    """Peak resident memory while the block runs (a thread samples /proc/self/statm every 5 ms)."""

    def __enter__(self) -> Self:
        self.before = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def sample_rows(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(rows)[:n]) if n and n < len(rows) else rows


def run(p, model: str, context: int | None, rows: dict, args) -> dict:
    clf = EHRClassifier(model=model, task=p.task, labels=p.selector, hidden=args.hidden, max_epochs=1,
                        min_steps=args.steps, patience=10**6, context=context, seed=args.seed)
    with PeakRSS() as mem:
        clf.fit(p.store, rows["train"], rows["tuning"], targets=p.targets)
    h = clf.history_
    train_s = clf.fit_summary_["train_samples"]
    epoch_s = train_s / h.samples_per_second  # the loop's optimiser steps of one epoch (validation excluded)
    test = p.samples["held_out"]
    test = test.subset(np.isin(test.row, rows["held_out"]))
    known = [j for j, lab in enumerate(p.labels) if lab in clf.labels_]  # labels with training positives
    test = replace(test, y=test.y[:, known], mask=test.mask[:, known], history=test.history[:, known])
    proba = clf.predict_samples(p.store, test)[:, [clf.labels_.index(p.labels[j]) for j in known]]
    metrics, _ = bootstrap.evaluate(test, proba, np.ones((1, len(test))))
    ds = clf.dataset(p.store, clf.samples(p.store, rows["train"], targets=p.targets))
    return {"model": model, "context": context, "labels": len(known), "epoch_s": round(epoch_s, 2), "fit_s": round(h.seconds, 1), "steps": h.steps, "epochs": h.epochs_run,
            "peak_mb": round(mem.peak - mem.before, 1), "train_samples": train_s,
            "visits_read": int(ds.seq_nv.sum()), "longest": int(ds.seq_nv.max()),
            "new_onset_macro_auroc": metrics["new_onset"]["macro_auroc"]["value"],
            "all_macro_auroc": metrics["all"]["macro_auroc"]["value"]}


def forked(fn, *args) -> dict:
    """fn(*args) in a forked child process (its peak memory its own); its result, or the error it raised."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(fn(*args))
        except Exception as exc:  # noqa: BLE001  (reported in the table; the other configurations still run)
            send.send({"error": f"{type(exc).__name__}: {exc}"})

    proc = ctx.Process(target=child)
    proc.start()
    result = receive.recv()
    proc.join()
    return result


def attention(kind: str, batch: int = 16, heads: int = 4, visits: int = 1024, dim: int = 16) -> dict:
    """One attention forward and backward as the Transformer ran it before (`masked`: a [B, 1, T, T] mask
    of causal & valid visits, dropout 0.1 on the weights, which sends CPUs to the materialised path) and
    now (`causal`: is_causal, no mask, no weight dropout). Seconds per call (mean of 2), peak memory."""
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, visits, dim, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.ones(visits, visits, dtype=torch.bool).tril()[None, None].expand(batch, 1, visits, visits)
    kw = {"attn_mask": mask, "dropout_p": 0.1} if kind == "masked" else {"is_causal": True}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        for _ in range(2):
            F.scaled_dot_product_attention(q, k, v, **kw).sum().backward()
        seconds = (time.perf_counter() - t0) / 2
    return {"attention": kind, "shape": [batch, heads, visits, dim], "seconds": round(seconds, 3),
            "peak_mb": round(mem.peak - mem.before, 1)}


def markdown(results: list[dict]) -> str:
    by = {(r["model"], r["context"]): r for r in results if "error" not in r}
    lines = [("| model | context | epoch s | peak MB | visits read | longest | new-onset macro AUROC | "
              "all macro AUROC | epoch vs none | Transformer / GRU epoch | Transformer / GRU peak |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['context'] or 'none'} | error: {r['error']} |")
            continue
        none = by.get((r["model"], None))
        gru = by.get(("gru", r["context"]))
        ratio_t = f"{r['epoch_s'] / gru['epoch_s']:.2f}" if r["model"] != "gru" and gru else ""
        ratio_m = (f"{r['peak_mb'] / gru['peak_mb']:.2f}" if r["model"] != "gru" and gru and gru["peak_mb"] > 0
                   else "")
        lines.append(f"| {r['model']} | {r['context'] or 'none'} | {r['epoch_s']:.2f} | {r['peak_mb']:.0f} | "
                     f"{r['visits_read']:,} | {r['longest']} | {r['new_onset_macro_auroc']:.3f} | "
                     f"{r['all_macro_auroc']:.3f} | {r['epoch_s'] / none['epoch_s']:.2f} | {ratio_t} | {ratio_m} |"
                     if none else "")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meds", default="/tmp/ext/data/clinosim_p2500_s1/meds")
    ap.add_argument("--work", default="/tmp/bench_long/work")
    ap.add_argument("--out", default="/tmp/bench_long/out")
    ap.add_argument("--models", default="gru,transformer")
    ap.add_argument("--contexts", default="none,32,64,128")
    ap.add_argument("--train-patients", type=int, default=300)
    ap.add_argument("--test-patients", type=int, default=150)
    ap.add_argument("--steps", type=int, default=60, help="optimiser steps of the fixed training (whole epochs)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--visit-gap", type=int, default=0, help="seconds; 0: a visit per timestamp")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    p = prepare(Path(args.meds).parent.name, Path(args.meds), Path(args.work), n_labels=25, min_patients=10,
                years=10, times_mode="visits", visit_gap_seconds=args.visit_gap)
    rows = {"train": sample_rows(p.rows["train"], args.train_patients, args.seed),
            "tuning": sample_rows(p.rows["tuning"], max(args.train_patients // 3, 1), args.seed),
            "held_out": sample_rows(p.rows["held_out"], args.test_patients, args.seed)}
    visits = np.diff(np.asarray(p.store.visit_offsets))[rows["train"]]
    print(f"{p.name}: {len(p.labels)} labels; training patients {len(rows['train'])}, visits per patient "
          f"mean {visits.mean():.0f}, max {visits.max()}; prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    contexts = [None if c == "none" else int(c) for c in args.contexts.split(",")]
    kernels = [forked(attention, kind) for kind in ("masked", "causal")]
    print(json.dumps(kernels), f"causal / masked time {kernels[1]['seconds'] / kernels[0]['seconds']:.2f}", flush=True)
    results = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for model in args.models.split(","):
        for context in contexts:
            r = {"model": model, "context": context, **forked(run, p, model, context, rows, args)}
            results.append(r)
            print(json.dumps(r), flush=True)
            (out / "long.json").write_text(json.dumps({
                "args": vars(args), "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                                "cpu": platform.processor() or platform.machine(), "threads": 1},
                "data": {"set": p.name, "train_visits_mean": float(visits.mean()), "train_visits_max": int(visits.max()),
                         "labels": len(p.labels)}, "attention": kernels, "results": results}, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
