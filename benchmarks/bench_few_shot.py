"""Few-shot new labels: how many positive patients `ehrdx update` needs to add a label to a trained model.

    python benchmarks/bench_few_shot.py --quick --out bench_out/few_shot                  (built-in, minutes)
    python benchmarks/bench_few_shot.py --meds /tmp/ext/data/eunomia_p2694_s0/meds --quick --out ...
    python benchmarks/bench_few_shot.py --patients 6000 --out bench_out/few_shot          (the full grid)

Protocol, per data set (the built-in cohort from `ehrdx synth`, or a converted external MEDS set:
benchmarks/bench_external.py builds them; their label candidates make the label map):
  splits       the MEDS subject_splits (train / tuning / held_out). The test patients are the same for every
               arm, label, k and seed, and are never used for anything but the final scores.
  labels       the label universe is the whole label map. The few-shot labels (--labels, or by default the
               --n-labels labels with the fewest positive training patients among those with at least
               2 x max(k) and a validation AUROC of at least --min-val-auroc, on at least 10 positive
               validation patients, when trained with all of them)
               are chosen on training and validation patients only.
  base model   trained once on all training patients with every label of the universe except the few-shot
               labels (a model that exists before the label of interest does; it saw the label's codes as
               inputs, as a clinic's model has seen the patients it now starts labelling).
  k-shot run   for label L, k and seed s: a seeded choice of k of the training patients positive for L (a
               positive prediction time) and of min(k, available) of the validation patients positive for L
               (as EHRSHOT draws k for train and k for validation); the other positive patients of L are left
               out of that run's training and validation data altogether, every negative patient is kept.
               The choices are nested (for one seed, the 8 patients are among the 32).
  arms         update       ehrdx update's Python API (update_model: probe init, its penalty chosen on the
                            run's validation patients, 2 distilled epochs) adding L
                            to the base model, on the run's patients;
               gbm-counts   LightGBM on code counts, one booster for L, the run's patients
                            (benchmarks/external/models.py lgbm_counts, the external benchmark's baseline);
               scratch      the base model's settings trained from scratch on the run's patients, all labels;
               update (encoder)   with --encoder-arm: the base model is `ehrdx train --init ENC` on an
                            encoder from `ehrdx pretrain` (issue 16 items 1-2), then the same update.
               update (auto)      with --auto-arm: the base model is `--model auto` (the default for event
                            streams: gbm + the --model network + gbm-counts, mixed by train/mixing.py), and
                            the update adds L to every member (each booster fits L, the network probes it)
                            and chooses L's weights on the run's validation patients.
               update (auto, encoder)  with --encoder-arm and --auto-arm: the base model is `ehrdx train
                            --init ENC --model auto` on the same encoder (its network member started from the
                            encoder, every member reading its vocabulary), then the same update (the network
                            member's probe of L starts from the pretrained rows of L's codes).
               Each arm also runs once with all of L's positives (k = all): the reference of the figure.
  model seeds  every network and booster uses seed 0; the seed only picks the positive patients, so the
               spread over seeds is the spread over which few patients one happens to have.
  metrics      L's test AUROC and AUPRC over all known prediction times and over new onset (L not recorded at
               or before the prediction time); and, for the update arms, the old labels' macro AUROC before and
               after (forgetting).
Writes results.json (every run), results.md (mean and standard deviation over seeds) and auroc_vs_k.png.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))

from external.meds_io import read_candidates
from external.models import Settings, lgbm_counts
from external.protocol import Prepared, write_label_map
from few_shot_tables import figure, markdown

import ehrdx
from ehrdx.data.samples import Samples
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.ranking import binary_ranking
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import parse_duration
from ehrdx.update import update_model

K_FULL, K_QUICK = (4, 8, 16, 32, 64, 128), (8, 32)
ENCODER_ARM = "update (encoder)"
AUTO_ARM = "update (auto)"
AUTO_ENCODER_ARM = "update (auto, encoder)"
ARMS = ("update", "gbm-counts", "scratch", ENCODER_ARM, AUTO_ARM, AUTO_ENCODER_ARM)
UPDATE_ARMS = ("update", ENCODER_ARM, AUTO_ARM, AUTO_ENCODER_ARM)
BASES = {"update": "base", ENCODER_ARM: "encoder_base", AUTO_ARM: "auto_base", AUTO_ENCODER_ARM: "auto_encoder_base"}
MIN_VAL_PATIENTS = 10  # positive validation patients behind the validation AUROC that chooses a label
ENCODER_DATA_OPTION = "--meds"  # how the pretrain/train commands are given the data set (a MEDS directory)


@dataclass
class DataSet:
    """A data set ready for every arm: store, splits, its label map file, and how to read it."""

    name: str
    meds: Path
    store: object
    splits: tuple[np.ndarray, np.ndarray, np.ndarray]
    label_map: Path
    task: str
    visit_gap: str


def builtin_set(patients: int, work: Path) -> DataSet:
    from ehrdx.data.synth import generate_longitudinal, write_longitudinal

    paths = write_longitudinal(generate_longitudinal(patients, seed=0), work / "synth")
    store = open_store(meds=paths["meds"], store_dir=work / "store")
    return DataSet(f"built-in ({patients:,} patients)", Path(paths["meds"]), store,
                   patient_splits(store, paths["meds"], 0), Path(paths["label_map"]), "next-visit", "0s")


def external_set(meds: Path, work: Path, visit_gap: str = "1d") -> DataSet:
    """A converted external set; its label candidates (metadata/label_candidates.parquet) are the label map."""
    store = open_store(meds=meds, store_dir=work / "store", visit_gap_seconds=parse_duration(visit_gap))
    codes_of: dict[str, list[str]] = {}
    desc: dict[str, str] = {}
    for code, label, d in read_candidates(meds).select("code", "label", "description").iter_rows():
        codes_of.setdefault(label, []).append(code)
        desc.setdefault(label, d or "")
    label_map = write_label_map(work / "label_map.csv", codes_of, desc)
    return DataSet(Path(meds).parent.name, Path(meds), store, patient_splits(store, meds, 0), label_map,
                   "window:365d", visit_gap)


def one_label(s: Samples, j: int, rows: np.ndarray | None = None) -> Samples:
    """The samples of the patients `rows` (all by default) with label column j only."""
    if rows is not None:
        s = s.subset(np.isin(s.row, rows))
    return Samples(s.row, s.time, s.cutoff, s.n_visits, s.window_end, s.y[:, [j]], s.mask[:, [j]],
                   s.history[:, [j]], dict(s.counts))


def scores(test: Samples, proba: np.ndarray) -> dict:
    """AUROC/AUPRC of one label's probabilities on `test` (one label column): all and new onset."""
    y, known, before = test.y[:, 0] > 0.5, test.mask[:, 0], test.history[:, 0]
    out = {}
    for name, m in (("all", known), ("new_onset", known & ~before)):
        auroc, auprc = binary_ranking(proba[m & y], proba[m & ~y])
        out[name] = {"auroc": None if np.isnan(auroc) else round(auroc, 4),
                     "auprc": None if np.isnan(auprc) else round(auprc, 4),
                     "positives": int((m & y).sum()), "known": int(m.sum())}
    return out


