"""ehrdx evaluate and ehrdx predict: a saved model on labelled data, or probabilities for new data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.event_data import EventData, reads_events
from ehrdx.cli.inputs import (
    DEFAULT_SPLIT,
    check_split,
    events_model_and_times,
    open_events,
    print_coverage,
    read_given_targets,
    read_times,
    require_events_model,
    require_positives,
    require_table_model,
    split_rows,
    times_in_split,
)
from ehrdx.cli.options import (
    Device,
    GlobalOptions,
    IdCol,
    SplitNames,
    TargetsOpt,
    check_out,
    console,
    fail,
    given_options,
    print_counts,
)
from ehrdx.cli.predict_meds_eval import predict_meds_eval, refuse_table_input
from ehrdx.errors import EhrdxError
from ehrdx.paths import TABLE_SUFFIXES
from ehrdx.tasks.chunks import PATIENTS_WITHOUT_SAMPLES
from ehrdx.tasks.positives import INTRODUCTION_MASKED

# Counts about the task's labels (windows, censoring, introduction dates): predictions carry no labels and
# every such sample still gets its row, so `predict` does not print them (they read as rows left out).
LABEL_ONLY_COUNTS = (INTRODUCTION_MASKED, "censored_samples", "samples_without_next_visit")


@app.command()
@reads_events(table_only=("id_col",), events_only=("split", "times", "targets", "split_names"))
def evaluate(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Argument(help="Labelled patient table with the training columns "
                                                "(or --meds / --events).")] = None,
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train.")] = Path("model_out"),
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here.")] = None,
    split: Annotated[str, typer.Option(help="Event streams: which patients: held_out (default; also 'test': the "
                                       "MEDS held_out split, else the seeded test split the model was trained "
                                       "with), tuning, train, or all.")] = DEFAULT_SPLIT,
    times: Annotated[Path | None, typer.Option(help="Event streams: prediction times file (subject_id, "
                                               "prediction_time), e.g. a MEDS label file.")] = None,
    targets: TargetsOpt = None,
    split_names: SplitNames = None,
    device: Device = "auto",
    id_col: IdCol = None,
    *,
    event_data: EventData,
) -> None:
    """Evaluate a saved model on labelled data: AUROC/AUPRC, F1, recall@k, calibration, per label; for
    event streams per prediction time, all labels and new onset, and by number of prior visits, on the
    held-out patients unless --split says otherwise."""
    meds, store = event_data.meds, event_data.store
    opts: GlobalOptions = ctx.obj
    check_out(out, {"patient table": data, **event_data.paths(model),
                     "prediction times (--times)": times, "targets (--targets)": targets})
    from ehrdx.evaluate.report import print_report

    if event_data.given:
        _check_split(split)  # a misspelt part is refused before the data is read, as by report
        settings, events = event_data.resolve(model, split_names)
        _evaluate_events(opts, model, meds, events, store, settings, split, times, out, targets, device)
        return
    if data is None:
        fail(EhrdxError("give a labelled patient table, or --meds DIR / --events FILE"))
    clf, table = _table_model_and_data(model, data, id_col, device)
    excluded = _table_exclusions(table)  # e.g. the columns the model does not use, as train says them
    result = {**clf.evaluate(table), **excluded}  # its summary's unseen values: said by print_report
    print_report(console, opts.release({"test": result, **excluded}), title=escape(str(data)), scope="this table")
    if out:
        opts.write_json(out, result)
        console.print(f"wrote {escape(str(out))}")


def _check_split(split: str) -> None:
    try:
        check_split(split)
    except EhrdxError as exc:
        fail(exc)


def _evaluate_events(opts: GlobalOptions, model_dir, meds, events, store, settings, split, times, out, targets=None,
                     device="cpu") -> None:
    import numpy as np

    import ehrdx
    from ehrdx.evaluate.report import print_events_report
    from ehrdx.events_pipeline import prediction_coverage
    from ehrdx.input_settings import columns_of
    from ehrdx.tasks.scan import label_code_notes

    try:
        clf = ehrdx.load(model_dir)
        require_events_model(clf, model_dir)
        clf.to(device)
        st = open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
        rows, scored = split_rows(st, meds, clf, settings, split)
        console.print(f"scoring {scored}")
        pt = times_in_split(read_times(times, st), rows, scored)
        given = read_given_targets(targets)
        samples = clf.samples(st, rows, times=pt, targets=given)
        require_positives(clf, samples, meds or events, scored, given)
        coverage = prediction_coverage(clf, st, samples, np.arange(len(st)) if rows is None else rows)
        result = clf.evaluate(st, samples=samples)
        # the targets come from the data's codes (unless given): codes the labels miss by case are said, as by train
        missed = label_code_notes(st, clf.selector_, rows, model=True) if given is None else {}
    except EhrdxError as exc:
        fail(exc)
    metrics = {"model": clf.model_name_, "split": split, "test": result["all"], "test_new_onset": result["new_onset"],
               "test_by_prior_visits": result["by_prior_visits"],
               "test_samples": {k: result[k] for k in ("samples", "patients", "excluded")}, "excluded": st.counts,
               **({"excluded_names": st.names} if st.names else {}), **({"warnings": st.warnings} if st.warnings else {}),
               **missed}
    print_events_report(console, opts.release(metrics), title=escape(f"{meds or events}: {scored}"))
    for note in missed.values():
        console.print(f"[yellow]{escape(note['note'])}[/yellow]")
    print_coverage(coverage)  # codes the model never saw read as the unknown code, as predict says it
    if out:
        opts.write_json(out, metrics)
        console.print(f"wrote {escape(str(out))}")


def _table_model_and_data(model: Path, data: Path, id_col: str | None, device: str):
    """The patient-table model saved in `model`, on `device`, and `data` read with its training columns."""
    import ehrdx

    clf = ehrdx.load(model)
    require_table_model(clf, model, data)
    clf.to(device)
    return clf, _read_for_model(clf, data, id_col)


def _read_for_model(clf, data: Path, id_col: str | None):
    """A patient table read with the columns a table model was trained on; `id_col` names its id column."""
    import dataclasses

    from ehrdx.data.table import read_table

    if clf.source_kind_ != "table":
        return data  # an event model: the classifier's own checks say what to give
    schema = clf.encoder_.schema
    if id_col:
        schema = dataclasses.replace(schema, id_column=id_col)
    return read_table(data, schema=schema, require_labels=False, fixed_schema=True)


def _table_exclusions(table) -> dict:
    """What reading the table left out (e.g. the columns the model does not use), as train's metrics.json
    keeps it: `excluded` counts, `excluded_names` what they count."""
    return {"excluded": dict(table.notes), **({"excluded_names": dict(table.names)} if table.names else {})}


def _report_summary(summary: dict) -> None:
    for kind, n in summary.get("unknown", {}).items():
        console.print(f"[yellow]{n:,} {escape(kind.replace(':', ' '))} value(s) not seen in training "
                      f"were mapped to the unknown bucket[/yellow]")
    for label, n in summary.get("labels_not_in_model", {}).items():
        console.print(f"[yellow]label '{escape(label)}' ({n:,} patients) is not in the model's vocabulary: "
                      "left out[/yellow]")


@app.command()
@reads_events(table_only=("id_col",), events_only=("times", "split", "targets"))
def predict(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Argument(help="Patient table with the training columns (labels not "
                                                "needed), or --meds / --events.")] = None,
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train.")] = Path("model_out"),
    out: Annotated[Path, typer.Option(help="Output file, .csv or .parquet; a directory for --format "
                                      "meds-eval.")] = Path("predictions.csv"),
    format: Annotated[str, typer.Option("--format", help="table: one row per patient or prediction time, a "
                                        "p_<label> column per label (.csv/.parquet by --out's suffix). meds-eval: "
                                        "event streams, a directory with one MEDS prediction file per label "
                                        "(subject_id, prediction_time, boolean_value, predicted_boolean_value, "
                                        "predicted_boolean_probability) for meds-evaluation to score, and "
                                        "labels.json; only times whose label is known.")] = "table",
    threshold: Annotated[float | None, typer.Option(help="One threshold for all labels (default: tuned per label).")] = None,
    times: Annotated[Path | None, typer.Option(help="Event streams: prediction times file (subject_id, "
                                               "prediction_time); default: the end of every visit.")] = None,
    split: Annotated[str, typer.Option(help="Event streams: which patients: all (default), held_out (also "
                                       "'test'; what ehrdx evaluate scores), tuning or train.")] = "all",
    targets: Annotated[Path | None, typer.Option(help="Event streams, --format meds-eval: the true labels, given "
                                                 "as for evaluate --targets (default: the model's task "
                                                 "windows).")] = None,
    device: Device = "auto",
    id_col: IdCol = None,
    *,
    event_data: EventData,
) -> None:
    """Predict every disease's probability: one row per patient (tables) or per (patient, prediction
    time) (event streams), with one probability column per disease (p_<label>) and the predicted set;
    or, with --format meds-eval, labelled predictions per label in the MEDS prediction schema."""
    meds, store = event_data.meds, event_data.store
    if format not in ("table", "meds-eval"):
        fail(EhrdxError(f"--format {format} is not a format\n  fix: give table (the default) or meds-eval"))
    meds_eval = format == "meds-eval"
    if meds_eval and "--out" not in given_options(ctx, ["out"]):
        fail(EhrdxError("--format meds-eval writes a directory\n  fix: name it with --out DIR"))
    if targets is not None and not meds_eval:
        fail(EhrdxError("--targets gives true labels, which only --format meds-eval writes\n  fix: leave "
                        "--targets out, or add --format meds-eval --out DIR"))
    check_out(out, {"patient table": data, **event_data.paths(model), "prediction times (--times)": times,
                    "targets (--targets)": targets},
              kind="dir" if meds_eval else "file", suffixes=None if meds_eval else TABLE_SUFFIXES)
    if threshold is not None and not 0 <= threshold <= 1:
        fail(EhrdxError(f"--threshold {threshold} is not a probability\n  fix: give a number from 0 to 1, or "
                         "leave it out to use the thresholds tuned per label"))
    if event_data.given:
        _check_split(split)
    if meds_eval:
        if not event_data.given:
            refuse_table_input(data)
        from ehrdx.evaluate.meds_eval import check_meds_eval_dir

        try:
            check_meds_eval_dir(out)
        except EhrdxError as exc:
            fail(exc)
        settings, events = event_data.resolve(model)
        predict_meds_eval(model, meds, events, store, settings, split, times, targets, out, threshold, device)
        return
    if event_data.given:
        settings, events = event_data.resolve(model)
        _predict_events(model, meds, events, store, settings, times, out, threshold, device, split)
        return
    if data is None:
        fail(EhrdxError("give a patient table, or --meds DIR / --events FILE"))
    import numpy as np
    import polars as pl

    clf, table = _table_model_and_data(model, data, id_col, device)
    t0 = time.perf_counter()
    proba = clf.predict_proba(table)
    seconds = time.perf_counter() - t0
    thr = clf.thresholds_ if threshold is None else np.full(proba.shape[1], threshold)
    labels = clf.labels_
    pred = proba >= thr[None, :]
    frame = pl.DataFrame({table.schema.id_column: table.id_series(),
                          **{f"p_{lab}": proba[:, j] for j, lab in enumerate(labels)}})
    predicted = [[labels[j] for j in np.flatnonzero(row)] for row in pred]
    if out.suffix.lower() == ".parquet":
        frame = frame.with_columns(pl.Series("predicted", predicted, dtype=pl.List(pl.Utf8)))
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(out)
    else:
        frame = frame.with_columns(pl.Series("predicted", [";".join(p) for p in predicted]))
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.write_csv(out)
    console.print(f"predicted {len(table):,} patients x {len(labels)} labels in {seconds:.2f}s -> {escape(str(out))}")
    _report_summary(clf.last_prediction_summary_)
    print_counts(table.notes, table.names)  # as train says them: the columns the model does not use


def _predict_events(model_dir, meds, events, store, settings, times, out, threshold, device="cpu",
                    split="all") -> None:
    import numpy as np
    import polars as pl

    from ehrdx.events_pipeline import prediction_coverage

    try:
        clf, st, rows, _scored, pt = events_model_and_times(model_dir, meds, events, store, settings, times, split,
                                                           device)
        t0 = time.perf_counter()
        samples = clf.samples(st, rows, times=pt, require_labels=False)
        proba = clf.predict_samples(st, samples)
        seconds = time.perf_counter() - t0
        chosen = (np.arange(len(st)) if rows is None else rows) if pt is None else pt[0]
        coverage = prediction_coverage(clf, st, samples, chosen)
    except EhrdxError as exc:
        fail(exc)
    labels = clf.labels_
    thr = clf.thresholds_ if threshold is None else np.full(proba.shape[1], threshold)
    pred = proba >= thr[None, :]
    frame = pl.DataFrame({
        "subject_id": st.original_ids(np.asarray(st.subject_ids)[samples.row]),  # as in the events
        "prediction_time": pl.Series(samples.time * 1_000_000).cast(pl.Datetime("us")),
        "prior_visits": samples.n_visits,
        **{f"p_{lab}": proba[:, j] for j, lab in enumerate(labels)},
    })
    predicted = [[labels[j] for j in np.flatnonzero(row)] for row in pred]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        frame.with_columns(pl.Series("predicted", predicted, dtype=pl.List(pl.Utf8))).write_parquet(out)
    else:
        frame.with_columns(pl.Series("predicted", [";".join(p) for p in predicted])).write_csv(out)
    rate = len(samples) / max(seconds, 1e-9)
    console.print(f"predicted {len(samples):,} (patient, time) rows x {len(labels)} labels in {seconds:.2f}s "
                  f"({rate:,.0f} rows/s) -> {escape(str(out))}")
    counts = dict(samples.counts)
    counts.pop(PATIENTS_WITHOUT_SAMPLES, None)  # said by cause: the line below and print_coverage's
    early = counts.pop("prediction_times_before_first_visit", 0)
    if early:  # the patient has visits, just none yet
        console.print(f"[yellow]{early:,} prediction time(s) before the patient's first visit: nothing to predict "
                      "from, no row in the output[/yellow]")
    print_counts({k: n for k, n in counts.items() if not k.startswith(LABEL_ONLY_COUNTS)})
    print_coverage(coverage)
