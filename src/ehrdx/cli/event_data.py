"""The options every command that reads event data shares (--meds, --events, --omop, how to read them,
--store), bundled: `@reads_events` adds them to a command, which receives one `EventData`, and refuses the
options that make sense for one kind of input only when the other kind is given."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from ehrdx.cli.inputs import event_inputs, resolve_input_settings, with_omop
from ehrdx.cli.options import EVENT_STREAMS, TABLE, refuse_options

# The EventData options that say how to read event streams (all but where the data is).
EVENT_READING = ("omop_codes", "omop_prefix", "visit_gap", "subject_col", "time_col", "code_col", "value_col",
                 "time_format", "until", "store")


@dataclass(frozen=True)
class EventsTable:
    """How to read a long events table (--events): its columns and time format."""

    subject_col: str | None = None
    time_col: str | None = None
    code_col: str | None = None
    value_col: str | None = None
    time_format: str | None = None


@dataclass(frozen=True)
class EventData:
    """The event data a command reads and how to read it, as given on the command line: the options the
    commands that read events share, bundled by `reads_events`. With a model, an option not given (None)
    means the model's own setting (ehrdx.input_settings), else the built-in default."""

    meds: Path | None = None
    events: Path | None = None
    omop: Path | None = None
    table: EventsTable = EventsTable()  # --subject-col ... --time-format
    omop_codes: str | None = None
    omop_prefix: str | None = None
    visit_gap: str | None = None
    until: str | None = None
    store: Path | None = None

    @property
    def given(self) -> bool:
        return self.meds is not None or self.events is not None or self.omop is not None

    @property
    def kind(self) -> str:
        """Which reader: meds, omop or events (as saved in a model's input.json)."""
        return "meds" if self.meds is not None else "omop" if self.omop is not None else "events"

    def paths(self, model: Path | None = None, **more) -> dict:
        """The paths read, named as the user gave them (for the output-path checks)."""
        return event_inputs(self.meds, self.events, self.omop, self.store, model, **more)

    def columns(self) -> dict:
        return dataclasses.asdict(self.table)

    def resolve(self, model_dir: Path, split_names: str | None = None):
        """How to read the events for the model in `model_dir`, and the events source (--events, or the --omop
        export read by its own reader): (settings, source)."""
        settings = self.settings(model_dir, split_names)
        return settings, self.source(settings)

    def settings(self, model_dir: Path, split_names: str | None = None) -> dict:
        """Options given win over the model's input.json, which wins over the defaults (notes printed)."""
        given = {"visit_gap": self.visit_gap, **self.columns(), "until": self.until, "omop_codes": self.omop_codes,
                 "omop_prefix": self.omop_prefix}
        if split_names is not None:
            given["split_names"] = split_names
        return resolve_input_settings(model_dir, **given)

    def source(self, settings: dict | None = None):
        """--events, or the --omop export read by its own reader in its place."""
        if settings is None:
            return with_omop(self.events, self.omop, self.omop_codes, self.omop_prefix)
        return with_omop(self.events, self.omop, settings["omop_codes"], settings["omop_prefix"])


TABLE_COLUMNS = [f.name for f in dataclasses.fields(EventsTable)]

