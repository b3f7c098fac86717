"""Benchmark `ehrdx pretrain` on the built-in cohort: time of each phase and training throughput, and the
linear extrapolation to a larger cohort (the issue's target: 100,000 patients within 30 minutes on 2 cores).

    nice .venv/bin/python benchmarks/bench_pretrain.py --patients 2000 --threads 1 --epochs 3 [--context 8]

Early stopping is off (patience above the epochs), so every epoch runs. Prints one JSON line: seconds to
convert the cohort to the store, to split, to build the targets and samples, per epoch (training steps and
the tuning loss), visits per second, and the time 100,000 patients would take at that rate for the default
10 epochs (the store, the samples and each epoch grow linearly in visits: one pass of each patient's
sequence per epoch; the setup, mostly first-call costs, does not).
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
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.pretrain import next_visit_samples, pretrain, target_codes
from ehrdx.tasks.select import LabelSelector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="gru")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--context", type=int, default=None, help="a bounded context (N to 2N latest visits plus a "
                    "summary of the earlier ones); default: whole histories")
    ap.add_argument("--target", type=int, default=100_000, help="patients to extrapolate to")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="ehrdx_bench_pretrain_")
    paths = write_longitudinal(generate_longitudinal(args.patients, seed=0), tmp)
    t = time.perf_counter()
    store = open_store(meds=paths["meds"], store_dir=f"{tmp}/store")
    t_store = time.perf_counter() - t
    t = time.perf_counter()
    splits = patient_splits(store, paths["meds"], 0, selector=LabelSelector.parse("prefix:DX//"))
    t_split = time.perf_counter() - t
    t = time.perf_counter()
    codes, _ = target_codes(store, splits[0], 20, 4096)
    target_of = np.full(len(store.code_names), -1)
    target_of[codes] = np.arange(len(codes))
    samples = next_visit_samples(store, splits[0], target_of, len(codes), True)
    n_samples = len(samples)
    t_samples = time.perf_counter() - t
    epochs: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(epoch: int, train_loss: float, val_loss: float | None) -> None:
        now = time.perf_counter()
        epochs.append(now - last[0])
        last[0] = now

    t = time.perf_counter()
    enc = pretrain(store, splits, model=args.model, hidden=args.hidden, max_epochs=args.epochs,
                   patience=args.epochs + 1, context=args.context, device=args.device, on_epoch=on_epoch)
    total = time.perf_counter() - t
    h = enc.history
    per_epoch = float(np.median(epochs))  # training steps and the tuning loss
    # Vocabulary, targets, sequence sets, the model and first-call costs: in the first epoch's time.
    setup = total - sum(epochs) + epochs[0] - per_epoch
    scale = args.target / args.patients
    print(json.dumps({
        "patients": args.patients, "threads": args.threads, "model": args.model, "hidden": args.hidden,
        "context": args.context, "device": args.device, "torch": torch.__version__, "machine": platform.machine(),
        "visits": len(store.visit_starts), "train_samples": n_samples,
        "targets": len(enc.targets), "store_s": round(t_store, 2), "split_s": round(t_split, 2),
        "samples_s": round(t_samples, 2), "setup_s": round(setup, 2), "epoch_s": [round(e, 2) for e in epochs],
        "train_visits_per_s": round(h["samples_per_second"]), "train_loss": h["train_loss"], "val_loss": h["val_loss"],
        f"extrapolated_{args.target}_patients_10_epochs_min": round(
            (scale * (t_store + t_split + t_samples + 10 * per_epoch) + setup) / 60, 1),
    }))


if __name__ == "__main__":
    main()
