"""ehrdx targets: the multi-label targets of a task, written for use elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.event_data import EventData, reads_events
from ehrdx.cli.inputs import (
    open_events,
)
from ehrdx.cli.options import (
    Censor,
    InferIntroduced,
    Labels,
    NewOnset,
    Task,
    check_out,
    console,
    fail,
    print_counts,
)
from ehrdx.errors import EhrdxError
from ehrdx.paths import TABLE_SUFFIXES, label_map_path


@app.command()
@reads_events(for_model=False)
def targets(
    out: Annotated[Path, typer.Option(help="A .parquet/.csv long table, or a directory for --format meds.")],
    task: Task = "next-visit",
    new_onset: NewOnset = False,
    censor: Censor = True,
    labels: Labels = "prefix:DX//",
    format: Annotated[str, typer.Option("--format", help="long (one table) or meds (a MEDS task directory "
                                        "per label, sharing prediction times).")] = "long",
    infer_introduced: InferIntroduced = False,
    *,
    event_data: EventData,
) -> None:
    """Write the multi-label targets of a task (prediction times, labels, masks) for use elsewhere, or
    to edit and give back to `train --targets`."""
    meds, store = event_data.meds, event_data.store
    if format not in ("long", "meds"):
        fail(EhrdxError("--format must be long or meds"))
    check_out(out, {**event_data.paths(), "label map (--labels)": label_map_path(labels)},
               kind="file" if format == "long" else "dir", suffixes=TABLE_SUFFIXES if format == "long" else None)
    events = event_data.source()
    from ehrdx.events_pipeline import task_targets
    from ehrdx.tasks.scan import label_code_notes
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.tasks.targets import write_long, write_meds_tasks
    from ehrdx.tasks.task import TaskSpec

    spec, selector = TaskSpec.parse(task, new_onset, censor), LabelSelector.parse(labels)
    st = open_events(meds, events, store, event_data.visit_gap, event_data.columns(), event_data.until)
    t, samples = task_targets(st, spec, selector, infer_introduced)
    path = write_long(t, out) if format == "long" else write_meds_tasks(t, out)
    console.print(f"{len(t):,} prediction times x {len(t.labels)} labels -> {escape(str(path))}")
    print_counts(samples.counts)
    for missed in label_code_notes(st, selector).values():
        console.print(f"[yellow]{escape(missed['note'])}[/yellow]")