# The EventData options: type, help, and the default without a model. With a model (`for_model`) every option
# defaults to None, which means the model's own setting, and the help says so after SAVED_DEFAULT_NOTE.
EVENT_DATA_OPTIONS = {
    "meds": (Path | None, "MEDS dataset directory (data/**/*.parquet, metadata/).", None),
    "events": (Path | None, "Long events table (CSV/Parquet): one row per event.", None),
    "omop": (Path | None, ("OMOP CDM 5.4 export directory (person, visit_occurrence, condition_occurrence, "
             "drug_exposure, measurement, observation, death, concept; CSV or Parquet)."), None),
    "omop_codes": (str, ("OMOP export: codes: source (vocabulary of the *_source_concept_id, e.g. ICD10CM//E11.9, "
                   "else PREFIX//source value) or concept (standard concepts)."), "source"),
    "omop_prefix": (str | None, ("OMOP export: code prefixes where the concept table gives none, e.g. "
                    "condition=ICD10CM,measurement=LOINC."), None),
    "visit_gap": (str, ("Event streams: events of a patient closer than this form one visit: 0 (same "
                  "timestamp), 6h, 1d ..."), "0"),
    "subject_col": (str, "Events table: patient id column.", "subject_id"),
    "time_col": (str, "Events table: time column.", "time"), "code_col": (str, "Events table: code column.", "code"),
    "value_col": (str, "Events table: numeric value column.", "numeric_value"),
    "time_format": (str | None, "Events table: strftime format of times (default ISO 8601).", None),
    "until": (str | None, ("Event streams: use only events up to this date (the data as it was then), e.g. "
              "2020-01-01."), None),
    "store": (Path | None, "Event streams: directory for the converted event store (default: temporary).", None),
}
SAVED_DEFAULT_NOTE = {  # with a model: what an option not given means
    "omop_codes": "the model's, else source", "visit_gap": "the model's, else 0",
    "subject_col": "the model's, else subject_id", "time_col": "the model's, else time",
    "code_col": "the model's, else code", "value_col": "the model's, else numeric_value",
    "time_format": "the model's, else ISO 8601", "until": "all events, even when the model was trained with --until",
}


def _event_data_options(for_model: bool) -> list[inspect.Parameter]:
    """The typer parameters behind EventData (see EVENT_DATA_OPTIONS)."""
    out = []
    for name, (kind, text, default) in EVENT_DATA_OPTIONS.items():
        if for_model and name in SAVED_DEFAULT_NOTE:
            kind, default = kind | None, None
            text = text.split(" (default")[0]
            text = f"{text if text.endswith('...') else text.removesuffix('.')} (default: {SAVED_DEFAULT_NOTE[name]})."
        option = typer.Option(f"--{name.replace('_', '-')}", help=text)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, option],
                                     default=default))
    return out


def reads_events(for_model: bool = True, table_only: tuple[str, ...] = (), events_only: tuple[str, ...] = ()):
    """Give a command the event-data options (--meds, --events, --omop, how to read them, --store) as one
    `event_data: EventData` argument, instead of listing the same thirteen options in every command; with a
    model (`for_model`), an option not given means the model's setting. The flags, their help and defaults are
    those the commands listed before.

    A command that also reads a patient table (its `data` argument) names the options that make sense for
    one kind only: `table_only` ones are refused when event data is given, `events_only` ones (and how to read
    the events) when a table is; the command takes a `typer.Context` for this."""

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != "event_data"]
        options = _event_data_options(for_model)
        names = [p.name for p in options]
        context = next((p.name for p in own if p.annotation is typer.Context), None)

        @functools.wraps(command)
        def run(**kwargs):
            given = {name: kwargs.pop(name) for name in names}
            table = EventsTable(**{name: given.pop(name) for name in TABLE_COLUMNS})
            event_data = EventData(**given, table=table)
            reads_a_table_too = bool(table_only or events_only)
            if reads_a_table_too and event_data.given:
                refuse_options(kwargs[context], table_only, meant_for=TABLE, reading=EVENT_STREAMS)
            elif reads_a_table_too and kwargs.get("data") is not None:
                refuse_options(kwargs[context], (*events_only, *EVENT_READING), meant_for=EVENT_STREAMS,
                               reading=TABLE)
            return command(**kwargs, event_data=event_data)

        if (table_only or events_only) and context is None:
            raise TypeError(f"{command.__name__}: refusing options needs a typer.Context parameter")
        run.__signature__ = signature.replace(parameters=own + options)
        run.__annotations__ = {}  # typer reads the signature above; the wrapped function's are strings
        return run

    return decorate