def positive_patients(s: Samples, j: int) -> np.ndarray:
    return np.unique(s.row[(s.y[:, j] > 0.5) & s.mask[:, j]])


def choose_labels(train: Samples, val: Samples, labels: list[str], val_auroc: dict[str, float], args) -> list[str]:
    """--labels, or the --n-labels labels with the fewest positive training patients among those with at least
    2 x max(k) of them whose validation AUROC with all positives reaches --min-val-auroc on at least
    MIN_VAL_PATIENTS positive validation patients (a label no model learns even from all its patients would
    measure noise at every k)."""
    counts = {lab: len(positive_patients(train, j)) for j, lab in enumerate(labels)}
    val_counts = {lab: len(positive_patients(val, j)) for j, lab in enumerate(labels)}
    if args.labels:
        chosen = [x.strip() for x in args.labels.split(",")]
        unknown = [x for x in chosen if x not in counts]
        if unknown:
            raise SystemExit(f"--labels: {', '.join(unknown)} not among the labels of the training patients "
                             f"({', '.join(labels)})")
        return chosen
    need = 2 * max(args.ks)
    eligible = sorted((c, lab) for lab, c in counts.items() if c >= need and val_counts[lab] >= MIN_VAL_PATIENTS
                      and val_auroc[lab] >= args.min_val_auroc)
    if not eligible:
        raise SystemExit(f"no label has {need} positive training patients and a validation AUROC of "
                         f"{args.min_val_auroc}: give more --patients, smaller --ks, --min-val-auroc or --labels")
    return [lab for _, lab in eligible[:args.n_labels]]


