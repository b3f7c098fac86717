"""Time to quality of a sequence model's training settings on the external sets (issue 14, item 2).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice .venv-bench/bin/python benchmarks/bench_seqtrain.py \
        --data /tmp/ext/data --sets clinosim,eunomia,syntha --patients 2500 --seed 1 \
        --variant 'today={"batch_size":64,"patience":3,"schedule":"constant","monitor":"loss"}' \
        --variant 'new={}'

Each --variant is NAME=JSON: training settings (TrainConfig fields) over the estimator's defaults;
`model`, `hidden`, `dropout` and `max_epochs` go to the estimator. After every epoch the held-out
new-onset macro AUROC of the weights at that point is measured off the clock; time to quality is the
training time (validation passes included, these test passes not) until it is within 0.005 of the
run's final value (the weights the fit returns). Writes seqtrain.json into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from external import bootstrap
from external.protocol import prepare

from ehrdx.estimator import EHRClassifier
from ehrdx.train.loop import predict_logits

ESTIMATOR = ("model", "hidden", "dropout", "max_epochs", "layers", "code_dim")


def score(samples, proba) -> dict:
    m, _ = bootstrap.evaluate(samples, proba, np.ones((1, len(samples))))
    return {"no_auroc": m["new_onset"]["macro_auroc"]["value"], "no_auprc": m["new_onset"]["macro_auprc"]["value"],
            "all_auroc": m["all"]["macro_auroc"]["value"], "all_auprc": m["all"]["macro_auprc"]["value"]}


def run(p, name: str, settings: dict, seed: int) -> dict:
    est = {k: settings[k] for k in ESTIMATOR if k in settings}
    train = {k: v for k, v in settings.items() if k not in ESTIMATOR}
    clf = EHRClassifier(model=est.pop("model", "gru"), task=p.task, labels=p.selector, seed=seed, **est)
    resolve = clf.resolve_settings

    def resolve_with(kind, resolve=resolve, clf=clf):  # training settings over the estimator's defaults
        spec = resolve(kind)
        clf.train_config_ = replace(clf.train_config_, **train)
        return spec

    clf.resolve_settings = resolve_with
    points, paused, state = [], [0.0], {}

    def held_out():
        if "test" not in state:  # the built-in cohort's samples come from the estimator's own task
            state["test"] = p.samples["held_out"] if p.samples else clf.samples(p.store, p.rows["held_out"])
            state["cols"] = [clf.labels_.index(lab) for lab in (p.labels or clf.labels_)]
        return state["test"], state["cols"]

    def on_epoch(epoch, train_loss, val_loss):
        t = time.perf_counter()
        test, cols = held_out()
        if "ds" not in state:
            state["ds"] = clf.dataset(p.store, test)
        proba = 1 / (1 + np.exp(-predict_logits(clf.model_, state["ds"]).astype(np.float64)))
        points.append({"epoch": epoch + 1, "seconds": round(t - state["t0"] - paused[0], 2),
                       "val": None if val_loss is None else round(val_loss, 5), **score(test, proba[:, cols])})
        paused[0] += time.perf_counter() - t

    state["t0"] = time.perf_counter()
    clf.fit(p.store, p.rows["train"], p.rows["tuning"], targets=p.targets, on_epoch=on_epoch)
    seconds = time.perf_counter() - state["t0"] - paused[0]
    test, cols = held_out()
    proba = clf.predict_samples(p.store, test)[:, cols]
    final = score(test, proba)
    key = "no_auroc" if final["no_auroc"] is not None else "all_auroc"  # syntha: no new onsets
    ttq = next((q["seconds"] for q in points if q[key] >= final[key] - 0.005), seconds)
    h = clf.history_
    cfg = clf.train_config_.to_dict()
    return {"set": p.name, "variant": name, "seed": seed, **{k: v if v is None else round(v, 4) for k, v in final.items()}, "fit_s": round(seconds, 1),
            "ttq_s": ttq, "epochs": h.epochs_run, "best_epoch": h.best_epoch + 1,
            "steps": getattr(h, "steps", None), "config": cfg, "per_epoch": points}


def builtin(patients: int, work: Path) -> SimpleNamespace:
    """ehrdx's own cohort (next-visit task, its MEDS splits), as bench_quality_time.py runs it."""
    from ehrdx.data.synth import generate_longitudinal, write_longitudinal
    from ehrdx.events_pipeline import open_store, patient_splits

    paths = write_longitudinal(generate_longitudinal(patients, seed=0), work)
    store = open_store(meds=paths["meds"], store_dir=work / "store")
    tr, va, te = patient_splits(store, paths["meds"], 0)
    return SimpleNamespace(name=f"builtin{patients}", store=store, task="next-visit", targets=None, samples=None,
                           selector=f"map:{paths['label_map']}", labels=None,
                           rows={"train": tr, "tuning": va, "held_out": te})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/ext/data")
    ap.add_argument("--sets", default="clinosim,eunomia,syntha")
    ap.add_argument("--patients", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model-seeds", default="1", help="estimator seeds (the data seed is --seed)")
    ap.add_argument("--work", default="/tmp/seqtrain")
    ap.add_argument("--variant", action="append", required=True, help="NAME=JSON settings")
    ap.add_argument("--out", default="/tmp/seqtrain/out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.variant]
    results = []
    for set_name in args.sets.split(","):
        if set_name.startswith("builtin"):
            p = builtin(int(set_name.split(":")[1]), Path(args.work) / set_name.replace(":", "_"))
        else:
            meds = Path(args.data) / f"{set_name}_p{args.patients}_s{args.seed}" / "meds"
            p = prepare(set_name, meds, Path(args.work) / f"{set_name}_p{args.patients}_s{args.seed}", n_labels=25,
                        min_patients=10, years=10, times_mode="yearly", visit_gap_seconds=86400)
        runs = [(name, settings, ms) for name, settings in variants for ms in map(int, args.model_seeds.split(","))]
        for name, settings, ms in runs:
            r = run(p, name, settings, ms)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("config", "per_epoch")}), flush=True)
            print("   ", " ".join(f"{q['epoch']}:{q['seconds']:.0f}s/{q['no_auroc'] or q['all_auroc']:.3f}"
                              for q in r["per_epoch"]), flush=True)
            (out / "seqtrain.json").write_text(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()
