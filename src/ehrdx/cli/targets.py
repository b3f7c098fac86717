"""ehrdx targets: the multi-label targets of a task, written for use elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.inputs import (
    event_inputs,
    open_events,
    with_omop,
)
from ehrdx.cli.options import (
    Censor,
    CodeCol,
    Events,
    InferIntroduced,
    Labels,
    Meds,
    NewOnset,
    Omop,
    OmopCodes,
    OmopPrefix,
    StoreDir,
    SubjectCol,
    Task,
    TimeCol,
    TimeFormat,
    UntilGiven,
    ValueCol,
    VisitGap,
    check_out,
    console,
    fail,
)
from ehrdx.errors import EhrdxError
from ehrdx.paths import TABLE_SUFFIXES, label_map_path


@app.command()
def targets(
    out: Annotated[Path, typer.Option(help="A .parquet/.csv long table, or a directory for --format meds.")],
    meds: Meds = None,
    events: Events = None,
    omop: Omop = None,
    omop_codes: OmopCodes = "source",
    omop_prefix: OmopPrefix = None,
    task: Task = "next-visit",
    new_onset: NewOnset = False,
    censor: Censor = True,
    labels: Labels = "prefix:DX//",
    format: Annotated[str, typer.Option("--format", help="long (one table) or meds (a MEDS task directory "
                                        "per label, sharing prediction times).")] = "long",
    infer_introduced: InferIntroduced = False,
    visit_gap: VisitGap = "0",
    subject_col: SubjectCol = "subject_id",
    time_col: TimeCol = "time",
    code_col: CodeCol = "code",
    value_col: ValueCol = "numeric_value",
    time_format: TimeFormat = None,
    until: UntilGiven = None,
    store: StoreDir = None,
) -> None:
    """Write the multi-label targets of a task (prediction times, labels, masks) for use elsewhere, or
    to edit and give back to `train --targets`."""
    if format not in ("long", "meds"):
        fail(EhrdxError("--format must be long or meds"))
    check_out(out, {**event_inputs(meds, events, omop, store), "label map (--labels)": label_map_path(labels)},
               kind="file" if format == "long" else "dir", suffixes=TABLE_SUFFIXES if format == "long" else None)
    events = with_omop(events, omop, omop_codes, omop_prefix)
    import numpy as np

    from ehrdx.tasks.labels import LabelVocab
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.tasks.targets import targets_from_samples, write_long, write_meds_tasks
    from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times

    try:
        spec, selector = TaskSpec.parse(task, new_onset, censor), LabelSelector.parse(labels)
        st = open_events(meds, events, store, visit_gap, {"subject_col": subject_col, "time_col": time_col,
                                                           "code_col": code_col, "value_col": value_col,
                                                           "time_format": time_format}, until)
        rows = np.arange(len(st))
        vocab = LabelVocab.from_first_times(label_first_times(st, rows, selector), selector.info, infer_introduced)
        samples = build_samples(st, rows, spec, code_label_index(st, selector, vocab), len(vocab),
                                introduced=vocab.introduced_seconds(), introduced_from=vocab.introduced_from())
        t = targets_from_samples(st, samples, vocab.labels, spec.new_onset)
        path = write_long(t, out) if format == "long" else write_meds_tasks(t, out)
    except EhrdxError as exc:
        fail(exc)
    console.print(f"{len(t):,} prediction times x {len(t.labels)} labels -> {escape(str(path))}")
    for what, n in samples.counts.items():
        console.print(f"[yellow]{escape(what.replace('_', ' '))}: {n:,}[/yellow]")