def write_map(full: Path, keep_out: list[str], out: Path) -> Path:
    pl.read_csv(full, infer_schema_length=0).filter(~pl.col("label").is_in(keep_out)).write_csv(out)
    return out


def run_cli(args: list[str], what: str) -> str:
    """An ehrdx command in a subprocess (its output); its failure stops the benchmark with what went wrong."""
    r = subprocess.run([sys.executable, "-m", "ehrdx", *args], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-8:])
        hint = (" -- this ehrdx has no such command or option yet: the encoder arm needs `ehrdx pretrain` and "
                "`ehrdx train --init` (issue 16, items 1-2)") if "No such" in tail else ""
        raise SystemExit(f"--encoder-arm: {what} failed (exit {r.returncode}){hint}\n  command: ehrdx "
                         f"{' '.join(args)}\n  {tail}")
    return r.stdout


def check_encoder_commands() -> None:
    """Fail at once, not after hours of other arms, where this ehrdx cannot pretrain (yet)."""
    run_cli(["pretrain", "--help"], "ehrdx pretrain --help")
    if "--init" not in run_cli(["train", "--help"], "ehrdx train --help"):
        raise SystemExit("--encoder-arm: `ehrdx train` has no --init option yet: the encoder arm needs `ehrdx "
                         "pretrain` and `ehrdx train --init` (issue 16, items 1-2)")


def pretrain_encoder(ds: DataSet, work: Path, pretrain_epochs: int) -> Path:
    """`ehrdx pretrain` once per data set: the encoder every encoder arm's base model starts from."""
    enc = work / "encoder"
    run_cli(["pretrain", ENCODER_DATA_OPTION, str(ds.meds), "--out", str(enc), "--epochs", str(pretrain_epochs),
             "--seed", "0", "--visit-gap", ds.visit_gap], "ehrdx pretrain")
    return enc


def encoder_base(ds: DataSet, base_map: Path, params: dict, work: Path, enc: Path, model: str) -> EHRClassifier:
    """`ehrdx train --init ENC --model MODEL` with the base model's labels and settings (MODEL: the --model
    network, or auto: the ensemble whose network member starts from the encoder)."""
    out = work / ("encoder_base" if model != "auto" else "auto_encoder_base")
    run_cli(["train", ENCODER_DATA_OPTION, str(ds.meds), "--out", str(out), "--init", str(enc),
             "--labels", f"map:{base_map}", "--task", ds.task, "--model", model,
             "--hidden", str(params["hidden"]),
             "--epochs", str(params["max_epochs"]), "--seed", "0", "--visit-gap", ds.visit_gap, "--device", "cpu"],
            f"ehrdx train --init --model {model}")
    return ehrdx.load(out)


def run_arm(arm: str, ctx: dict, label: str, tr: np.ndarray, va: np.ndarray) -> dict:
    """Fit one arm on the training/validation patients `tr`, `va` and score `label` on the test samples."""
    ds, test = ctx["ds"], ctx["test"][label]
    t0 = time.perf_counter()
    extra = {}
    if arm in UPDATE_ARMS:
        base = ctx[BASES[arm]]
        new, rep = update_model(base, ds.store, (tr, va, ds.splits[2]), new_labels=[label],
                                selector=ctx["full_selector"], epochs=ctx["args"].update_epochs)
        proba = new.predict_samples(ds.store, ctx["test_samples"])[:, new.labels_.index(label)]
        extra = {"old_labels_macro_auroc_before": rep["old_labels_macro_auroc_before"],
                 "old_labels_macro_auroc_after": rep["old_labels_macro_auroc_after"],
                 "probe_c": rep.get("probe_c", {}).get(label)}  # the probe's penalty, chosen on validation
    elif arm == "scratch":
        clf = EHRClassifier(**ctx["params"], task=ds.task, labels=ctx["full_selector"]).fit(ds.store, tr, va)
        proba = clf.predict_samples(ds.store, ctx["test_samples"])[:, clf.labels_.index(label)]
    else:  # one LightGBM booster on counts for this label, the external benchmark's function
        j = ctx["labels"].index(label)
        p = Prepared(ds.name, ds.store, None, {"train": tr, "tuning": va, "held_out": ds.splits[2]}, [label], {},
                     None, {"train": one_label(ctx["train_samples"], j, tr), "tuning": one_label(ctx["val_samples"], j, va),
                            "held_out": test}, None)
        proba = lgbm_counts(p, Settings(seed=0, threads=1))[0][:, 0]
    return {**scores(test, proba), **extra, "seconds": round(time.perf_counter() - t0, 2)}


