"""Reading the event data a command is given: --meds / --events / --omop into the event store, the input
settings saved with a model, the patients of one split, and checks that a model is of the kind the command
needs."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from ehrdx.cli.options import (
    STORE_ROLE,
    console,
    fail,
    print_counts,
    print_warnings,
)
from ehrdx.errors import EhrdxError, ident


def event_inputs(meds=None, events=None, omop=None, store=None, model=None, **more) -> dict:
    """The paths a command reads, named as the user gave them."""
    return {"model directory (--model)": model, "MEDS dataset (--meds)": meds, "events table (--events)": events,
            "OMOP export (--omop)": omop, STORE_ROLE: store, **more}


def with_omop(events, omop, codes, prefixes):
    """An OMOP export travels where an events table would (it is read by its own reader)."""
    if omop is None:
        return events
    if events is not None:
        fail(EhrdxError("give either --events or --omop, not both"))
    from ehrdx.data.omop import OmopSource

    try:
        return OmopSource.parse(omop, codes, prefixes)
    except EhrdxError as exc:
        fail(exc)


def resolve_input_settings(model_dir: Path, **given) -> dict:
    """How to read the events for this model: options given on the command line win; otherwise the
    settings saved with the model (input.json), else the built-in defaults. Differences are noted."""

    from ehrdx.input_settings import read_input_settings, resolve

    try:
        settings, notes = resolve(read_input_settings(model_dir), given)
    except EhrdxError as exc:
        fail(exc)
    for note in notes:
        console.print(f"[yellow]note: {escape(note)}[/yellow]")
    return settings


# The parts --split names: held_out is MEDS's name of the held-out part (the default of evaluate and report); test
# its older spelling, still taken
SPLIT_PARTS = {"train": 0, "tuning": 1, "validation": 1, "test": 2, "held_out": 2}
DEFAULT_SPLIT = "held_out"


def check_split(split: str) -> None:
    """Refuse a --split that names no part (before any data is read)."""
    if split != "all" and split not in SPLIT_PARTS:
        raise EhrdxError(f"--split must be held_out (or test), tuning, train or all, not '{split}'")


def split_rows(st, meds, clf, settings: dict, split: str):
    """Store rows of one part of the training split (MEDS subject_splits, else the seeded split the model
    was trained with), or None for all patients; and a description for headers."""
    from ehrdx.events_pipeline import patient_splits

    check_split(split)
    if split == "all":
        return None, "all patients"
    every = patient_splits(st, meds, clf.seed, settings["split_fractions"], clf.selector_,
                           split_names=settings["split_names"], rule=clf.split_rule_)  # the model's own parts
    rows = every[SPLIT_PARTS[split]]
    if meds is not None and (Path(meds) / "metadata" / "subject_splits.parquet").exists():
        how = "MEDS subject_splits"
    else:
        how = f"the seeded split of training, seed {clf.seed}"
    if len(rows) == 0:  # scoring no patient would print and write metrics of nothing (f1 0.0) as a result
        named = list(zip(("train", "tuning", "held_out"), every))
        sizes = ", ".join(f"{name} {len(part):,}" for name, part in named)
        others = " or ".join(f"--split {name}" for name, part in named if len(part))
        raise EhrdxError(f"the {split} part has no patient ({how}: {sizes}): nothing to score\n  fix: --split all "
                         f"scores every patient" + (f", or name a part that has patients: {others}" if others else ""))
    return rows, f"{split} patients ({len(rows):,}, {how})"


def read_times(times, st):
    """The --times file's (store rows, seconds), or None without one; what reading it changed is said."""
    from ehrdx.evaluate.report import count_lines
    from ehrdx.tasks.task import read_prediction_times

    if not times:
        return None
    counts: dict[str, int] = {}
    pt = read_prediction_times(times, st, counts)
    for line in count_lines(counts, part=str(times)):  # e.g. fractions of a second cut: the output's times
        console.print(f"[yellow]{escape(line)}[/yellow]")
    return pt


