"""ehrdx synth and ehrdx demo: synthetic cohorts, and the whole pipeline on one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.options import (
    Depth,
    EpochProgress,
    Epochs,
    GlobalOptions,
    Hidden,
    ModelKind,
    Seed,
    check_out,
    console,
    fail,
    refuse_options,
)
from ehrdx.cli.update import print_update
from ehrdx.errors import EhrdxError
from ehrdx.report import write_html_report


@app.command()
def synth(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory to write the cohort into.")],
    patients: Annotated[int, typer.Option(min=1, help="Number of patients.")] = 20_000,
    seed: Seed = 0,
    table_format: Annotated[str, typer.Option(help="Patient table format: parquet or csv.")] = "parquet",
    format: Annotated[str, typer.Option("--format", help="'meds': the longitudinal cohort as a MEDS dataset "
                                        "(OUT/meds) with the next-visit oracle at every visit end and a label "
                                        "map; 'events': the index-date cohort (events.parquet + patient "
                                        "table + oracle).")] = "events",
    shape: Annotated[str, typer.Option("--shape", help="'builtin': the small cohort with an oracle; 'hospital': "
                                       "inpatient + outpatient records at scale (about 150 visits per patient, "
                                       "a tail to 3,000; about 5,000 codes with labs; about 1,500 diagnosis "
                                       "categories: train with --labels prefix:ICD10CM//:3), written as MEDS "
                                       "(OUT/meds) chunk by chunk, no oracle.")] = "builtin",
) -> None:
    """Generate a synthetic cohort with known best-achievable (oracle) probabilities."""
    from ehrdx.data.synth import generate_cohort, generate_longitudinal, write_cohort, write_longitudinal

    check_out(out, {}, kind="dir")
    if shape not in ("builtin", "hospital"):
        raise EhrdxError("--shape must be builtin or hospital")
    if shape == "hospital":
        refuse_options(ctx, ("format", "table_format"), meant_for="the built-in cohort (--shape builtin)",
                       reading="the hospital shape, always as MEDS", verb="writes")
        _synth_hospital(out, patients, seed)
        return
    if table_format not in ("parquet", "csv"):
        raise EhrdxError("--table-format must be parquet or csv")
    if format not in ("events", "meds"):
        raise EhrdxError("--format must be events or meds")
    try:
        with console.status(f"generating {patients:,} patients"):
            if format == "meds":
                cohort = generate_longitudinal(patients, seed)
                paths = write_longitudinal(cohort, out)
            else:
                cohort = generate_cohort(patients, seed)
                paths = write_cohort(cohort, out, table_format)
    except (EhrdxError, ValueError) as exc:
        fail(exc)
    console.print(f"{patients:,} patients, {cohort.info['n_events']:,} events in {cohort.info['seconds']:.1f}s")
    if "n_table_rows" in cohort.info:  # the table is a snapshot: patients not in follow-up then are left out
        left = [f"{n:,} {why.replace('_', ' ')}" for why, n in cohort.info.get("excluded", {}).items() if n]
        console.print(f"patient table: {cohort.info['n_table_rows']:,} patients at the index date "
                      f"{cohort.info['index_date'][:10]}" + (f" (left out: {', '.join(left)})" if left else ""))
    for name, path in paths.items():
        console.print(f"  {name:9s} {escape(str(path))}")


def _synth_hospital(out: Path, patients: int, seed: int) -> None:
    from rich.progress import Progress

    from ehrdx.data.synth import write_hospital

    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("generating patients", total=patients)
            paths, info = write_hospital(patients, out, seed, on_chunk=lambda done, _: bar.update(task, completed=done))
    except (EhrdxError, ValueError) as exc:
        fail(exc)
    v = info["visits_per_patient"]
    console.print(f"{patients:,} patients, {info['n_visits']:,} visits (charting times; mean {v['mean']:.0f}, max "
                  f"{v['max']:,} per patient, in {info['encounters_per_patient']:.0f} stays or outpatient visits), "
                  f"{info['n_events']:,} events, {info['codes_used']:,} codes, "
                  f"{info['label_categories_used']:,} label categories in {info['seconds']:.1f}s")
    console.print(f"  labels    --labels {info['labels']}")
    for name, path in paths.items():
        console.print(f"  {name:9s} {escape(str(path))}")


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for the cohort, the model and metrics.json.")] = Path("demo_out"),
    patients: Annotated[int, typer.Option(help="Synthetic patients to generate.")] = 20_000,
    model: ModelKind = "gru",
    hidden: Hidden = 128,
    depth: Depth = 2,
    epochs: Epochs = 30,
    seed: Seed = 0,
    table: Annotated[bool, typer.Option("--table", help="Run the patient-table demo instead (one prediction per "
                                        "patient at an index date, MLP).")] = False,
    update: Annotated[bool, typer.Option("--update/--no-update", help="Also show a growing label list: train on "
                                         "the data as of 2020, then add the newer labels with ehrdx update.")] = True,
) -> None:
    """The whole thing on built-in synthetic data: generate a longitudinal cohort as MEDS, convert it to
    the event store, train a sequence model that predicts the diseases coded at the next visit at the end
    of every visit, evaluate on held-out patients (all labels and new onset) beside the gbm (gradient
    boosting on history features) and logistic baselines and the oracle, save the model and DIR/metrics.json. Then show a growing label list: a model trained on
    the data as of 2020 takes the labels that appeared later (U07.1, E11.2, E11.9) with ehrdx update."""
    opts: GlobalOptions = ctx.obj
    check_out(out, {}, kind="dir")
    if table:
        refuse_options(ctx, ("model",), meant_for="the event-stream demo", reading="a synthetic patient table")
        _demo_table(opts, out, patients, hidden, depth, epochs, seed)
        return
    refuse_options(ctx, ("depth",), meant_for="the patient-table demo (--table)",
                   reading="synthetic event streams")
    from ehrdx import demo as run
    from ehrdx.evaluate.report import print_events_report
    from ehrdx.events_pipeline import open_store

    start = time.perf_counter()
    with console.status(f"generating {patients:,} synthetic patients"):
        cohort, paths = run.event_cohort(patients, seed, out / "data")
    console.print(f"[bold]1. cohort[/bold]: {patients:,} patients, {cohort.info['n_visits']:,} visits, "
                  f"{cohort.info['n_events']:,} events as MEDS -> {escape(str(paths['meds']))}")
    st = open_store(meds=paths["meds"], store_dir=out / "store")
    console.print(f"[bold]2. store[/bold]: {st.meta['events']:,} events in flat memory-mapped arrays -> "
                  f"{escape(str(out / 'store'))}")
    splits = run.event_splits(st, paths, seed)
    console.print(f"[bold]3. task[/bold]: at the end of every visit, predict the {len(cohort.label_map)} "
                  f"diseases coded at the next visit; patients split train/tuning/held_out "
                  f"{len(splits[0]):,}/{len(splits[1]):,}/{len(splits[2]):,}")
    with EpochProgress(epochs, f"4. training {model}") as progress:
        clf, metrics = run.train_event_demo(
            st, splits, cohort, run.event_classifier(paths, model, hidden, epochs, seed), on_epoch=progress,
            on_baseline=lambda name: console.print(f"   fitting baseline {name}"))
    clf.save(out / "model")
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    opts.write_json(out / "metrics.json", metrics)
    print_events_report(console, opts.release(metrics), title="5. held-out test patients")
    for key, name in (("test", "all labels"), ("test_new_onset", "new onset")):
        t, o = metrics[key], metrics[key.replace("test", "oracle")]
        line = (f"{name}: macro AUROC {t['macro_auroc']:.3f} (oracle {o['macro_auroc']:.3f}), macro AUPRC "
                f"{t['macro_auprc']:.3f} (oracle {o['macro_auprc']:.3f}")
        for b, r in metrics["baselines"].items():
            line += f"; {b} {r[key]['macro_auprc']:.3f}"
        console.print(line + ")")
    changes = cohort.info["label_changes"]
    masked = metrics["test_samples"]["excluded"].get("label_entries_before_introduction_masked", 0)
    console.print(f"labels that change over time: {changes['new_disease']['code']} exists from "
                  f"{changes['new_disease']['from'][:10]}; {changes['code_split']['code']} is split into "
                  f"{', '.join(changes['code_split']['into'])} from {changes['code_split']['from'][:10]}. "
                  f"{masked:,} test entries whose window ends before their label existed are masked, not negatives.")
    report_path = write_html_report(clf, st, clf.samples(st, splits[2]), out / "report.html",
                                    f"ehrdx demo: {model}, next-visit task, held-out patients",
                                    min_cell=opts.min_cell)
    console.print("HTML report (curves, calibration, per label, by prior visits, sex and age): "
                  + escape(str(report_path)))
    if update:
        _demo_update(opts, out, paths, st, model, hidden, epochs, seed, metrics)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    opts.write_json(out / "metrics.json", metrics)
    console.print(escape(f"{metrics['wall_seconds']}s in all; model: {out / 'model'}   "
                         f"metrics: {out / 'metrics.json'}"))


def _demo_update(opts: GlobalOptions, out: Path, paths: dict, st, model: str, hidden: int, epochs: int, seed: int,
                 metrics: dict) -> None:
    """Growing the label list: a model trained on the data as of 2020-01-01 (before U07.1 and the E11
    split) takes the new labels from the data up to 2024 with ehrdx update."""
    from ehrdx import demo as run

    with EpochProgress(epochs, f"6. training {model} on the data as of {run.AS_OF}") as progress:
        old = run.model_as_of(paths, out / "store_2020", run.event_classifier(paths, model, hidden, epochs, seed),
                              seed, on_epoch=progress)
    old.save(out / "model_2020")
    with EpochProgress(run.UPDATE_EPOCHS, "7. ehrdx update with the data up to 2024") as progress:
        new, report = run.grow_labels(old, st, paths, seed, parent_dir=out / "model_2020", on_epoch=progress)
    new.save(out / "model_2024")
    opts.write_json(out / "model_2024" / "update_report.json", report)
    print_update(opts.release(report))
    metrics["update"] = {k: v for k, v in report.items() if k != "per_label"}
    console.print(escape(f"model as of 2020: {out / 'model_2020'}; updated: {out / 'model_2024'} "
                         "(see ehrdx update --help)"))


def _demo_table(opts: GlobalOptions, out: Path, patients: int, hidden: int, depth: int, epochs: int,
                seed: int) -> None:
    from ehrdx import demo as run
    from ehrdx.evaluate.report import print_report

    start = time.perf_counter()
    with console.status(f"generating {patients:,} synthetic patients"):
        cohort, table = run.table_cohort(patients, seed, out / "data")
    console.print(f"[bold]1. cohort[/bold]: {patients:,} patients, {cohort.info['n_events']:,} events "
                  f"-> {escape(str(out / 'data'))}")
    console.print(f"[bold]2. table[/bold]: snapshot at {cohort.info['index_date'][:10]}; diseases "
                  f"diagnosed in the following {cohort.info['label_window_days']} days are the labels")
    with EpochProgress(epochs, "3. training MLP") as progress:
        clf, metrics = run.train_table_demo(table, cohort, hidden, depth, epochs, seed, on_epoch=progress)
    clf.save(out / "model")
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    opts.write_json(out / "metrics.json", metrics)
    print_report(console, opts.release(metrics), title="4. held-out test patients")
    gap = metrics["oracle"]["macro_auroc"] - metrics["test"]["macro_auroc"]
    console.print(f"macro AUROC {metrics['test']['macro_auroc']:.3f} vs oracle {metrics['oracle']['macro_auroc']:.3f} "
                  f"(gap {gap:.3f}); {metrics['wall_seconds']}s in all")
    console.print(escape(f"model: {out / 'model'}   metrics: {out / 'metrics.json'}"))


