"""Training and prediction throughput on a GPU at 100k patients, beside the CPU of the same machine.

    python benchmarks/bench_gpu.py --patients 100000 [--models gru,transformer] [--out results.jsonl]
    python benchmarks/bench_gpu.py --patients 100000 --precisions fp32 --batch-sizes 256,1024 \
        --device-collate both --cpu-patients 0          (issue 15: the loop against ready batches)

Builds the built-in longitudinal cohort, converts it to the store and builds the training sequences
once. Then for each model (hidden 128, batch 256 patients, as in bench_events.py):
- on the GPU, for each precision (fp32, bf16 autocast): a warm-up epoch on a few thousand patients,
  then `--epochs` timed epochs through the real training loop (batches collated in a background
  thread, pinned memory, non-blocking copies), reported as prediction rows (patient-time samples)
  per second and patients per second; the test macro AUROC after those epochs; and the same steps
  on 60 batches already on the GPU ("compute only", the median of three passes), which shows how much
  of the time is collation;
- batched prediction on the test patients (fp32);
- for each `--batch-sizes` entry and, with `--device-collate both`, with batches built on the GPU by
  tensor indexing (data/device_collate.py, the default on CUDA) and with the numpy collate plus a copy
  (in a background thread, packed in one buffer, or `fields`: a copy per field):
  `loop_over_ready` is the training loop's rows/s over the compute-only rows/s, in the same process
  (issue 15's target: >= 0.7 at batch 256 and 1,024, hidden 128, GRU and Transformer);
- on the CPU of the same machine: one epoch on `--cpu-patients` training patients at 1 thread and
  at all threads, in the same process, so the GPU/CPU ratio is measured, not assembled.
Prints one JSON line per measurement and a table at the end. Needs a CUDA GPU for the GPU rows; with
none it runs the CPU rows only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

from ehrdx.data.sequences import EventEncoder
from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EventClassifier
from ehrdx.evaluate.metrics import evaluate_predictions
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.models.sequence import SequenceConfig, SequenceModel
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.task import label_first_times
from ehrdx.train import device as device_mod
from ehrdx.train.device import autocast, to_device
from ehrdx.train.loop import TrainConfig, masked_bce_with_logits, predict_logits, train_model


def emit(out, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def make_model(name: str, clf: EventClassifier, ds, hidden: int) -> SequenceModel:
    torch.manual_seed(0)
    return SequenceModel(SequenceConfig(n_codes=clf.encoder_.n_codes, n_labels=len(clf.label_vocab_), encoder=name,
                                        n_numeric=len(ds.numeric_ids), hidden=hidden,
                                        layers=2 if name == "transformer" else 1))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_only(model, ds, device, precision: str, batch: int, steps: int) -> float:
    """Rows/s of forward + backward + step on batches already on the device."""
    batches = [to_device(b, device) for _, b in zip(range(steps), ds.batches(batch, shuffle=True,
                                                                             generator=torch.Generator().manual_seed(1)))]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def run() -> int:
        rows = 0
        for b in batches:
            with autocast(device, precision):
                logits = model(b)
            s, n = masked_bce_with_logits(logits.float(), b.y, b.y_mask)
            opt.zero_grad(set_to_none=True)
            (s / n.clamp(min=1)).backward()
            opt.step()
            rows += b.y.shape[0]
        return rows

    run()  # warm-up
    rates = []
    for _ in range(3):  # the median of three passes: one pass over 40 batches moved by 10-30% (BENCHMARKS.md)
        sync(device)
        t0 = time.perf_counter()
        rows = run()
        sync(device)
        rates.append(rows / (time.perf_counter() - t0))
    return float(np.median(rates))


def gpu_run(name, precision, args, clf, train_ds, warm_ds, test_ds, test_s, rows_per_patient, device,
            batch: int) -> dict:
    cfg = TrainConfig(batch_size=batch, max_epochs=1, device=str(device), precision=precision)
    model = make_model(name, clf, train_ds, args.hidden)
    train_model(model, warm_ds, None, cfg)  # cuDNN/kernel selection, allocator warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cfg.max_epochs = args.epochs
    h = train_model(model, train_ds, None, cfg)
    logits = predict_logits(model, test_ds)
    auroc = evaluate_predictions(test_s.y, test_s.mask, 1 / (1 + np.exp(-logits)), clf.labels_, None,
                                 ())["macro_auroc"]
    pred = {}
    for size in args.predict_batches:  # patients per prediction batch (None: predict_logits' default)
        t1 = time.perf_counter()
        predict_logits(model, test_ds, batch_size=size)  # ends with a copy to the host: the device's work is done
        pred[size or "default"] = round(len(test_s) / (time.perf_counter() - t1))
    fresh = make_model(name, clf, train_ds, args.hidden).to(device)
    comp = compute_only(fresh, train_ds, device, precision, batch, 60)
    rec = {"model": name, "device": device.type, "precision": precision, "epochs": args.epochs,
           "batch_patients": batch, "device_collate": train_ds.device_collate is not None,
           "train_rows_per_s": round(h.samples_per_second),
           "loop_over_ready": round(h.samples_per_second / comp, 3),
           "train_patients_per_s": round(h.samples_per_second / rows_per_patient),
           "compute_only_rows_per_s": round(comp),
           "predict_rows_per_s": max(pred.values()), "predict_rows_per_s_by_batch": pred, "test_macro_auroc": round(float(auroc), 4),
           "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--models", default="gru,transformer")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batch-sizes", default=None, help="comma-separated, each in turn (default: --batch-size)")
    ap.add_argument("--device-collate", default="on",
                    help="comma-separated: batches built on the device by tensor indexing (on), the same in a "
                    "background thread on a side stream (thread), numpy + copy in a background thread (off; fields: "
                    "a copy per field, not one packed buffer); both = on,off")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--predict-batches", default="default",
                    help="comma-separated patients per prediction batch, each timed ('default': predict_logits' own)")
    ap.add_argument("--cpu-patients", type=int, default=5000, help="0: no CPU rows")
    ap.add_argument("--out", default=None)
    ap.add_argument("--bucket", default="on", choices=("on", "off", "both"),
                    help="length-bucketed batches (on), random batches (off), or both in turn")
    ap.add_argument("--accelerator", default="cuda", help="cpu: run the GPU rows on the CPU (a dry run of this script)")
    args = ap.parse_args()
    args.predict_batches = [None if b == "default" else int(b) for b in args.predict_batches.split(",")]
    device = torch.device(args.accelerator)
    gpu = device.type == "cpu" or torch.cuda.is_available()
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="ehrdx_gpu_")
    paths = write_longitudinal(generate_longitudinal(args.patients, seed=0), tmp)
    store = open_store(meds=paths["meds"], store_dir=f"{tmp}/store")
    tr, _va, te = patient_splits(store, paths["meds"], 0)
    clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}")
    clf.resolve_settings("events")  # what fit() sets first, for the hand-fitted parts below
    clf.label_vocab_ = LabelVocab.from_first_times(label_first_times(store, tr, clf.selector_))
    clf.encoder_ = EventEncoder.fit(store, tr)
    train_s, test_s = clf.samples(store, tr), clf.samples(store, te)
    train_ds, test_ds = clf.dataset(store, train_s), clf.dataset(store, test_s)
    warm_ds = clf.dataset(store, clf.samples(store, tr[:3000]))
    cpu_ds = clf.dataset(store, clf.samples(store, tr[: args.cpu_patients])) if args.cpu_patients else None
    rows_per_patient = len(train_s) / len(tr)
    emit(args.out, {
        "patients": args.patients, "train_patients": len(tr), "train_rows": len(train_s), "test_rows": len(test_s),
        "labels": len(clf.label_vocab_), "hidden": args.hidden, "batch_patients": args.batch_size,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "machine": platform.machine(), "prepare_seconds": round(time.perf_counter() - t0, 1)})
    table = []
    for name in args.models.split(","):
        if gpu:
            choices = {"on": [True], "off": [False], "both": [True, False]}
            collates = ["on", "off"] if args.device_collate == "both" else args.device_collate.split(",")
            sizes = [int(b) for b in (args.batch_sizes or str(args.batch_size)).split(",")]
            for precision, bucket, batch, collate in [
                    (p, b, n, c) for p in args.precisions.split(",") for b in choices[args.bucket] for n in sizes
                    for c in collates]:
                device_mod.DEVICE_COLLATE_THREAD = collate == "thread"
                device_mod.PACK_BATCHES = collate != "fields"  # numpy + a copy per field, not one packed copy
                collate = "off" if collate == "fields" else collate
                collate = collate != "off"
                device_mod.DEVICE_COLLATE = collate  # what the training loop does on CUDA
                for ds in (train_ds, warm_ds, test_ds):
                    ds.bucket = bucket  # overrides the training loop's choice (random batches on a GPU)
                    ds.collate_on(device if collate else None)  # also on the CPU (a dry run)
                try:
                    rec = gpu_run(name, precision, args, clf, train_ds, warm_ds, test_ds, test_s, rows_per_patient,
                                  device, batch)
                except Exception as e:  # noqa: BLE001 - a configuration that fails is reported, the rest run
                    rec = {"model": name, "device": "cuda", "precision": precision, "batch_patients": batch,
                           "device_collate": collate, "error": repr(e)[:500],
                           "train_rows_per_s": 0, "train_patients_per_s": 0}
                rec["bucket"] = bucket
                rec["collate_thread"] = device_mod.DEVICE_COLLATE_THREAD
                rec["packed"] = device_mod.PACK_BATCHES
                if args.bucket == "both":
                    rec["precision"] = f"{precision}{'' if bucket else '-rand'}"
                emit(args.out, rec)
                table.append(rec)
        for threads in (1, os.cpu_count() or 1) if cpu_ds is not None else ():
            torch.set_num_threads(threads)
            cfg = TrainConfig(batch_size=args.batch_size, max_epochs=1, device="cpu", precision="fp32")
            model = make_model(name, clf, cpu_ds, args.hidden)
            h = train_model(model, cpu_ds, None, cfg)
            rec = {"model": name, "device": f"cpu x{threads}", "precision": "fp32", "epochs": 1,
                   "train_rows_per_s": round(h.samples_per_second),
                   "train_patients_per_s": round(h.samples_per_second / rows_per_patient)}
            emit(args.out, rec)
            table.append(rec)
        torch.set_num_threads(os.cpu_count() or 1)
    print(f"\n{'model':12s} {'device':10s} {'prec':5s} {'batch':>5s} {'dev-col':>7s} {'thread':>6s} {'rows/s':>10s} "
          f"{'patients/s':>11s} {'compute-only':>13s} {'loop/ready':>10s} {'predict/s':>10s} {'AUROC':>6s}")
    for r in table:
        print(f"{r['model']:12s} {r['device']:10s} {r['precision']:5s} {r.get('batch_patients', ''):>5} "
              f"{r.get('device_collate', '')!s:>7s} {r.get('collate_thread', '')!s:>6s} {r.get('packed', '')!s:>5s} "
              f"{r['train_rows_per_s']:>10,} "
              f"{r['train_patients_per_s']:>11,} {r.get('compute_only_rows_per_s', ''):>13} "
              f"{r.get('loop_over_ready', ''):>10} {r.get('predict_rows_per_s', ''):>10} {r.get('test_macro_auroc', ''):>6}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
