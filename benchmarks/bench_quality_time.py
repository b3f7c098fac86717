"""Quality per second: test macro AUPRC against training wall time, for each model.

    .venv/bin/python benchmarks/bench_quality_time.py --patients 20000 --threads 2 [--out DIR]

Trains every model on the built-in longitudinal cohort (next-visit task, MEDS splits) with early
stopping as `ehrdx train` does, and after every epoch measures the test macro AUPRC (all labels and
new onset) of the weights at that point. The clock counts training and the validation pass that early
stopping needs, not these test measurements. The logistic baseline is one point (its fit). Writes
quality_time.json and, when matplotlib is installed, quality_time.png into --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EventClassifier, evaluate_samples
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.train.loop import predict_logits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="gru,lstm,transformer,mlp,logistic")
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--out", default="bench_out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ehrdx_qt_")
    paths = write_longitudinal(generate_longitudinal(args.patients, seed=0), tmp)
    store = open_store(meds=paths["meds"], store_dir=f"{tmp}/store")
    tr, va, te = patient_splits(store, paths["meds"], 0)
    # One-time costs (the ICD-10-CM table, first torch calls) out of the first model's clock.
    EventClassifier(model="logistic", labels=f"map:{paths['label_map']}").fit(store, tr[:300], va[:100])
    curves = {}
    for name in args.models.split(","):
        clf = EventClassifier(model=name, labels=f"map:{paths['label_map']}", max_epochs=args.max_epochs, seed=0)
        points: list[dict] = []
        paused = [0.0]
        state: dict = {}

        def on_epoch(epoch, train_loss, val_loss, clf=clf, points=points, paused=paused, state=state):
            t_pause = time.perf_counter()
            if "test" not in state:
                state["test"] = clf.samples(store, te)
                state["ds"] = clf.dataset(store, state["test"])
            proba = 1 / (1 + np.exp(-predict_logits(clf.model_, state["ds"]).astype(np.float64)))
            r = evaluate_samples(state["test"], proba, clf.labels_, None)
            points.append({"epoch": epoch + 1, "seconds": round(t_pause - state["t0"] - paused[0], 2),
                           "macro_auprc": round(r["all"]["macro_auprc"], 4),
                           "new_onset_macro_auprc": round(r["new_onset"]["macro_auprc"], 4),
                           "new_onset_macro_auroc": round(r["new_onset"]["macro_auroc"], 4),
                           "macro_auroc": round(r["all"]["macro_auroc"], 4), "val_loss": val_loss})
            paused[0] += time.perf_counter() - t_pause

        state["t0"] = time.perf_counter()
        clf.fit(store, tr, va, on_epoch=on_epoch)
        total = time.perf_counter() - state["t0"] - paused[0]
        final = clf.evaluate(store, te)
        best = {"seconds": round(total, 2), "best_epoch": clf.history_.best_epoch + 1,
                "epochs_run": clf.history_.epochs_run, "macro_auprc": round(final["all"]["macro_auprc"], 4),
                "new_onset_macro_auprc": round(final["new_onset"]["macro_auprc"], 4),
                "new_onset_macro_auroc": round(final["new_onset"]["macro_auroc"], 4),
                "macro_auroc": round(final["all"]["macro_auroc"], 4)}
        curves[name] = {"per_epoch": points, "final": best}
        print(json.dumps({"model": name, **best}), flush=True)
    result = {"patients": args.patients, "threads": args.threads, "train_patients": len(tr),
              "test_patients": len(te), "curves": curves}
    (out / "quality_time.json").write_text(json.dumps(result, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, what in zip(axes, ("macro_auprc", "new_onset_macro_auprc"), ("all labels", "new onset")):
        for name, c in curves.items():
            pts = c["per_epoch"] or [c["final"]]
            ax.plot([p["seconds"] for p in pts], [p[key] for p in pts], marker="o", markersize=3, label=name)
        ax.set_xlabel(f"training wall time (s), {args.threads} thread(s)")
        ax.set_ylabel(f"test macro AUPRC ({what})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Quality per second: {args.patients:,} patients, next-visit task")
    fig.tight_layout()
    fig.savefig(out / "quality_time.png", dpi=120)


if __name__ == "__main__":
    main()
