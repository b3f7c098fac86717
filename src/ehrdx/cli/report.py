"""ehrdx report and ehrdx explain: the HTML evaluation report, and why a model predicts what it does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.event_data import EventData, reads_events
from ehrdx.cli.inputs import (
    DEFAULT_SPLIT,
    check_split,
    no_event_data,
    open_events,
    read_times,
    require_events_model,
    require_positives,
    split_rows,
    subject_row,
    times_in_split,
)
from ehrdx.cli.options import (
    Device,
    GlobalOptions,
    SplitNames,
    check_out,
    console,
    split_list,
)
from ehrdx.errors import EhrdxError, identifiers_shown
from ehrdx.explain import explained_model
from ehrdx.report import explain_latest, write_html_report


@app.command()
@reads_events()
def report(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train or ehrdx update.")] = Path("model_out"),
    out: Annotated[Path, typer.Option(help="The HTML file to write (self-contained, figures embedded).")] = Path(
        "report.html"),
    split: Annotated[str, typer.Option(help="Which patients: held_out (default; also 'test': the MEDS held_out "
                                       "split, else the seeded test split the model was trained with, as ehrdx "
                                       "evaluate), tuning, train, or all.")] = DEFAULT_SPLIT,
    times: Annotated[Path | None, typer.Option(help="Prediction times file (subject_id, prediction_time).")] = None,
    title: Annotated[str | None, typer.Option(help="Report title.")] = None,
    explain_patients: Annotated[str | None, typer.Option(help="Comma-separated subject ids whose latest "
                                                         "prediction the report explains (ehrdx explain).")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Resamplings of the patients behind each label's 95% "
                                           "interval of AUROC and AUPRC (0: no intervals).")] = 200,
    split_names: SplitNames = None,
    device: Device = "auto",
    *,
    event_data: EventData,
) -> None:
    """Write one HTML evaluation report: cohort summary, ROC/PR curves, calibration, recall@k, a sortable
    per-label table, results by prior visits, sex and age band, training curves, and old-vs-new labels
    after an update. Cells from fewer than --min-cell patients are suppressed; no patient id is written."""
    meds, store = event_data.meds, event_data.store
    opts: GlobalOptions = ctx.obj
    check_out(out, {**event_data.paths(model), "prediction times (--times)": times})
    import ehrdx
    from ehrdx.input_settings import columns_of

    if not event_data.given:
        raise no_event_data(model, "report")
    check_split(split)
    settings, events = event_data.resolve(model, split_names)
    clf = ehrdx.load(model)
    require_events_model(clf, model, "report")
    if explain_patients:  # refused before the events are read (slow on big data)
        explained_model(clf)
    clf.to(device)
    st = open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
    rows, scored = split_rows(st, meds, clf, settings, split)
    console.print(f"scoring {scored}")
    pt = times_in_split(read_times(times, st), rows, scored)
    samples = clf.samples(st, rows, times=pt)
    require_positives(clf, samples, meds or events, scored)
    with console.status("predicting and drawing"):
        examples = explain_latest(clf, st, [subject_row(st, sid, "--explain-patients")
                                            for sid in split_list(explain_patients)],
                                  identifiers_shown())
        path = write_html_report(clf, st, samples, out, title or f"ehrdx report: {model} on {meds or events} "
                                 f"({split} patients)", model, examples,
                                 min_cell=opts.min_cell, bootstrap_draws=bootstrap)
    console.print(f"report: {escape(str(path))}")


@app.command()
@reads_events()
def explain(
    ctx: typer.Context,
    patient: Annotated[str, typer.Option(help="The patient's subject id, as written in the data.")],
    model: Annotated[Path, typer.Option(help="Model directory (gru, lstm or transformer).")] = Path("model_out"),
    time_: Annotated[str | None, typer.Option("--time", help="Explain the prediction at the last prediction time "
                                              "at or before this (ISO date or time); default: the latest.")] = None,
    labels: Annotated[str | None, typer.Option(help="Comma-separated labels to explain (default: the top "
                                               "predicted).")] = None,
    top: Annotated[int, typer.Option(min=1, help="How many top predicted labels to explain.")] = 3,
    top_events: Annotated[int, typer.Option(min=1, help="Events shown per label, largest attribution first.")] = 8,
    out: Annotated[Path | None, typer.Option(help="Also write the explanation as JSON here.")] = None,
    *,
    event_data: EventData,
) -> None:
    """Why the model predicts what it does for one patient: for the top predicted diseases, the past
    events (codes, values, visits) that drove each score, by integrated gradients over the events' inputs;
    an event's attributions over all labels add up to (score with the events - score without them)."""
    meds, store = event_data.meds, event_data.store
    opts: GlobalOptions = ctx.obj
    check_out(out, event_data.paths(model))
    from datetime import UTC, datetime

    import numpy as np
    from rich.table import Table

    import ehrdx
    from ehrdx.errors import DataError, identifiers_shown
    from ehrdx.events_pipeline import parse_until
    from ehrdx.explain import VALUE_DIGITS, explain_sample, without_exact_dates_and_values
    from ehrdx.input_settings import columns_of
    from ehrdx.tasks.task import after_death

    if not event_data.given:
        raise no_event_data(model, "explain")
    settings, events = event_data.resolve(model)
    clf = ehrdx.load(model)
    require_events_model(clf, model, "explain")
    # what can be refused without the events is, before they are read (slow on big data)
    explained_model(clf, split_list(labels) or None)
    limit = parse_until(time_, "--time") if time_ else None
    st = open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
    row = subject_row(st, patient, "--patient")
    if limit is not None and after_death(st, np.array([row]), np.array([limit]))[0]:  # as predict --times
        raise DataError("a time after the patient's death (MEDS_DEATH): no prediction is made after death",
                        column="--time", fix="give a time at or before the patient's death")
    samples = clf.samples(st, np.array([row]), require_labels=False)
    if len(samples) == 0:
        raise EhrdxError("this patient has no prediction time (no complete visit)")
    index = len(samples) - 1
    if limit is not None:
        before = np.flatnonzero(samples.time <= limit)
        if len(before) == 0:
            raise EhrdxError(f"the patient has no prediction time at or before {time_}")
        index = int(before[-1])
    result = explain_sample(clf, st, samples, index, top_labels=top, top_events=top_events,
                            labels=split_list(labels) or None)
    exact = identifiers_shown()  # exact dates and values only with ehrdx --show-ids (README: Privacy)
    if not exact:
        result = without_exact_dates_and_values(result)
    when = f"at {datetime.fromtimestamp(result['prediction_time'], UTC).strftime('%Y-%m-%d %H:%M')}, " if exact else ""
    console.print(f"prediction {when}after {result['prior_visits']} visit(s), from {result['events_read']} events"
                  + (f"; explained: {escape(result['model'])}" if result['model'] != clf.model_name_ else ""))
    if not exact:
        console.print(f"event times are days from the prediction time and values have {VALUE_DIGITS} significant "
                      "digits (ehrdx --show-ids shows exact dates and values)")
    if result["events_with_unseen_codes"]:  # as predict says it: these events all read as one unknown code
        console.print(f"[yellow]{result['events_with_unseen_codes']:,} of the {result['events_read']:,} events read "
                      "have a code not seen in training: each is read as the unknown code, and its attribution is "
                      "that code's[/yellow]")
    described = clf.label_vocab_.descriptions()  # as train's per-label table names them
    for lab in result["labels"]:
        name = lab["label"] + (f" ({described[lab['label']]})" if described.get(lab["label"]) else "")
        t = Table(title=f"{escape(name)}: p = {lab['probability']:.3f} (logit {lab['logit']:.2f}; "
                        f"{lab['logit_without_events']:.2f} without any event)")
        for col in ("visit", "date" if exact else "days", "code", "value", "attribution"):
            t.add_column(col, justify="left" if col in ("date", "code") else "right")
        for ev in lab["events"]:
            t.add_row(str(ev["visit"]), datetime.fromtimestamp(ev["time"], UTC).strftime("%Y-%m-%d") if exact
                      else f"{ev['days_from_prediction']} d", escape(ev["code"]),
                      "" if ev["value"] is None else f"{ev['value']:.4g}", f"{ev['attribution']:+.3f}")
        console.print(t)
    if out:
        opts.write_json(out, result)
        console.print(f"wrote {escape(str(out))}")