def read_given_targets(targets):
    """The --targets table or task folder, or None without one; what reading it changed is said (as --times)."""
    from ehrdx.evaluate.report import count_lines
    from ehrdx.tasks.targets import read_targets

    if not targets:
        return None
    given = read_targets(targets)
    for line in count_lines(given.counts, part=str(targets)):  # e.g. fractions of a second cut
        console.print(f"[yellow]{escape(line)}[/yellow]")
    return given


def times_in_split(pt, rows, scored: str):
    """Prediction times of the chosen patients only; those of other patients are counted, not scored."""
    import numpy as np

    if pt is None or rows is None:
        return pt
    keep = np.isin(pt[0], rows)
    if len(keep) and not keep.any():  # scoring nothing would write metrics of 0 samples (f1 0.0) as a result
        raise EhrdxError(f"none of the {len(keep):,} prediction time(s) given is of a patient among the {scored}: "
                         "nothing to score\n  fix: --split all scores them (or name the part they belong to: --split "
                         "train or tuning)")
    if (~keep).any():
        console.print(f"[yellow]{int((~keep).sum()):,} prediction time(s) of patients not among the {scored}: "
                      "left out (--split all scores them)[/yellow]")
    return pt[0][keep], pt[1][keep]


def the(scored: str) -> str:
    """`scored` (split_rows' description) after "of": "the test patients (...)", but "all patients"."""
    return scored if scored == "all patients" else f"the {scored}"


def require_positives(clf, samples, data, scored: str, targets=None) -> None:
    """Refuse to score prediction times none of which has a label recorded: every metric would be of nothing
    (AUROC undefined, F1 0), as when the data codes its diagnoses otherwise than the model's labels select."""
    from ehrdx.data.bits import label_counts

    if len(samples) == 0 or label_counts(samples.y_bits, samples.mask_bits)[0].any():
        return
    fix = ("check that --targets names the model's labels (ehrdx targets writes them)" if targets is not None else
           f"check that the data codes diagnoses as the model's labels select them: ehrdx targets --labels "
           f"{clf.selector_.spec} shows what that selection finds in it")
    raise EhrdxError(f"{data}: none of the model's {len(clf.labels_):,} labels is recorded at any of the {len(samples):,} "
                     f"prediction times of {the(scored)}: there is nothing to evaluate\n  fix: {fix}")


def print_coverage(coverage: dict) -> None:
    """Say what a prediction run could not use as-is (ehrdx.events_pipeline.prediction_coverage)."""
    if coverage.get("patients_without_prediction_time"):
        console.print(f"[yellow]{coverage['patients_without_prediction_time']:,} patient(s) with no prediction "
                      "time (no visit, e.g. only MEDS_BIRTH or other static facts): no row in the output[/yellow]")
    unseen = coverage.get("events_with_unseen_codes", 0)
    if unseen:
        console.print(f"[yellow]{unseen:,} event(s) with {coverage['unseen_codes']:,} "
                      "code(s) not seen in training were read as the unknown code[/yellow]")
    if unseen and unseen == coverage["events_read"]:  # likely another coding
        console.print("[yellow]no event read has a code the model saw in training: its probabilities here rest on no "
                      "code it knows; check that the data is coded as the training data was (the same vocabularies "
                      "and prefixes, e.g. DX//E11)[/yellow]")


