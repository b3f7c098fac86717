"""Hospital scale (issue 15): time and peak memory of each stage on the hospital-shaped synthetic cohort.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_hospital.py \
        [--patients 30000,100000,300000] [--labels prefix:ICD10CM//:3] [--threads 2] [--max-rss-gb 16] \
        [--stage-timeout SECONDS] [--visit-gap-hours 0] [--max-batch-cells N] [--compare-models PATIENTS] \
        [--chunk-entries N] \
        [--out benchmarks/results/hospital.json]

For each size: `ehrdx synth --shape hospital` (generation, reported but not a target), conversion of the
MEDS dataset into the event store, building the task over every patient (next-visit prediction times,
targets and masks for every label), fitting a GRU for one epoch on the MEDS train split (its validation
pass and threshold tuning included) and evaluating it on the held-out split. `seconds` is the stage's
process from start to end; `work_seconds` leaves out starting Python and the imports. Each stage runs in its own
process, so its peak RSS is its own (os.wait4's ru_maxrss); a stage whose RSS passes --max-rss-gb is
killed, and so is one that runs past --stage-timeout. A stage that fails (killed, out of memory, an
error) is recorded with its message and the stages that need it are skipped; the next size still runs. Prints one JSON line per stage and writes all of them,
with the growth in seconds per event between consecutive sizes, to --out.

`--compare-models P` adds a stage (issue 15's Transformer-vs-GRU target): one training epoch of the GRU
(1 layer) and of the Transformer (`--transformer-layers`, 2 as the estimator's default) on the first P
training patients, hidden 128, batch 64, with the whole history and with each `--contexts` window,
alternating GRU, Transformer, GRU, Transformer in one process; the ratio of the faster of each pair, and
each model's microseconds per event of those patients. The same P on stores of 30k, 100k and 300k
patients (the patients are drawn alike, so the first P are a sample of each) says whether the cost per
event stays as the store grows: `--stage models --work W/pN --n N --compare-models P` on a kept store.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

STAGES = ("generate", "convert", "task", "train", "evaluate", "models")
NEEDS = {"generate": (), "convert": ("generate",), "task": ("convert",), "train": ("convert",), "models": ("convert",),
         "evaluate": ("train",)}


def stage_generate(work: Path, args) -> dict:
    from ehrdx.data.synth import write_hospital

    _, info = write_hospital(args.n, work / "data", args.seed)
    return {"events": info["n_events"], "visits": info["n_visits"], "visits_per_patient": info["visits_per_patient"],
            "codes_used": info["codes_used"], "label_categories": info["label_categories_used"]}


def stage_convert(work: Path, args) -> dict:
    from ehrdx.events_pipeline import open_store

    store = open_store(meds=work / "data" / "meds", store_dir=work / "store",
                       visit_gap_seconds=int(args.visit_gap_hours * 3600))
    return {"events": store.meta["events"], "visits": store.meta["visits"], "patients": len(store)}


def splits(store, work: Path):
    from ehrdx.events_pipeline import patient_splits

    return patient_splits(store, work / "data" / "meds", 0)


def stage_task(work: Path, args) -> dict:
    import numpy as np

    from ehrdx.data.store import EventStore
    from ehrdx.sources.events import EventSource
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.tasks.task import TaskSpec

    store = EventStore(work / "store")
    source, selector = EventSource(store), LabelSelector.parse(args.labels)
    vocab = source.fit_labels(splits(store, work)[0], selector, False)
    samples = source.samples(None, vocab, TaskSpec.parse("next-visit"), selector)
    out = {"events": store.meta["events"], "prediction_times": len(samples), "labels": len(vocab)}
    if hasattr(samples, "y_bits"):  # packed targets: count positives and known entries without a dense copy
        out["positives"] = int(samples.y_bits.column_sums().sum())
        out["known_entries"] = int(samples.mask_bits.column_sums().sum())
    elif isinstance(getattr(samples, "y", None), np.ndarray):  # dense targets
        out["positives"] = int((samples.y > 0.5).sum())
        out["known_entries"] = int(samples.mask.sum())
    return out


def stage_train(work: Path, args) -> dict:
    from ehrdx.data.store import EventStore
    from ehrdx.estimator import EHRClassifier

    store = EventStore(work / "store")
    tr, va, _ = splits(store, work)
    clf = EHRClassifier(model=args.model, labels=args.labels, max_epochs=1, seed=args.seed)
    clf.fit(store, tr, va)
    clf.save(work / "model")
    h = clf.history_
    return {"events": store.meta["events"], "prediction_times": clf.fit_summary_["train_samples"],
            "labels": len(clf.labels_), "loop_seconds": round(h.seconds, 1), "rows_per_s": round(h.samples_per_second),
            "train_loss": round(h.train_loss[-1], 5)}


def stage_evaluate(work: Path, args) -> dict:
    from ehrdx.data.store import EventStore
    from ehrdx.estimator import EHRClassifier

    store = EventStore(work / "store")
    te = splits(store, work)[2]
    clf = EHRClassifier.load(work / "model")
    result = clf.evaluate(store, te)
    r = result["all"]
    return {"events": store.meta["events"], "prediction_times": result["samples"], "labels": len(clf.labels_),
            "macro_auroc": _round(r.get("macro_auroc")), "macro_auprc": _round(r.get("macro_auprc")),
            "micro_auroc": _round(r.get("micro_auroc"))}


def stage_models(work: Path, args) -> dict:
    import torch

    from ehrdx.data.sequences import EventEncoder, SequenceSet
    from ehrdx.data.store import EventStore
    from ehrdx.estimator import EHRClassifier
    from ehrdx.models.sequence import SequenceConfig, SequenceModel
    from ehrdx.tasks.labels import LabelVocab
    from ehrdx.tasks.task import label_first_times
    from ehrdx.train.loop import TrainConfig, train_model

    store = EventStore(work / "store")
    tr = splits(store, work)[0][: args.compare_models]
    clf = EHRClassifier(labels=args.labels)
    clf.resolve_settings("events")
    clf.label_vocab_ = LabelVocab.from_first_times(label_first_times(store, tr, clf.selector_))
    clf.encoder_ = EventEncoder.fit(store, tr)
    samples = clf.samples(store, tr)
    import numpy as np

    rows = np.asarray(tr)
    own_events = int((np.asarray(store.offsets)[rows + 1] - np.asarray(store.offsets)[rows]).sum())
    out = {"events": store.meta["events"], "train_patients": len(tr), "prediction_times": len(samples),
           "train_patient_events": own_events, "labels": len(clf.label_vocab_),
           "transformer_layers": args.transformer_layers, "runs": []}
    for context in [None, *(int(c) for c in args.contexts.split(",") if c)]:
        ds = SequenceSet(store, samples, clf.encoder_, context=context)
        best = {}
        for enc in ("gru", "transformer", "gru", "transformer"):
            torch.manual_seed(0)
            model = SequenceModel(SequenceConfig(ds.encoder.n_codes, len(clf.label_vocab_), enc,
                                                 n_numeric=len(ds.numeric_ids), hidden=128,
                                                 layers=args.transformer_layers if enc == "transformer" else 1,
                                                 prior_summary=context is not None))
            h = train_model(model, ds, None, TrainConfig(max_epochs=1, batch_size=64, seed=0))
            best[enc] = min(best.get(enc, float("inf")), h.seconds)
        out["runs"].append({"context": context, "max_visits_read": int(ds.seq_nv.max()),
                            "gru_epoch_s": round(best["gru"], 2), "transformer_epoch_s": round(best["transformer"], 2),
                            "gru_us_per_event": round(1e6 * best["gru"] / own_events, 2),
                            "transformer_us_per_event": round(1e6 * best["transformer"] / own_events, 2),
                            "transformer_over_gru": round(best["transformer"] / best["gru"], 2)})
    return out


def _round(x):
    return None if x is None else round(float(x), 4)


def run_stage(stage: str, work: Path, args) -> dict:
    """This stage in a child process: its result, seconds and peak RSS, or its failure."""
    cmd = [sys.executable, __file__, "--stage", stage, "--work", str(work), "--n", str(args.n), "--seed",
           str(args.seed), "--labels", args.labels, "--model", args.model, "--threads", str(args.threads),
           "--visit-gap-hours", str(args.visit_gap_hours), "--max-batch-cells", str(args.max_batch_cells),
           "--compare-models", str(args.compare_models), "--contexts", args.contexts, "--transformer-layers",
           str(args.transformer_layers), "--chunk-entries", str(args.chunk_entries)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    limit_kb, killed, timed_out = args.max_rss_gb * 1024 * 1024, False, False
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not (killed or timed_out) and rss_kb(proc.pid) > limit_kb:
                killed = True
                os.kill(proc.pid, signal.SIGKILL)
            if not (killed or timed_out) and args.stage_timeout and time.perf_counter() - t0 > args.stage_timeout:
                timed_out = True
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    row = {"stage": stage, "patients": args.n, "seconds": round(seconds, 1),
           "peak_rss_mib": round(usage.ru_maxrss / 1024)}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return row | json.loads(lines[-1])
    if timed_out:
        why = f"timed out: ran past --stage-timeout {args.stage_timeout}s"
    elif killed:
        why = f"killed: RSS passed --max-rss-gb {args.max_rss_gb}"
    elif proc.returncode < 0:
        why = f"killed by signal {-proc.returncode} (out of memory?)"
    else:
        why = (stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]
    return row | {"failed": why}


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def growth(rows: list[dict]) -> list[dict]:
    """Seconds per event of each stage at each size over the same at the previous size (1.0: linear), by
    the stage's own clock (work_seconds: without starting Python and importing torch)."""
    out, key = [], "work_seconds"
    for stage in STAGES:
        ok = [r for r in rows if r["stage"] == stage and r.get(key) and r.get("events")]  # failed: neither
        for a, b in itertools.pairwise(ok):
            out.append({"stage": stage, "from": a["patients"], "to": b["patients"],
                        "events_ratio": round(b["events"] / a["events"], 2),
                        "seconds_ratio": round(b[key] / max(a[key], 0.05), 2),
                        "seconds_per_event_ratio": round((b[key] / b["events"]) / max(a[key] / a["events"], 1e-12), 2),
                        "peak_rss_ratio": round(b["peak_rss_mib"] / max(a["peak_rss_mib"], 1), 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", default="30000,100000,300000", help="sizes, comma-separated")
    ap.add_argument("--labels", default="prefix:ICD10CM//:3", help="label selection (ICD-10 categories: ~1,500)")
    ap.add_argument("--model", default="gru")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--visit-gap-hours", type=float, default=0.0,
                    help="events this close form one visit (0: a timestamp is a visit; 24: a stay is about one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-rss-gb", type=float, default=16.0, help="kill a stage whose RSS passes this")
    ap.add_argument("--stage-timeout", type=float, default=0, help="kill a stage that runs longer (s; 0: never)")
    ap.add_argument("--work", default=None, help="where the data and the store go (default: a temporary directory)")
    ap.add_argument("--max-batch-cells", type=int, default=0,
                    help="samples x labels per batch at most (data/sequences.py MAX_BATCH_CELLS); 0: the default, "
                         "-1: no cap (one batch per step, as before the cap)")
    ap.add_argument("--compare-models", type=int, default=0,
                    help="training patients for the GRU vs Transformer epoch stage (0: no such stage)")
    ap.add_argument("--contexts", default="64", help="bounded contexts the model stage also runs (comma-separated)")
    ap.add_argument("--transformer-layers", type=int, default=2)
    ap.add_argument("--chunk-entries", type=int, default=0,
                    help="events, samples and label entries the task builds at once (tasks/chunks.py CHUNK_ENTRIES; "
                         "0: the default)")
    ap.add_argument("--keep", action="store_true", help="keep each size's data, store and model")
    ap.add_argument("--out", default="benchmarks/results/hospital.json")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:  # a child: one stage, its result as the last JSON line
        import torch

        import ehrdx.data.synth
        import ehrdx.estimator
        import ehrdx.events_pipeline  # noqa: F401  (imported before the clock starts)

        torch.set_num_threads(args.threads)
        if args.max_batch_cells:
            from ehrdx.data import sequences

            sequences.MAX_BATCH_CELLS = 1 << 62 if args.max_batch_cells < 0 else args.max_batch_cells
        if args.chunk_entries:
            from ehrdx.tasks import chunks

            chunks.CHUNK_ENTRIES = args.chunk_entries
        t0 = time.perf_counter()
        result = globals()[f"stage_{args.stage}"](Path(args.work), args)
        print(json.dumps({"work_seconds": round(time.perf_counter() - t0, 1)} | result), flush=True)
        return
    root = Path(args.work or tempfile.mkdtemp(prefix="ehrdx_hospital_"))
    rows: list[dict] = []
    for n in (int(x) for x in args.patients.split(",")):
        args.n, work = n, root / f"p{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        done: set[str] = set()
        for stage in STAGES:
            if stage == "models" and not args.compare_models:
                continue
            missing = [s for s in NEEDS[stage] if s not in done]
            row = ({"stage": stage, "patients": n, "skipped": f"needs {', '.join(missing)}"} if missing
                   else run_stage(stage, work, args))
            if "failed" not in row and "skipped" not in row:
                done.add(stage)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not args.work and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    result = {"benchmark": "bench_hospital", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "threads": args.threads, "visit_gap_hours": args.visit_gap_hours, "labels": args.labels, "model": args.model, "max_rss_gb": args.max_rss_gb,
              "max_batch_cells": args.max_batch_cells, "chunk_entries": args.chunk_entries,
              "stage_timeout_s": args.stage_timeout,
              "stages": rows, "growth": growth(rows)}
    for g in result["growth"]:
        print(json.dumps(g))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