def run_set(ds: DataSet, args, work: Path, results: dict, save) -> None:
    params = {"model": args.model, "max_epochs": args.epochs, "seed": 0, "hidden": args.hidden}
    tr, va, te = ds.splits
    full = LabelSelector.parse(f"map:{ds.label_map}")
    t0 = time.perf_counter()
    everything = EHRClassifier(**params, task=ds.task, labels=full).fit(ds.store, tr, va)  # scratch, all positives
    labels = everything.labels_
    ctx = {"ds": ds, "args": args, "params": params, "full_selector": full, "labels": labels,
           "train_samples": everything.samples(ds.store, tr), "val_samples": everything.samples(ds.store, va),
           "test_samples": everything.samples(ds.store, te)}
    val_proba = everything.predict_samples(ds.store, ctx["val_samples"])
    val_auroc = {lab: scores(one_label(ctx["val_samples"], j), val_proba[:, j])["all"]["auroc"] or 0.0
                 for j, lab in enumerate(labels)}
    chosen = choose_labels(ctx["train_samples"], ctx["val_samples"], labels, val_auroc, args)
    choice = {lab: {"train_positive_patients": len(positive_patients(ctx["train_samples"], j)),
                    "validation_positive_patients": len(positive_patients(ctx["val_samples"], j)),
                    "validation_auroc_all_positives": val_auroc[lab]} for j, lab in enumerate(labels)}
    ctx["test"] = {lab: one_label(ctx["test_samples"], labels.index(lab)) for lab in chosen}
    entry = results["sets"].setdefault(ds.name, {
        "patients": {"train": len(tr), "validation": len(va), "test": len(te)}, "task": ds.task,
        "labels": len(labels), "few_shot_labels": chosen, "label_choice": choice, "runs": [],
        "descriptions": {lab: everything.label_vocab_.descriptions().get(lab) for lab in chosen},
        "test_samples": len(ctx["test_samples"])})
    entry["scratch_all_seconds"] = round(time.perf_counter() - t0, 1)
    base_map = write_map(ds.label_map, chosen, work / "base_map.csv")
    t0 = time.perf_counter()
    ctx["base"] = EHRClassifier(**params, task=ds.task, labels=f"map:{base_map}").fit(ds.store, tr, va)
    entry["base_seconds"] = round(time.perf_counter() - t0, 1)
    arms = [a for a in ARMS if (a not in (ENCODER_ARM, AUTO_ENCODER_ARM) or args.encoder_arm)
            and (a not in (AUTO_ARM, AUTO_ENCODER_ARM) or args.auto_arm) and (not args.arms or a in args.arms)]
    if AUTO_ARM in arms:
        t0 = time.perf_counter()
        ctx["auto_base"] = EHRClassifier(**{**params, "model": "auto"}, task=ds.task,
                                         labels=f"map:{base_map}").fit(ds.store, tr, va)
        entry["auto_base_seconds"] = round(time.perf_counter() - t0, 1)
    if ENCODER_ARM in arms or AUTO_ENCODER_ARM in arms:
        t0 = time.perf_counter()
        enc = pretrain_encoder(ds, work, args.pretrain_epochs)
        entry["pretrain_seconds"] = round(time.perf_counter() - t0, 1)
        for arm, model in ((ENCODER_ARM, params["model"]), (AUTO_ENCODER_ARM, "auto")):
            if arm in arms:
                t0 = time.perf_counter()
                ctx[BASES[arm]] = encoder_base(ds, base_map, params, work, enc, model)
                entry[f"{BASES[arm]}_seconds"] = round(time.perf_counter() - t0, 1)
    for label in chosen:
        j = labels.index(label)
        pos_tr, pos_va = positive_patients(ctx["train_samples"], j), positive_patients(ctx["val_samples"], j)
        entry.setdefault("label_positive_patients", {})[label] = {
            "train": len(pos_tr), "validation": len(pos_va), "test": len(positive_patients(ctx["test"][label], 0)),
            "validation_auroc_all_positives": val_auroc[label]}
        for arm in arms:
            if arm == "scratch":  # the model trained on everything is the scratch arm with all positives
                r = {**scores(ctx["test"][label], everything.predict_samples(ds.store, ctx["test_samples"])[:, j]),
                     "seconds": entry["scratch_all_seconds"]}
            else:
                r = run_arm(arm, ctx, label, tr, va)
            entry["runs"].append({"label": label, "arm": arm, "k": "all", "seed": None, **r})
            print(json.dumps({"set": ds.name, **entry["runs"][-1]}), flush=True)
        for seed in range(args.seeds):
            rng = np.random.default_rng([seed, j])
            order_tr, order_va = rng.permutation(pos_tr), rng.permutation(pos_va)
            for k in args.ks:
                if k >= len(pos_tr):
                    continue
                tr_k = np.setdiff1d(tr, order_tr[k:])  # k positives kept, every negative patient kept
                va_k = np.setdiff1d(va, order_va[k:])
                for arm in arms:
                    r = run_arm(arm, ctx, label, tr_k, va_k)
                    entry["runs"].append({"label": label, "arm": arm, "k": k, "seed": seed,
                                          "validation_positives": int(min(k, len(pos_va))), **r})
                    print(json.dumps({"set": ds.name, **entry["runs"][-1]}), flush=True)
                save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meds", action="append", default=[], help="an external MEDS set (repeatable); none: built-in")
    ap.add_argument("--builtin", action="store_true", help="also the built-in cohort when --meds is given")
    ap.add_argument("--patients", type=int, default=6000, help="built-in cohort size")
    ap.add_argument("--labels", default=None, help="comma-separated few-shot labels (default: chosen, see above)")
    ap.add_argument("--n-labels", type=int, default=3)
    ap.add_argument("--min-val-auroc", type=float, default=0.7,
                    help="labels chosen by default: validation AUROC (scratch, all positives) at least this")
    ap.add_argument("--ks", default=",".join(map(str, K_FULL)))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--model", default="gru")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=15, help="max epochs of the base and scratch models")
    ap.add_argument("--update-epochs", type=int, default=2, help="fine-tuning epochs of ehrdx update")
    ap.add_argument("--encoder-arm", action="store_true", help="add the pretrained-encoder arm (ehrdx pretrain)")
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument("--auto-arm", action="store_true", help="add the arm whose base model is --model auto")
    ap.add_argument("--arms", default=None, help="comma-separated arms to run (default: all; e.g. update, to "
                    "measure a change of ehrdx update alone)")
    ap.add_argument("--quick", action="store_true", help="2 labels, k in (8, 32), 2 seeds, 2,500 patients, "
                    "5 epochs: minutes on one thread")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench_out/few_shot")
    ap.add_argument("--render", default=None, help="only write results.md and the figure from this results.json")
    args = ap.parse_args()
    if args.render:
        results = json.loads(Path(args.render).read_text())
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(markdown(results) + "\n")
        figure(results, out / "auroc_vs_k.png")
        print(markdown(results))
        return
    args.ks = sorted(int(k) for k in args.ks.split(","))
    # commas inside an arm's parentheses ("update (auto, encoder)") do not separate arms
    args.arms = [a.strip() for a in re.split(r",(?![^()]*\))", args.arms)] if args.arms else None
    unknown = sorted(set(args.arms or []) - set(ARMS))
    if unknown:
        raise SystemExit(f"--arms: unknown {', '.join(unknown)} (choose from {', '.join(ARMS)})")
    if args.quick:
        args.n_labels, args.ks, args.seeds, args.patients, args.epochs = 2, list(K_QUICK), 2, 2500, 5
    torch.set_num_threads(args.threads)
    if args.encoder_arm:  # fail before hours of work, not after
        check_encoder_commands()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "torch": torch.__version__, "sets": {}}

    def save() -> None:
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    work = Path(tempfile.mkdtemp(prefix="ehrdx_few_shot_"))
    sets = ([builtin_set(args.patients, work / "builtin")] if args.builtin or not args.meds else [])
    sets += [external_set(Path(m), work / f"ext{i}") for i, m in enumerate(args.meds)]
    for i, ds in enumerate(sets):
        (work / f"set{i}").mkdir(parents=True, exist_ok=True)
        run_set(ds, args, work / f"set{i}", results, save)
        save()
    table = markdown(results)
    (out / "results.md").write_text(table + "\n")
    figure(results, out / "auroc_vs_k.png")
    print(table)


if __name__ == "__main__":
    main()