def open_events(meds, events, store, visit_gap, columns=None, until=None, workers=1):
    from ehrdx.data.omop import OmopSource
    from ehrdx.data.store import EventStore
    from ehrdx.events_pipeline import convert_cooperatively, open_store
    from ehrdx.tasks.task import parse_duration
    from ehrdx.train.distributed import all_or_none, is_distributed, is_main

    shared = store is not None and is_distributed()
    gap = parse_duration(visit_gap)
    with console.status("converting events to the store"):
        if shared and meds is not None:  # each process converts its own MEDS shards; rank 0 merges
            import torch.distributed as dist

            st = convert_cooperatively(meds, store, dist.get_rank(), dist.get_world_size(), all_or_none, gap, until)
        elif shared:  # one events table or OMOP export: one process converts, the others open its store
            with all_or_none("converting the events into the store"):  # its error stops them all
                if is_main():
                    st = (open_store(omop=events, store_dir=store, visit_gap_seconds=gap, until=until)
                          if isinstance(events, OmopSource) else
                          open_store(events=events, store_dir=store, visit_gap_seconds=gap, columns=columns,
                                     until=until))
            if not is_main():
                st = EventStore(store)
        elif isinstance(events, OmopSource):
            st = open_store(omop=events, store_dir=store, visit_gap_seconds=gap, until=until)
        else:
            st = open_store(meds=meds, events=events, store_dir=store, visit_gap_seconds=gap, columns=columns,
                            until=until, workers=workers)
    m = st.meta
    console.print(f"event store: {m['patients']:,} patients, {m['events']:,} events, {m['visits']:,} visits, "
                  f"{m['codes']:,} codes" + (f" (opened from {escape(str(store))}: converted before from the same "
                                             "files and settings)" if getattr(st, "reused", False) else ""))
    print_counts(st.counts, st.names)
    print_warnings(st.warnings)
    return st


def subject_row(st, subject: str, option: str) -> int:
    """The store row of a subject id given on the command line, written as in the data (007 is not 7)."""
    from ehrdx.errors import DataError

    try:
        return st.row_of(int(st.store_ids([subject], option)[0]))
    except DataError:
        raise EhrdxError(f"{option}: subject {ident(subject)} is not in the event data (ids are matched as "
                         "written there: 007 is not 7)") from None


def require_events_model(clf, model_dir, command: str | None = None) -> None:
    if clf.source_kind_ != "events":
        if command == "update":
            raise EhrdxError(f"{model_dir} is a patient-table model: ehrdx update grows event-stream models "
                             "(--meds/--events/--omop); for a patient table, retrain with ehrdx train")
        if command:
            raise EhrdxError(f"{model_dir} is a patient-table model: ehrdx {command} works on event-stream models "
                             "(for a patient table, ehrdx evaluate prints and writes every metric)")
        raise EhrdxError(f"{model_dir} is a patient-table model: give a patient table, not --meds/--events")


def no_event_data(model_dir: Path, command: str) -> EhrdxError:
    """The error for `command` run without event data: a patient-table model is said to be one (asking for
    --meds would lead nowhere), else the event data are asked for."""
    try:
        family = json.loads((Path(model_dir) / "config.json").read_text()).get("family", "table")
    except (OSError, ValueError, AttributeError):
        family = None  # no readable model: the data are asked for first, the model is read after
    if family == "table":
        return EhrdxError(f"{model_dir} is a patient-table model: ehrdx {command} works on event-stream models "
                          "(for a patient table, ehrdx evaluate prints and writes every metric)")
    return EhrdxError("give the data: --meds DIR, --events FILE or --omop DIR")


def require_table_model(clf, model_dir, data) -> None:
    if clf.source_kind_ != "table":
        raise EhrdxError(f"{model_dir} is an event-stream model ({clf.model_name_}), and {data} was given as a patient "
                         "table: an event model reads event streams, not one row per patient\n  fix: give the "
                         "event data with --meds DIR, --events FILE or --omop DIR instead of the table, or use a "
                         "model trained on a patient table")


def events_model_and_times(model_dir, meds, events, store, settings: dict, times, split: str, device: str = "cpu"):
    """The event model saved in `model_dir` (on `device`), its events read as it was trained on them, the
    rows of the chosen `split` with a description of them, and the given prediction times in that split:
    (clf, store, rows, scored, times)."""
    import ehrdx
    from ehrdx.input_settings import columns_of

    clf = ehrdx.load(model_dir)
    require_events_model(clf, model_dir)
    clf.to(device)
    st = open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
    rows, scored = split_rows(st, meds, clf, settings, split)
    pt = times_in_split(read_times(times, st), rows, scored)
    return clf, st, rows, scored, pt
