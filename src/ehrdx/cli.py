"""Command-line interface: ehrdx demo | synth | train | evaluate | predict | update | targets | report | explain."""

from __future__ import annotations

import errno
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ehrdx.errors import EhrdxError, ident
from ehrdx.paths import TABLE_SUFFIXES, check_output, label_map_path


class _Commands(TyperGroup):
    """The safety net under every command: an ehrdx error or a file system error (a disk that fills up, a
    permission that changes mid-run) that no command caught ends as a one-paragraph error, exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EhrdxError as exc:
            _fail(exc)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # a closed pipe (ehrdx ... | head) is typer's to handle
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(EhrdxError(f"{where}{exc.strerror or exc} (while reading or writing this path)\n  fix: check "
                             "that the path exists, is the kind expected (file or directory), has space and "
                             "permissions"))


app = typer.Typer(
    help="ehrdx: predict which diseases a patient has or will be diagnosed with, from their EHR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
)
console = Console()
if not console.is_terminal:  # piped or captured output: wide enough for the per-label table
    console = Console(width=120)
err = Console(stderr=True)


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _fail(exc: Exception) -> None:
    # Messages quote paths, labels and codes: `[/bold]` or `[red]x` in them must print as written.
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _check_out(out: Path | None, inputs: dict, kind: str = "file", suffixes: tuple[str, ...] | None = None,
               option: str = "--out") -> None:
    """Stop before any work when `out` would overwrite an input or cannot be written (ehrdx.paths)."""
    try:
        check_output(out, inputs, kind=kind, option=option, suffixes=suffixes)
    except EhrdxError as exc:
        _fail(exc)


def _event_inputs(meds=None, events=None, omop=None, store=None, model=None, **more) -> dict:
    """The paths a command reads, named as the user gave them."""
    return {"model directory (--model)": model, "MEDS dataset (--meds)": meds, "events table (--events)": events,
            "OMOP export (--omop)": omop, "event store (--store)": store, **more}


_MIN_CELL = 10  # set by the --min-cell option of the ehrdx command


def _release(obj: dict) -> dict:
    """What leaves the process (terminal, metrics files): small cells suppressed."""
    from ehrdx.evaluate.privacy import suppress_small_cells

    return suppress_small_cells(obj, _MIN_CELL) if isinstance(obj, dict) else obj


@app.callback()
def _options(
    show_ids: Annotated[bool, typer.Option("--show-ids", help="Show patient ids and raw cell values in error "
                                           "messages (hidden by default: logs travel further than data).")] = False,
    min_cell: Annotated[int, typer.Option(help="Suppress report cells (per-label counts and metrics, rows by "
                                          "prior visits) built from fewer than this many patients; 0 turns it "
                                          "off.")] = 10,
) -> None:
    """ehrdx: predict which diseases a patient has or will be diagnosed with, from their EHR."""
    global _MIN_CELL
    from ehrdx.errors import show_identifiers

    if show_ids:
        show_identifiers(True)
    _MIN_CELL = min_cell


def _write_json(path: Path, obj: dict) -> None:
    obj = _release(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))


class _EpochProgress:
    """A rich progress bar over epochs, showing train and validation loss."""

    def __init__(self, total: int, description: str = "training") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from ehrdx.train.distributed import is_main

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), console=err,
                                 transient=False, disable=not is_main())
        self.task = self.progress.add_task(description, total=total, losses="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        losses = f"train {train_loss:.4f}" + (f"  val {val_loss:.4f}" if val_loss is not None else "")
        self.progress.update(self.task, completed=epoch + 1, losses=losses)


CHECKPOINT_DIR = "checkpoint"


def _note_resume(history, resume: bool) -> None:
    if history is not None and history.resumed_after_epoch is not None:
        console.print(f"resumed from the checkpoint after epoch {history.resumed_after_epoch}")
    elif resume:
        console.print("[yellow]--resume: no checkpoint found, trained from the start[/yellow]")


def _save_trained(clf, metrics: dict, out: Path, resume: bool) -> None:
    """Rank 0 saves the model and metrics.json, then drops the training checkpoint (no longer needed)."""
    import shutil

    from ehrdx.train.distributed import is_main

    _note_resume(clf.history_, resume)
    if is_main():
        clf.save(out)
        _write_json(out / "metrics.json", metrics)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def _make_classifier(**params):
    from ehrdx.api import EHRClassifier

    return EHRClassifier(**params)


# Options shared by train and demo.
Hidden = Annotated[int, typer.Option(help="Width of each hidden layer.")]
Depth = Annotated[int, typer.Option(help="Number of hidden layers.")]
Dropout = Annotated[float, typer.Option(help="Dropout probability in hidden layers.")]
WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay.")]
Lr = Annotated[float, typer.Option(help="Learning rate.")]
Epochs = Annotated[int, typer.Option(help="Maximum epochs; early stopping on validation loss may end sooner.")]
Patience = Annotated[int | None, typer.Option(help="Epochs without validation improvement before stopping "
                                              "(default 4 for tables, 3 for event streams).")]
BatchSize = Annotated[int | None, typer.Option(help="Patients per training batch (default 256 for tables, 64 "
                                               "for event streams, where a patient brings all their visits).")]
Layers = Annotated[int | None, typer.Option(help="Recurrent or Transformer layers (default 1; 2 for transformer).")]
Heads = Annotated[int, typer.Option(help="Attention heads (transformer).")]
Meds = Annotated[Path | None, typer.Option(help="MEDS dataset directory (data/**/*.parquet, metadata/).")]
Omop = Annotated[Path | None, typer.Option(help="OMOP CDM 5.4 export directory (person, visit_occurrence, "
                                           "condition_occurrence, drug_exposure, measurement, observation, death, "
                                           "concept; CSV or Parquet).")]
OmopCodes = Annotated[str, typer.Option(help="OMOP codes: source (vocabulary of the *_source_concept_id, e.g. "
                                        "ICD10CM//E11.9, else PREFIX//source value) or concept (standard concepts).")]
OmopPrefix = Annotated[str | None, typer.Option(help="OMOP code prefixes where the concept table gives none, e.g. "
                                                "condition=ICD10CM,measurement=LOINC.")]
Events = Annotated[Path | None, typer.Option(help="Long events table (CSV/Parquet): one row per event.")]
Task = Annotated[str, typer.Option(help="next-visit, or window:<N><unit> for (t, t+N], e.g. window:365d.")]
NewOnset = Annotated[bool, typer.Option("--new-onset", help="Train on new onsets only: a label already recorded "
                                        "before the prediction time is masked, not a negative.")]
Censor = Annotated[bool, typer.Option("--censor/--no-censor", help="Mask labels that did not occur when follow-up "
                                      "ends before the window does (default), or count them as negatives.")]
Labels = Annotated[str, typer.Option(help="Which codes are labels: prefix:PREFIX[:N chars], regex:PATTERN or "
                                     "map:FILE (.csv code,label / .json / .yaml).")]
ModelKind = Annotated[str, typer.Option(help="gru, lstm, transformer, or the count baselines mlp, logistic.")]
Baselines = Annotated[str | None, typer.Option(help="Also fit these count baselines and report them beside "
                                               "the model, e.g. mlp,logistic.")]
VisitGap = Annotated[str, typer.Option(help="Events of a patient closer than this form one visit: 0 (same "
                                       "timestamp), 6h, 1d ...")]
TargetsOpt = Annotated[Path | None, typer.Option(help="Given multi-label targets instead of the task's windows: a "
                                              "long table (subject_id, prediction_time, label, value) or a "
                                              "directory of per-label MEDS task directories.")]
StoreDir = Annotated[Path | None, typer.Option(help="Directory for the converted event store (default: temporary).")]
SubjectCol = Annotated[str, typer.Option(help="Events table: patient id column.")]
TimeCol = Annotated[str, typer.Option(help="Events table: time column.")]
CodeCol = Annotated[str, typer.Option(help="Events table: code column.")]
ValueCol = Annotated[str, typer.Option(help="Events table: numeric value column.")]
TimeFormat = Annotated[str | None, typer.Option(help="Events table: strftime format of times (default ISO 8601).")]
IdCol = Annotated[str | None, typer.Option(help="Patient table: the patient id column (default: the one the "
                                         "model was trained with, else the first of patient_id, subject_id, "
                                         "person_id, patient, id). Ids are kept as given: 007 is not 7.")]
# The same input options on commands that take a model: not given (None) means the model's own setting
# (ehrdx.input_settings), else the built-in default.
VisitGapGiven = Annotated[str | None, typer.Option(help="Events of a patient closer than this form one visit: 0, "
                                                   "6h, 1d ... (default: the model's, else 0).")]
SubjectColGiven = Annotated[str | None, typer.Option(help="Events table: patient id column (default: the model's, "
                                                     "else subject_id).")]
TimeColGiven = Annotated[str | None, typer.Option(help="Events table: time column (default: the model's, else time).")]
CodeColGiven = Annotated[str | None, typer.Option(help="Events table: code column (default: the model's, else code).")]
ValueColGiven = Annotated[str | None, typer.Option(help="Events table: numeric value column (default: the model's, "
                                                   "else numeric_value).")]
TimeFormatGiven = Annotated[str | None, typer.Option("--time-format", help="Events table: strftime format of times "
                                                     "(default: the model's, else ISO 8601).")]
OmopCodesGiven = Annotated[str | None, typer.Option("--omop-codes", help="OMOP codes: source or concept (default: "
                                                    "the model's, else source).")]
SplitNames = Annotated[str | None, typer.Option(help="MEDS subject_splits names other than train/tuning/held_out, "
                                                "mapped to those: e.g. test=held_out,val=tuning (default: the "
                                                "model's mapping). Any other name is an error.")]
UntilGiven = Annotated[str | None, typer.Option(help="Use only events up to this date, e.g. 2020-01-01 (default: "
                                                "all events, even when the model was trained with --until).")]
InferIntroduced = Annotated[bool, typer.Option(
    "--infer-introduced", help="Event streams: a label without an introduced_at (label map, --add LABEL=DATE) "
    "is taken to start at its first record in the training patients, and samples whose window ends before "
    "it are masked. Off by default: a label is taken to have existed all along.")]
PosWeight = Annotated[bool, typer.Option(help="Up-weight positives of rare labels in the loss.")]
Seed = Annotated[int, typer.Option(help="Random seed: the same seed gives the same run on the same machine.")]
Workers = Annotated[int, typer.Option(help="Processes that convert a sharded MEDS dataset into the store, each "
                                     "its own shards (under torchrun with --store, every process converts its own).")]
Device = Annotated[str, typer.Option(help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N.")]
Precision = Annotated[str, typer.Option(help="Training arithmetic: auto (float32: faster than bf16 for these "
                                        "model sizes, see BENCHMARKS.md), fp32, or bf16 autocast.")]


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Directory to write the cohort into.")],
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 20_000,
    seed: Seed = 0,
    table_format: Annotated[str, typer.Option(help="Patient table format: parquet or csv.")] = "parquet",
    format: Annotated[str, typer.Option("--format", help="'meds': the longitudinal cohort as a MEDS dataset "
                                        "(OUT/meds) with the next-visit oracle at every visit end and a label "
                                        "map; 'events': the index-date cohort (events.parquet + patient "
                                        "table + oracle).")] = "events",
) -> None:
    """Generate a synthetic cohort with known best-achievable (oracle) probabilities."""
    from ehrdx.data.synth import generate_cohort, write_cohort
    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal

    _check_out(out, {}, kind="dir")
    if table_format not in ("parquet", "csv"):
        _fail(EhrdxError("--table-format must be parquet or csv"))
    if format not in ("events", "meds"):
        _fail(EhrdxError("--format must be events or meds"))
    try:
        with console.status(f"generating {patients:,} patients"):
            if format == "meds":
                cohort = generate_longitudinal(patients, seed)
                paths = write_longitudinal(cohort, out)
            else:
                cohort = generate_cohort(patients, seed)
                paths = write_cohort(cohort, out, table_format)
    except (EhrdxError, ValueError) as exc:
        _fail(exc)
    console.print(f"{patients:,} patients, {cohort.info['n_events']:,} events in {cohort.info['seconds']:.1f}s")
    for name, path in paths.items():
        console.print(f"  {name:9s} {escape(str(path))}")


@app.command()
def train(
    data: Annotated[Path | None, typer.Argument(help="Patient table (.csv or .parquet), one row per patient; "
                                                "or give --meds / --events for event streams.")] = None,
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = Path("model_out"),
    meds: Meds = None,
    events: Events = None,
    omop: Omop = None,
    omop_codes: OmopCodes = "source",
    omop_prefix: OmopPrefix = None,
    task: Task = "next-visit",
    new_onset: NewOnset = False,
    censor: Censor = True,
    labels: Labels = "prefix:DX//",
    model: ModelKind = "gru",
    baselines: Baselines = None,
    targets: TargetsOpt = None,
    until: Annotated[str | None, typer.Option(help="Event streams: use only events up to this date (the data "
                                              "as it was then), e.g. 2020-01-01.")] = None,
    visit_gap: VisitGap = "0",
    store: StoreDir = None,
    subject_col: SubjectCol = "subject_id",
    time_col: TimeCol = "time",
    code_col: CodeCol = "code",
    value_col: ValueCol = "numeric_value",
    time_format: TimeFormat = None,
    split_names: SplitNames = None,
    id_col: Annotated[str | None, typer.Option(help="Patient id column (inferred if not given).")] = None,
    label_col: Annotated[str | None, typer.Option(help="Column with each patient's disease list.")] = None,
    numeric: Annotated[str | None, typer.Option(help="Comma-separated numeric columns.")] = None,
    categorical: Annotated[str | None, typer.Option(help="Comma-separated categorical columns.")] = None,
    codes: Annotated[str | None, typer.Option(help="Comma-separated code-list columns.")] = None,
    ignore: Annotated[str | None, typer.Option(help="Comma-separated columns to ignore.")] = None,
    oracle: Annotated[Path | None, typer.Option(help="Oracle probabilities (from ehrdx synth) to compare with.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of patients for validation.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of patients for the test set.")] = 0.15,
    cv: Annotated[int, typer.Option(help="Run K-fold cross-validation by patient instead (0 = off; tables).")] = 0,
    hidden: Hidden = 128,
    depth: Depth = 2,
    layers: Layers = None,
    heads: Heads = 4,
    dropout: Dropout = 0.1,
    weight_decay: WeightDecay = 1e-4,
    lr: Lr = 2e-3,
    epochs: Epochs = 30,
    patience: Patience = None,
    batch_size: BatchSize = None,
    pos_weight: PosWeight = False,
    infer_introduced: InferIntroduced = False,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last complete "
                                         "epoch (checkpoints are kept in OUT/checkpoint until the model is "
                                         "saved); the same data and options are required.")] = False,
) -> None:
    """Train a model: split by patient into train/validation/test, fit on train, stop early and tune
    thresholds on validation, evaluate on test, save the model directory with metrics.json.

    Patient table: one prediction per patient (MLP). With --cv K, K-fold mean and spread instead.
    Event streams (--meds or --events): a prediction at every prediction time (end of each visit) with a
    GRU, LSTM, causal Transformer, or the count baselines (mlp, logistic).

    Under torchrun (torchrun --nproc_per_node=N -m ehrdx train ...) it trains data parallel: gloo on
    CPUs, NCCL on GPUs; only rank 0 writes the model and prints."""
    source = "meds" if meds is not None else "omop" if omop is not None else "events"
    _check_out(out, {"patient table": data, **_event_inputs(meds, events, omop, store), "targets (--targets)": targets,
                     "oracle (--oracle)": oracle, "label map (--labels)": label_map_path(labels)}, kind="dir")
    events = _with_omop(events, omop, omop_codes, omop_prefix)
    import polars as pl

    from ehrdx.train.distributed import init_distributed, is_main

    try:
        device = init_distributed(device)
    except EhrdxError as exc:
        _fail(exc)
    if not is_main():
        console.quiet = True

    if meds is not None or events is not None:
        if data is not None:
            _fail(EhrdxError("give either a patient table or --meds/--events, not both"))
        _train_events(meds=meds, events=events, out=out, task=task, new_onset=new_onset, censor=censor,
                      labels=labels, model=model, baselines=baselines, visit_gap=visit_gap, store=store,
                      targets=targets, until=until, split_names=split_names,
                      columns={"subject_col": subject_col, "time_col": time_col, "code_col": code_col,
                               "value_col": value_col, "time_format": time_format},
                      source=(source, omop_codes, omop_prefix),
                      oracle=oracle, fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction),
                      resume=resume, workers=workers,
                      params={"hidden": hidden, "layers": layers, "heads": heads, "dropout": dropout,
                              "weight_decay": weight_decay, "lr": lr, "max_epochs": epochs,
                              "patience": patience or 3, "batch_size": batch_size or 64,
                              "pos_weight": pos_weight, "seed": seed, "device": device, "precision": precision,
                              "infer_introduced": infer_introduced})
        return
    if data is None:
        _fail(EhrdxError("give a patient table, or --meds DIR / --events FILE for event streams"))
    if infer_introduced:
        _fail(EhrdxError("--infer-introduced is for event streams (--meds/--events): a patient table has one "
                         "prediction per patient and no event times"))

    from ehrdx.data.table import TableSchema, read_table
    from ehrdx.evaluate.report import print_report
    from ehrdx.pipeline import cross_validate, train_and_evaluate

    schema = TableSchema(id_column=id_col, label_column=label_col, numeric=_split_list(numeric),
                         categorical=_split_list(categorical), codes=_split_list(codes), ignore=_split_list(ignore))
    params = {"hidden": hidden, "depth": depth, "dropout": dropout, "weight_decay": weight_decay, "lr": lr,
              "max_epochs": epochs, "patience": patience or 4, "batch_size": batch_size or 256,
              "pos_weight": pos_weight, "seed": seed, "device": device, "precision": precision}
    try:
        table = read_table(data, schema=schema)
        sch = table.schema
        console.print(escape(f"read {len(table):,} patients from {data}; roles: id={sch.id_column}, "
                             f"labels={sch.label_column}, numeric={sch.numeric}, categorical={sch.categorical}, "
                             f"codes={sch.codes}"))
        if table.schema.identifier_like:
            console.print(f"[yellow]left out as identifier-like (values almost unique per patient, see README): "
                          f"{len(table.schema.identifier_like)} column(s): "
                          f"{escape(', '.join(table.schema.identifier_like))}[/yellow]", highlight=False)
        if cv:
            result = cross_validate(
                table, lambda: _make_classifier(**params), cv, seed=seed, val_fraction=val_fraction,
                on_fold=lambda f, m: console.print(f"fold {f + 1}/{cv}: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in m.items() if v is not None)))
            for key, s in result["summary"].items():
                if s["mean"] is not None:
                    spread = f" ± {s['std']:.3f}" if s["std"] is not None else ""
                    console.print(f"  {key:12s} {s['mean']:.3f}{spread}")
            if is_main():
                _write_json(out / "cv_metrics.json", result)
            console.print(f"wrote {escape(str(out / 'cv_metrics.json'))}")
            return
        oracle_frame = pl.read_parquet(oracle, glob=False) if oracle else None
        fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        with _EpochProgress(epochs) as progress:
            clf, metrics = train_and_evaluate(table, _make_classifier(**params), fractions=fractions,
                                              seed=seed, oracle=oracle_frame, on_epoch=progress,
                                              checkpoint=out / CHECKPOINT_DIR, resume=resume)
        _save_trained(clf, metrics, out, resume)
    except EhrdxError as exc:
        _fail(exc)
    print_report(console, _release(metrics))
    console.print(f"model saved to {escape(str(out))}")


@app.command()
def evaluate(
    data: Annotated[Path | None, typer.Argument(help="Labelled patient table with the training columns "
                                                "(or --meds / --events).")] = None,
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train.")] = Path("model_out"),
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here.")] = None,
    meds: Meds = None,
    events: Events = None,
    omop: Omop = None,
    omop_codes: OmopCodesGiven = None,
    omop_prefix: OmopPrefix = None,
    split: Annotated[str, typer.Option(help="Event streams: which patients: held_out (default; also 'test': the "
                                       "MEDS held_out split, else the seeded test split the model was trained "
                                       "with), tuning, train, or all.")] = "held_out",
    times: Annotated[Path | None, typer.Option(help="Event streams: prediction times file (subject_id, "
                                               "prediction_time), e.g. a MEDS label file.")] = None,
    targets: TargetsOpt = None,
    visit_gap: VisitGapGiven = None,
    subject_col: SubjectColGiven = None,
    time_col: TimeColGiven = None,
    code_col: CodeColGiven = None,
    value_col: ValueColGiven = None,
    time_format: TimeFormatGiven = None,
    split_names: SplitNames = None,
    until: UntilGiven = None,
    store: StoreDir = None,
    device: Device = "auto",
    id_col: IdCol = None,
) -> None:
    """Evaluate a saved model on labelled data: AUROC/AUPRC, F1, recall@k, calibration, per label; for
    event streams per prediction time, all labels and new onset, and by number of prior visits, on the
    held-out patients unless --split says otherwise."""
    _check_out(out, {"patient table": data, **_event_inputs(meds, events, omop, store, model),
                     "prediction times (--times)": times, "targets (--targets)": targets})
    import ehrdx
    from ehrdx.evaluate.report import print_report

    if meds is not None or events is not None or omop is not None:
        settings = _input_settings(model, visit_gap=visit_gap, subject_col=subject_col, time_col=time_col,
                                   code_col=code_col, value_col=value_col, time_format=time_format,
                                   split_names=split_names, until=until, omop_codes=omop_codes,
                                   omop_prefix=omop_prefix)
        events = _with_omop(events, omop, settings["omop_codes"], settings["omop_prefix"])
        _evaluate_events(model, meds, events, store, settings, split, times, out, targets, device)
        return
    if data is None:
        _fail(EhrdxError("give a labelled patient table, or --meds DIR / --events FILE"))
    try:
        clf = ehrdx.load(model)
        _require_table_model(clf, model, data)
        clf.to(device)
        result = clf.evaluate(_read_for_model(clf, data, id_col))
    except EhrdxError as exc:
        _fail(exc)
    _report_summary(result.get("summary", {}))
    print_report(console, _release({"test": result}), title=escape(str(data)))
    if out:
        _write_json(out, result)
        console.print(f"wrote {escape(str(out))}")


def _read_for_model(clf, data: Path, id_col: str | None):
    """A patient table read with the columns a table model was trained on; `id_col` names its id column."""
    import dataclasses

    from ehrdx.data.table import read_table

    if not hasattr(clf, "preprocessor_"):
        return data  # an event model: the classifier's own checks say what to give
    schema = clf.preprocessor_.schema
    if id_col:
        schema = dataclasses.replace(schema, id_column=id_col)
    return read_table(data, schema=schema, require_labels=False, fixed_schema=True)


def _report_summary(summary: dict) -> None:
    for kind, n in summary.get("unknown", {}).items():
        console.print(f"[yellow]{n:,} {escape(kind.replace(':', ' '))} value(s) not seen in training "
                      f"were mapped to the unknown bucket[/yellow]")
    for label, n in summary.get("labels_not_in_model", {}).items():
        console.print(f"[yellow]label '{escape(label)}' ({n:,} patients) is not in the model's vocabulary: "
                      "left out[/yellow]")


@app.command()
def predict(
    data: Annotated[Path | None, typer.Argument(help="Patient table with the training columns (labels not "
                                                "needed), or --meds / --events.")] = None,
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train.")] = Path("model_out"),
    out: Annotated[Path, typer.Option(help="Output file, .csv or .parquet.")] = Path("predictions.csv"),
    threshold: Annotated[float | None, typer.Option(help="One threshold for all labels (default: tuned per label).")] = None,
    meds: Meds = None,
    events: Events = None,
    omop: Omop = None,
    omop_codes: OmopCodesGiven = None,
    omop_prefix: OmopPrefix = None,
    times: Annotated[Path | None, typer.Option(help="Event streams: prediction times file (subject_id, "
                                               "prediction_time); default: the end of every visit.")] = None,
    visit_gap: VisitGapGiven = None,
    subject_col: SubjectColGiven = None,
    time_col: TimeColGiven = None,
    code_col: CodeColGiven = None,
    value_col: ValueColGiven = None,
    time_format: TimeFormatGiven = None,
    until: UntilGiven = None,
    store: StoreDir = None,
    device: Device = "auto",
    id_col: IdCol = None,
) -> None:
    """Predict every disease's probability: one row per patient (tables) or per (patient, prediction
    time) (event streams), with one probability column per disease (p_<label>) and the predicted set."""
    _check_out(out, {"patient table": data, **_event_inputs(meds, events, omop, store, model),
                     "prediction times (--times)": times}, suffixes=TABLE_SUFFIXES)
    if threshold is not None and not 0 <= threshold <= 1:
        _fail(EhrdxError(f"--threshold {threshold} is not a probability\n  fix: give a number from 0 to 1, or "
                         "leave it out to use the thresholds tuned per label"))
    if meds is not None or events is not None or omop is not None:
        settings = _input_settings(model, visit_gap=visit_gap, subject_col=subject_col, time_col=time_col,
                                   code_col=code_col, value_col=value_col, time_format=time_format, until=until,
                                   omop_codes=omop_codes, omop_prefix=omop_prefix)
        events = _with_omop(events, omop, settings["omop_codes"], settings["omop_prefix"])
        _predict_events(model, meds, events, store, settings, times, out, threshold, device)
        return
    if data is None:
        _fail(EhrdxError("give a patient table, or --meds DIR / --events FILE"))
    import numpy as np
    import polars as pl

    import ehrdx

    try:
        clf = ehrdx.load(model)
        _require_table_model(clf, model, data)
        clf.to(device)
        table = _read_for_model(clf, data, id_col)
        t0 = time.perf_counter()
        proba = clf.predict_proba(table)
        seconds = time.perf_counter() - t0
    except EhrdxError as exc:
        _fail(exc)
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


@app.command()
def report(
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train or ehrdx update.")] = Path("model_out"),
    out: Annotated[Path, typer.Option(help="The HTML file to write (self-contained, figures embedded).")] = Path(
        "report.html"),
    meds: Meds = None,
    events: Events = None,
    omop: Omop = None,
    omop_codes: OmopCodesGiven = None,
    omop_prefix: OmopPrefix = None,
    split: Annotated[str, typer.Option(help="Which patients: test (the held-out part of the training split: MEDS "
                                       "held_out, else the same seeded split), tuning, train, or all.")] = "test",
    times: Annotated[Path | None, typer.Option(help="Prediction times file (subject_id, prediction_time).")] = None,
    title: Annotated[str | None, typer.Option(help="Report title.")] = None,
    explain_patients: Annotated[str | None, typer.Option(help="Comma-separated subject ids whose latest "
                                                         "prediction the report explains (ehrdx explain).")] = None,
    visit_gap: VisitGapGiven = None,
    subject_col: SubjectColGiven = None,
    time_col: TimeColGiven = None,
    code_col: CodeColGiven = None,
    value_col: ValueColGiven = None,
    time_format: TimeFormatGiven = None,
    split_names: SplitNames = None,
    until: UntilGiven = None,
    store: StoreDir = None,
    device: Device = "auto",
) -> None:
    """Write one HTML evaluation report: cohort summary, ROC/PR curves, calibration, recall@k, a sortable
    per-label table, results by prior visits, sex and age band, training curves, and old-vs-new labels
    after an update. Cells from fewer than --min-cell patients are suppressed; no patient id is written."""
    _check_out(out, {**_event_inputs(meds, events, omop, store, model), "prediction times (--times)": times})
    import ehrdx
    from ehrdx.input_settings import columns_of
    from ehrdx.tasks.task import read_prediction_times

    if meds is None and events is None and omop is None:
        _fail(EhrdxError("give the data: --meds DIR, --events FILE or --omop DIR"))
    if split not in ("all", "train", "tuning", "validation", "test", "held_out"):
        _fail(EhrdxError("--split must be test, tuning, train or all"))
    settings = _input_settings(model, visit_gap=visit_gap, subject_col=subject_col, time_col=time_col,
                               code_col=code_col, value_col=value_col, time_format=time_format,
                               split_names=split_names, until=until, omop_codes=omop_codes, omop_prefix=omop_prefix)
    events = _with_omop(events, omop, settings["omop_codes"], settings["omop_prefix"])
    try:
        clf = ehrdx.load(model)
        _require_events_model(clf, model, "report")
        clf.to(device)
        st = _open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
        rows, scored = _split_rows(st, meds, clf, settings, split)
        console.print(f"scoring {scored}")
        pt = _times_in_split(read_prediction_times(times, st) if times else None, rows, scored)
        with console.status("predicting and drawing"):
            samples = clf.samples(st, rows, times=pt)
            examples = _explanations(clf, st, _split_list(explain_patients))
            path = write_html_report(clf, st, samples, out, title or f"ehrdx report: {model} on {meds or events} "
                                     f"({split} patients)", model, examples)
    except EhrdxError as exc:
        _fail(exc)
    console.print(f"report: {escape(str(path))}")


def _explanations(clf, st, subject_ids: list[str]) -> list[dict]:
    import numpy as np

    from ehrdx.errors import identifiers_shown
    from ehrdx.explain import explain_sample, without_exact_dates_and_values

    out = []
    for sid in subject_ids:
        row = _subject_row(st, sid, "--explain-patients")
        s = clf.samples(st, np.array([row]), require_labels=False)
        if len(s):
            out.append(explain_sample(clf, st, s, len(s) - 1, top_labels=2, top_events=6))
    return out if identifiers_shown() else [without_exact_dates_and_values(e) for e in out]


def _subject_row(st, subject: str, option: str) -> int:
    """The store row of a subject id given on the command line, written as in the data (007 is not 7)."""
    from ehrdx.errors import DataError

    try:
        return st.row_of(int(st.store_ids([subject], option)[0]))
    except DataError:
        raise EhrdxError(f"{option}: subject {ident(subject)} is not in the event data (ids are matched as "
                         "written there: 007 is not 7)") from None


def write_html_report(clf, st, samples, out: Path, title: str, model_dir: Path | None = None,
                      explanations: list[dict] | None = None) -> Path:
    """Predict `samples` with `clf` and write the HTML report to `out` (atomically)."""
    from ehrdx.evaluate.html import build_report
    from ehrdx.io import atomic_write_bytes

    proba = clf.predict_samples(st, samples)
    update_report = None
    if model_dir is not None and (Path(model_dir) / "update_report.json").exists():
        update_report = json.loads((Path(model_dir) / "update_report.json").read_text())
    history = clf.history_.to_artifact() if getattr(clf, "history_", None) is not None else None
    info = {"model": clf.model, "task": clf.task.name, "label selection": clf.selector.spec}
    page = build_report(title=title, samples=samples, proba=proba, labels=clf.labels_, thresholds=clf.thresholds_,
                        store=st, history=history, update_report=update_report, model_info=info,
                        excluded=st.counts, min_cell=_MIN_CELL, explanations=explanations,
                        descriptions=clf.label_vocab_.descriptions())
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode())
    return out


@app.command()
def explain(
    patient: Annotated[str, typer.Option(help="The patient's subject id, as written in the data.")],
    model: Annotated[Path, typer.Option(help="Model directory (gru, lstm or transformer).")] = Path("model_out"),
    meds: Meds = None,
    events: Events = None,
    omop: Omop = None,
    omop_codes: OmopCodesGiven = None,
    omop_prefix: OmopPrefix = None,
    time_: Annotated[str | None, typer.Option("--time", help="Explain the prediction at the last prediction time "
                                              "at or before this (ISO date or time); default: the latest.")] = None,
    labels: Annotated[str | None, typer.Option(help="Comma-separated labels to explain (default: the top "
                                               "predicted).")] = None,
    top: Annotated[int, typer.Option(help="How many top predicted labels to explain.")] = 3,
    top_events: Annotated[int, typer.Option(help="Events shown per label, largest attribution first.")] = 8,
    out: Annotated[Path | None, typer.Option(help="Also write the explanation as JSON here.")] = None,
    visit_gap: VisitGapGiven = None,
    subject_col: SubjectColGiven = None,
    time_col: TimeColGiven = None,
    code_col: CodeColGiven = None,
    value_col: ValueColGiven = None,
    time_format: TimeFormatGiven = None,
    until: UntilGiven = None,
    store: StoreDir = None,
) -> None:
    """Why the model predicts what it does for one patient: for the top predicted diseases, the past
    events (codes, values, visits) that drove each score, by integrated gradients over the events' inputs;
    an event's attributions over all labels add up to (score with the events - score without them)."""
    _check_out(out, _event_inputs(meds, events, omop, store, model))
    from datetime import UTC, datetime

    import numpy as np
    from rich.table import Table

    import ehrdx
    from ehrdx.errors import identifiers_shown
    from ehrdx.explain import VALUE_DIGITS, explain_sample, without_exact_dates_and_values
    from ehrdx.input_settings import columns_of

    if meds is None and events is None and omop is None:
        _fail(EhrdxError("give the data: --meds DIR, --events FILE or --omop DIR"))
    settings = _input_settings(model, visit_gap=visit_gap, subject_col=subject_col, time_col=time_col,
                               code_col=code_col, value_col=value_col, time_format=time_format, until=until,
                               omop_codes=omop_codes, omop_prefix=omop_prefix)
    events = _with_omop(events, omop, settings["omop_codes"], settings["omop_prefix"])
    try:
        clf = ehrdx.load(model)
        _require_events_model(clf, model, "explain")
        st = _open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
        row = _subject_row(st, patient, "--patient")
        samples = clf.samples(st, np.array([row]), require_labels=False)
        if len(samples) == 0:
            raise EhrdxError("this patient has no prediction time (no complete visit)")
        index = len(samples) - 1
        if time_:
            from ehrdx.events_pipeline import parse_until

            limit = parse_until(time_, "--time")
            before = np.flatnonzero(samples.time <= limit)
            if len(before) == 0:
                raise EhrdxError(f"the patient has no prediction time at or before {time_}")
            index = int(before[-1])
        result = explain_sample(clf, st, samples, index, top_labels=top, top_events=top_events,
                                labels=_split_list(labels) or None)
    except EhrdxError as exc:
        _fail(exc)
    exact = identifiers_shown()  # exact dates and values only with ehrdx --show-ids (README: Privacy)
    if not exact:
        result = without_exact_dates_and_values(result)
    when = f"at {datetime.fromtimestamp(result['prediction_time'], UTC).strftime('%Y-%m-%d %H:%M')}, " if exact else ""
    console.print(f"prediction {when}after {result['prior_visits']} visit(s), from {result['events_read']} events")
    if not exact:
        console.print(f"event times are days from the prediction time and values have {VALUE_DIGITS} significant "
                      "digits (ehrdx --show-ids shows exact dates and values)")
    for lab in result["labels"]:
        t = Table(title=f"{escape(lab['label'])}: p = {lab['probability']:.3f} (logit {lab['logit']:.2f}; "
                        f"{lab['logit_without_events']:.2f} without any event)")
        for col in ("visit", "date" if exact else "days", "code", "value", "attribution"):
            t.add_column(col, justify="left" if col in ("date", "code") else "right")
        for ev in lab["events"]:
            t.add_row(str(ev["visit"]), datetime.fromtimestamp(ev["time"], UTC).strftime("%Y-%m-%d") if exact
                      else f"{ev['days_from_prediction']} d", escape(ev["code"]),
                      "" if ev["value"] is None else f"{ev['value']:.4g}", f"{ev['attribution']:+.3f}")
        console.print(t)
    if out:
        _write_json(out, result)
        console.print(f"wrote {escape(str(out))}")


@app.command()
def update(
    model: Annotated[Path, typer.Option(help="The trained event model to grow (never modified).")],
    out: Annotated[Path, typer.Option(help="Directory for the updated model.")],
    meds: Meds = None,
    events: Events = None,
    omop: Omop = None,
    omop_codes: OmopCodesGiven = None,
    omop_prefix: OmopPrefix = None,
    add: Annotated[str | None, typer.Option(help="Comma-separated labels to add (default: every label in the "
                                            "new data's training patients that the model lacks); LABEL=DATE "
                                            "also gives the date the label was introduced, e.g. "
                                            "U07.1=2020-03-01.")] = None,
    labels: Annotated[str | None, typer.Option(help="A new label selection (e.g. a map with new conditions of "
                                               "interest); it must still select every old label.")] = None,
    init: Annotated[str, typer.Option(help="How new label rows start: probe (logistic regression on the frozen "
                                      "model's states), auto, parent, code, description, mean.")] = "probe",
    protect: Annotated[str, typer.Option(help="Against forgetting old labels: distill (default) or none.")] = "distill",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after the new rows start (0: rows only).")] = 2,
    lr: Lr = 1e-3,
    replay_meds: Annotated[Path | None, typer.Option(help="Old training data (MEDS) to replay during fine-tuning; "
                                                     "its train split is used, new labels unknown there.")] = None,
    replay_until: Annotated[str | None, typer.Option(help="Use the replay data only up to this date.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Also fine-tune without protection and retrain "
                                          "from scratch on the same data, and report all three.")] = False,
    infer_introduced: InferIntroduced = False,
    visit_gap: VisitGapGiven = None,
    subject_col: SubjectColGiven = None,
    time_col: TimeColGiven = None,
    code_col: CodeColGiven = None,
    value_col: ValueColGiven = None,
    time_format: TimeFormatGiven = None,
    split_names: SplitNames = None,
    until: UntilGiven = None,
    store: StoreDir = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
) -> None:
    """Add labels to a trained event model without retraining from scratch: append them to the
    vocabulary (old labels keep their place), grow the head, fine-tune on the new data while distilling
    the old model's predictions on old labels, and report each label before and after."""
    _check_out(out, {**_event_inputs(meds, events, omop, store, model), "replay data (--replay-meds)": replay_meds,
                     "label map (--labels)": label_map_path(labels)}, kind="dir")
    import ehrdx
    from ehrdx.events_pipeline import open_store, patient_splits
    from ehrdx.input_settings import columns_of, settings_to_save
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.tasks.task import parse_duration
    from ehrdx.update import update_model

    settings = _input_settings(model, visit_gap=visit_gap, subject_col=subject_col, time_col=time_col,
                               code_col=code_col, value_col=value_col, time_format=time_format,
                               split_names=split_names, until=until, omop_codes=omop_codes, omop_prefix=omop_prefix)
    events = _with_omop(events, omop, settings["omop_codes"], settings["omop_prefix"])
    try:
        old = ehrdx.load(model)
        _require_events_model(old, model, "update")
        st = _open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
        splits = patient_splits(st, meds, seed, settings["split_fractions"], old.selector,
                                split_names=settings["split_names"])
        with _EpochProgress(epochs, "fine-tuning") as progress:
            selector = LabelSelector.parse(labels) if labels else None
            replay = None
            if replay_meds is not None:
                old_st = open_store(meds=replay_meds, until=replay_until,
                                    visit_gap_seconds=parse_duration(settings["visit_gap"]))
                replay = (old_st, patient_splits(old_st, replay_meds, seed, selector=old.selector,
                                                 split_names=settings["split_names"])[0])
            add_labels, introduced = _labels_to_add(add)
            new, report = update_model(old, st, splits, new_labels=add_labels, selector=selector, init=init,
                                       protect=protect, epochs=epochs, lr=lr, parent_dir=model, on_epoch=progress,
                                       replay=replay, device=device, precision=precision, introduced=introduced,
                                       infer_introduced=infer_introduced)
            # the updated model reads its data as this run read the new data
            new.input_ = settings_to_save(settings, settings["split_fractions"],
                                          "meds" if meds is not None else "omop" if omop is not None else "events")
        new.save(out)
        if compare:
            report["compare"] = _compare_update(old, st, splits, selector, add, init, epochs, lr, report,
                                                infer_introduced)
        _write_json(out / "update_report.json", report)
    except (EhrdxError, ValueError) as exc:
        _fail(exc)
    _print_update(_release(report))
    console.print(escape(f"updated model saved to {out} (report: {out / 'update_report.json'}); {model} is unchanged"))


def _labels_to_add(add: str | None) -> tuple[list[str] | None, dict[str, str]]:
    """`--add A,B=2020-03-01`: the labels (None: all new ones) and the introduction dates given."""
    labels, dates = [], {}
    for item in _split_list(add):
        label, sep, date = item.partition("=")
        labels.append(label.strip())
        if sep:
            dates[label.strip()] = date.strip()
    return labels or None, dates


def _compare_update(old, st, splits, selector, add, init, epochs, lr, report, infer_introduced=False) -> dict:
    from ehrdx.events_api import EventClassifier
    from ehrdx.update import compare_before_after, update_model

    rows = {"update (distill)": {k: report[k] for k in ("seconds", "old_labels_macro_auroc_after",
                                                        "new_labels_macro_auroc")}}
    with console.status("fine-tuning without protection"):
        add_labels, introduced = _labels_to_add(add)
        _, plain = update_model(old, st, splits, new_labels=add_labels, selector=selector, init=init,
                                protect="none", epochs=epochs, lr=lr, introduced=introduced,
                                infer_introduced=infer_introduced)
    rows["fine-tune, no protection"] = {k: plain[k] for k in rows["update (distill)"]}
    # Retrained with the parent model's own settings (all of them, as saved in its config.json).
    scratch = EventClassifier(task=old.task, labels=selector or old.selector,
                              **{**old.get_params(), "infer_introduced": infer_introduced})
    t0 = time.perf_counter()
    with console.status("retraining from scratch"):
        scratch.fit(st, splits[0], splits[1])
    seconds = time.perf_counter() - t0
    r = compare_before_after(old, scratch, st, splits[2])
    rows["retrain from scratch"] = {"seconds": round(seconds, 2),
                                    "old_labels_macro_auroc_after": r["old_labels_macro_auroc_after"],
                                    "new_labels_macro_auroc": r["new_labels_macro_auroc"]}
    return rows


def _print_update(report: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from ehrdx.evaluate.report import format_value as _fmt

    t = Table(title=f"Update: added {escape(', '.join(report['added']))} in {report['seconds']}s "
                    f"({report['epochs']} epochs, protection: {report['protect']})")
    for col in ("label", "description", "new", "introduced_at", "parent", "train pos", "test pos", "AUROC before",
                "AUROC after", "AUPRC before", "AUPRC after", "init"):
        t.add_column(col, justify="left" if col in ("label", "description", "introduced_at", "parent", "init")
                     else "right")
    for r in report["per_label"]:
        t.add_row(escape(r["label"]), Text(r.get("description") or ""), "yes" if r["new"] else "",
                  (r["introduced_at"] or "")[:10], escape(r["parent"] or ""),
                  str(r["train_positives"]), str(r["test_positives"]), _fmt(r["auroc_before"]), _fmt(r["auroc_after"]),
                  _fmt(r["auprc_before"]), _fmt(r["auprc_after"]), report["init"].get(r["label"], ""))
    console.print(t)
    console.print(f"old labels macro AUROC {_fmt(report['old_labels_macro_auroc_before'])} -> "
                  f"{_fmt(report['old_labels_macro_auroc_after'])}; new labels macro AUROC "
                  f"{_fmt(report['new_labels_macro_auroc'])}")
    for part in ("train", "test"):
        for what, n in report.get(f"{part}_excluded", {}).items():
            console.print(f"[yellow]{part}: {what.replace('_', ' ')}: {n:,}[/yellow]")
    if "compare" in report:
        c = Table(title="Compared on the same patients")
        for col in ("way", "seconds", "old labels macro AUROC", "new labels macro AUROC"):
            c.add_column(col, justify="left" if col == "way" else "right")
        c.add_row("old model", "", _fmt(report["old_labels_macro_auroc_before"]), "")
        for way, r in report["compare"].items():
            c.add_row(way, _fmt(float(r["seconds"])), _fmt(r["old_labels_macro_auroc_after"]),
                      _fmt(r["new_labels_macro_auroc"]))
        console.print(c)


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
        _fail(EhrdxError("--format must be long or meds"))
    _check_out(out, {**_event_inputs(meds, events, omop, store), "label map (--labels)": label_map_path(labels)},
               kind="file" if format == "long" else "dir", suffixes=TABLE_SUFFIXES if format == "long" else None)
    events = _with_omop(events, omop, omop_codes, omop_prefix)
    import numpy as np

    from ehrdx.tasks.labels import LabelVocab
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.tasks.targets import targets_from_samples, write_long, write_meds_tasks
    from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times

    try:
        spec, selector = TaskSpec.parse(task, new_onset, censor), LabelSelector.parse(labels)
        st = _open_events(meds, events, store, visit_gap, {"subject_col": subject_col, "time_col": time_col,
                                                           "code_col": code_col, "value_col": value_col,
                                                           "time_format": time_format}, until)
        rows = np.arange(len(st))
        vocab = LabelVocab.from_first_times(label_first_times(st, rows, selector), selector.info, infer_introduced)
        samples = build_samples(st, rows, spec, code_label_index(st, selector, vocab), len(vocab),
                                introduced=vocab.introduced_seconds(), introduced_from=vocab.introduced_from())
        t = targets_from_samples(st, samples, vocab.labels, spec.new_onset)
        path = write_long(t, out) if format == "long" else write_meds_tasks(t, out)
    except EhrdxError as exc:
        _fail(exc)
    console.print(f"{len(t):,} prediction times x {len(t.labels)} labels -> {escape(str(path))}")
    for what, n in samples.counts.items():
        console.print(f"[yellow]{escape(what.replace('_', ' '))}: {n:,}[/yellow]")


@app.command()
def demo(
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
    of every visit, evaluate on held-out patients (all labels and new onset) beside count baselines and
    the oracle, save the model and DIR/metrics.json. Then show a growing label list: a model trained on
    the data as of 2020 takes the labels that appeared later (U07.1, E11.2, E11.9) with ehrdx update."""
    _check_out(out, {}, kind="dir")
    if table:
        _demo_table(out, patients, hidden, depth, epochs, seed)
        return
    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
    from ehrdx.evaluate.report import print_events_report
    from ehrdx.events_api import EventClassifier
    from ehrdx.events_pipeline import open_store, patient_splits, train_and_evaluate_events

    start = time.perf_counter()
    try:
        with console.status(f"generating {patients:,} synthetic patients"):
            cohort = generate_longitudinal(patients, seed)
            paths = write_longitudinal(cohort, out / "data")
        console.print(f"[bold]1. cohort[/bold]: {patients:,} patients, {cohort.info['n_visits']:,} visits, "
                      f"{cohort.info['n_events']:,} events as MEDS -> {escape(str(paths['meds']))}")
        st = open_store(meds=paths["meds"], store_dir=out / "store")
        console.print(f"[bold]2. store[/bold]: {st.meta['events']:,} events in flat memory-mapped arrays -> "
                      f"{escape(str(out / 'store'))}")
        clf = EventClassifier(model=model, task="next-visit", labels=f"map:{paths['label_map']}", hidden=hidden,
                              max_epochs=epochs, seed=seed)
        splits = patient_splits(st, paths["meds"], seed)
        console.print(f"[bold]3. task[/bold]: at the end of every visit, predict the {len(cohort.label_map)} "
                      f"diseases coded at the next visit; patients split train/tuning/held_out "
                      f"{len(splits[0]):,}/{len(splits[1]):,}/{len(splits[2]):,}")
        with _EpochProgress(epochs, f"4. training {model}") as progress:
            clf, metrics = train_and_evaluate_events(
                st, clf, splits, oracle=cohort.oracle, baselines=("mlp", "logistic"), on_epoch=progress,
                on_baseline=lambda name: console.print(f"   fitting baseline {name} on count features"))
        clf.save(out / "model")
    except EhrdxError as exc:
        _fail(exc)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    metrics["labels_described"] = cohort.info["diseases"]
    _write_json(out / "metrics.json", metrics)
    print_events_report(console, _release(metrics), title="5. held-out test patients")
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
                                    f"ehrdx demo: {model}, next-visit task, held-out patients")
    console.print("HTML report (curves, calibration, per label, by prior visits, sex and age): "
                  + escape(str(report_path)))
    if update:
        _demo_update(out, paths, st, model, hidden, epochs, seed, metrics)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    _write_json(out / "metrics.json", metrics)
    console.print(escape(f"{metrics['wall_seconds']}s in all; model: {out / 'model'}   "
                         f"metrics: {out / 'metrics.json'}"))


def _demo_update(out: Path, paths: dict, st, model: str, hidden: int, epochs: int, seed: int, metrics: dict) -> None:
    """Growing the label list: a model trained on the data as of 2020-01-01 (before U07.1 and the E11
    split) takes the new labels from the data up to 2024 with ehrdx update."""
    from ehrdx.events_api import EventClassifier
    from ehrdx.events_pipeline import open_store, patient_splits
    from ehrdx.update import update_model

    try:
        old_st = open_store(meds=paths["meds"], store_dir=out / "store_2020", until="2020-01-01")
        old_splits = patient_splits(old_st, paths["meds"], seed)
        old = EventClassifier(model=model, task="next-visit", labels=f"map:{paths['label_map']}", hidden=hidden,
                              max_epochs=epochs, seed=seed)
        with _EpochProgress(epochs, f"6. training {model} on the data as of 2020-01-01") as progress:
            old.fit(old_st, old_splits[0], old_splits[1], on_epoch=progress)
        old.save(out / "model_2020")
        with _EpochProgress(2, "7. ehrdx update with the data up to 2024") as progress:
            new, report = update_model(old, st, patient_splits(st, paths["meds"], seed), parent_dir=out / "model_2020",
                                       on_epoch=progress)
        new.save(out / "model_2024")
        _write_json(out / "model_2024" / "update_report.json", report)
    except EhrdxError as exc:
        _fail(exc)
    _print_update(_release(report))
    metrics["update"] = {k: v for k, v in report.items() if k != "per_label"}
    console.print(escape(f"model as of 2020: {out / 'model_2020'}; updated: {out / 'model_2024'} "
                         "(see ehrdx update --help)"))


def _demo_table(out: Path, patients: int, hidden: int, depth: int, epochs: int, seed: int) -> None:
    from ehrdx.data.synth import generate_cohort, write_cohort
    from ehrdx.data.table import read_table
    from ehrdx.evaluate.report import print_report
    from ehrdx.pipeline import train_and_evaluate

    start = time.perf_counter()
    try:
        with console.status(f"generating {patients:,} synthetic patients"):
            cohort = generate_cohort(patients, seed)
            paths = write_cohort(cohort, out / "data")
        console.print(f"[bold]1. cohort[/bold]: {patients:,} patients, {cohort.info['n_events']:,} events "
                      f"-> {escape(str(out / 'data'))}")
        table = read_table(paths["table"])
        console.print(f"[bold]2. table[/bold]: snapshot at {cohort.info['index_date'][:10]}; diseases "
                      f"diagnosed in the following {cohort.info['label_window_days']} days are the labels")
        with _EpochProgress(epochs, "3. training MLP") as progress:
            clf, metrics = train_and_evaluate(
                table, _make_classifier(hidden=hidden, depth=depth, max_epochs=epochs, seed=seed),
                seed=seed, oracle=cohort.oracle, on_epoch=progress)
        clf.save(out / "model")
    except EhrdxError as exc:
        _fail(exc)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 1)
    metrics["labels_described"] = cohort.info["diseases"]
    _write_json(out / "metrics.json", metrics)
    print_report(console, _release(metrics), title="4. held-out test patients")
    gap = metrics["oracle"]["macro_auroc"] - metrics["test"]["macro_auroc"]
    console.print(f"macro AUROC {metrics['test']['macro_auroc']:.3f} vs oracle {metrics['oracle']['macro_auroc']:.3f} "
                  f"(gap {gap:.3f}); {metrics['wall_seconds']}s in all")
    console.print(escape(f"model: {out / 'model'}   metrics: {out / 'metrics.json'}"))


def _with_omop(events, omop, codes, prefixes):
    """An OMOP export travels where an events table would (it is read by its own reader)."""
    if omop is None:
        return events
    if events is not None:
        _fail(EhrdxError("give either --events or --omop, not both"))
    from ehrdx.data.omop import OmopSource

    try:
        return OmopSource.parse(omop, codes, prefixes)
    except EhrdxError as exc:
        _fail(exc)


def _input_settings(model_dir: Path, **given) -> dict:
    """How to read the events for this model: options given on the command line win; otherwise the
    settings saved with the model (input.json), else the built-in defaults. Differences are noted."""
    from rich.markup import escape

    from ehrdx.input_settings import read_input_settings, resolve

    try:
        settings, notes = resolve(read_input_settings(model_dir), given)
    except EhrdxError as exc:
        _fail(exc)
    for note in notes:
        console.print(f"[yellow]note: {escape(note)}[/yellow]")
    return settings


def _split_rows(st, meds, clf, settings: dict, split: str):
    """Store rows of one part of the training split (MEDS subject_splits, else the seeded split the model
    was trained with), or None for all patients; and a description for headers."""
    from ehrdx.events_pipeline import patient_splits

    parts = {"train": 0, "tuning": 1, "validation": 1, "test": 2, "held_out": 2}
    if split == "all":
        return None, "all patients"
    if split not in parts:
        raise EhrdxError(f"--split must be held_out (or test), tuning, train or all, not '{split}'")
    rows = patient_splits(st, meds, clf.seed, settings["split_fractions"], clf.selector,
                          split_names=settings["split_names"])[parts[split]]
    if meds is not None and (Path(meds) / "metadata" / "subject_splits.parquet").exists():
        how = "MEDS subject_splits"
    else:
        how = f"the seeded split of training, seed {clf.seed}"
    return rows, f"{split} patients ({len(rows):,}, {how})"


def _times_in_split(pt, rows, scored: str):
    """Prediction times of the chosen patients only; those of other patients are counted, not scored."""
    import numpy as np

    if pt is None or rows is None:
        return pt
    keep = np.isin(pt[0], rows)
    if (~keep).any():
        console.print(f"[yellow]{int((~keep).sum()):,} prediction time(s) of patients not among the {scored}: "
                      "left out (--split all scores them)[/yellow]")
    return pt[0][keep], pt[1][keep]


def _open_events(meds, events, store, visit_gap, columns=None, until=None, workers=1):
    from ehrdx.data.omop import OmopSource
    from ehrdx.data.store import EventStore
    from ehrdx.events_pipeline import convert_cooperatively, open_store
    from ehrdx.tasks.task import parse_duration
    from ehrdx.train.distributed import barrier, is_distributed, is_main

    shared = store is not None and is_distributed()
    gap = parse_duration(visit_gap)
    with console.status("converting events to the store"):
        if shared and meds is not None:  # each process converts its own MEDS shards; rank 0 merges
            import torch.distributed as dist

            st = convert_cooperatively(meds, store, dist.get_rank(), dist.get_world_size(), barrier, gap, until)
        elif shared:  # one events table or OMOP export: one process converts, the others open its store
            if is_main():
                st = (open_store(omop=events, store_dir=store, visit_gap_seconds=gap, until=until)
                      if isinstance(events, OmopSource) else
                      open_store(events=events, store_dir=store, visit_gap_seconds=gap, columns=columns, until=until))
            barrier()
            if not is_main():
                st = EventStore(store)
        elif isinstance(events, OmopSource):
            st = open_store(omop=events, store_dir=store, visit_gap_seconds=gap, until=until)
        else:
            st = open_store(meds=meds, events=events, store_dir=store, visit_gap_seconds=gap, columns=columns,
                            until=until, workers=workers)
    m = st.meta
    console.print(f"event store: {m['patients']:,} patients, {m['events']:,} events, {m['visits']:,} visits, "
                  f"{m['codes']:,} codes")
    for what, n in st.counts.items():
        console.print(f"[yellow]{escape(what.replace('_', ' '))}: {n:,}[/yellow]")
    return st


def _train_events(*, meds, events, out, task, new_onset, censor, labels, model, baselines, visit_gap, store,
                  targets, columns, oracle, fractions, params, until=None, resume=False, workers=1,
                  split_names=None, source=("meds", "source", None)) -> None:
    import polars as pl

    from ehrdx.evaluate.report import print_events_report
    from ehrdx.events_api import EventClassifier
    from ehrdx.events_pipeline import patient_splits, train_and_evaluate_events
    from ehrdx.input_settings import parse_split_names, settings_to_save
    from ehrdx.tasks.targets import read_targets

    try:
        clf = EventClassifier(model=model, task=task, labels=labels, new_onset=new_onset, censor=censor, **params)
        names = parse_split_names(split_names)
        clf.input_ = settings_to_save({"visit_gap": visit_gap, **columns, "split_names": names, "until": until,
                                       "omop_codes": source[1], "omop_prefix": source[2]}, fractions, source[0])
        st = _open_events(meds, events, store, visit_gap, columns if events is not None else None, until, workers)
        splits = patient_splits(st, meds, params["seed"], fractions, clf.selector, split_names=names)
        console.print(f"patients: train {len(splits[0]):,}, validation {len(splits[1]):,}, test {len(splits[2]):,}"
                      + (" (MEDS subject_splits)" if meds is not None and (Path(meds) / "metadata" /
                                                                          "subject_splits.parquet").exists() else ""))
        oracle_frame = pl.read_parquet(oracle, glob=False) if oracle else None
        given = read_targets(targets) if targets else None
        with _EpochProgress(params["max_epochs"], f"training {model}") as progress:
            clf, metrics = train_and_evaluate_events(
                st, clf, splits, oracle=oracle_frame, baselines=tuple(_split_list(baselines)), on_epoch=progress,
                on_baseline=lambda name: console.print(f"fitting baseline {name}"), targets=given,
                checkpoint=out / CHECKPOINT_DIR, resume=resume)
        _save_trained(clf, metrics, out, resume)
    except EhrdxError as exc:
        _fail(exc)
    print_events_report(console, _release(metrics))
    console.print(f"model saved to {escape(str(out))}")


def _evaluate_events(model_dir, meds, events, store, settings, split, times, out, targets=None,
                     device="cpu") -> None:
    import ehrdx
    from ehrdx.evaluate.report import print_events_report
    from ehrdx.input_settings import columns_of
    from ehrdx.tasks.targets import read_targets
    from ehrdx.tasks.task import read_prediction_times

    try:
        clf = ehrdx.load(model_dir)
        _require_events_model(clf, model_dir)
        clf.to(device)
        st = _open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
        rows, scored = _split_rows(st, meds, clf, settings, split)
        console.print(f"scoring {scored}")
        pt = _times_in_split(read_prediction_times(times, st) if times else None, rows, scored)
        given = read_targets(targets) if targets else None
        samples = clf.samples(st, rows, times=pt, targets=given)
        result = clf.evaluate(st, samples=samples)
    except EhrdxError as exc:
        _fail(exc)
    metrics = {"model": clf.model, "split": split, "test": result["all"], "test_new_onset": result["new_onset"],
               "test_by_prior_visits": result["by_prior_visits"],
               "test_samples": {k: result[k] for k in ("samples", "patients", "excluded")}, "excluded": st.counts}
    print_events_report(console, _release(metrics), title=escape(f"{meds or events}: {scored}"))
    if out:
        _write_json(out, metrics)
        console.print(f"wrote {escape(str(out))}")


def _require_events_model(clf, model_dir, command: str | None = None) -> None:
    from ehrdx.events_api import EventClassifier

    if not isinstance(clf, EventClassifier):
        if command == "update":
            raise EhrdxError(f"{model_dir} is a patient-table model: ehrdx update grows event-stream models "
                             "(--meds/--events/--omop); for a patient table, retrain with ehrdx train")
        if command:
            raise EhrdxError(f"{model_dir} is a patient-table model: ehrdx {command} works on event-stream models "
                             "(for a patient table, ehrdx evaluate prints and writes every metric)")
        raise EhrdxError(f"{model_dir} is a patient-table model: give a patient table, not --meds/--events")


def _require_table_model(clf, model_dir, data) -> None:
    from ehrdx.api import EHRClassifier

    if not isinstance(clf, EHRClassifier):
        raise EhrdxError(f"{model_dir} is an event-stream model ({clf.model}), and {data} was given as a patient "
                         "table: an event model reads event streams, not one row per patient\n  fix: give the "
                         "event data with --meds DIR, --events FILE or --omop DIR instead of the table, or use a "
                         "model trained on a patient table")


def _predict_events(model_dir, meds, events, store, settings, times, out, threshold, device="cpu") -> None:
    import numpy as np
    import polars as pl

    import ehrdx
    from ehrdx.events_pipeline import prediction_coverage
    from ehrdx.input_settings import columns_of
    from ehrdx.tasks.task import read_prediction_times

    try:
        clf = ehrdx.load(model_dir)
        _require_events_model(clf, model_dir)
        clf.to(device)
        st = _open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
        pt = read_prediction_times(times, st) if times else None
        t0 = time.perf_counter()
        samples = clf.samples(st, None, times=pt, require_labels=False)
        proba = clf.predict_samples(st, samples)
        seconds = time.perf_counter() - t0
        coverage = prediction_coverage(clf, st, samples, np.arange(len(st)) if pt is None else pt[0])
    except EhrdxError as exc:
        _fail(exc)
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
    for what, n in samples.counts.items():
        console.print(f"[yellow]{escape(what.replace('_', ' '))}: {n:,}[/yellow]")
    _print_coverage(coverage)


def _print_coverage(coverage: dict) -> None:
    if coverage.get("patients_without_prediction_time"):
        console.print(f"[yellow]{coverage['patients_without_prediction_time']:,} patient(s) with no prediction "
                      "time (no visit, e.g. only MEDS_BIRTH or other static facts): no row in the output[/yellow]")
    if coverage.get("events_with_unseen_codes"):
        console.print(f"[yellow]{coverage['events_with_unseen_codes']:,} event(s) with {coverage['unseen_codes']:,} "
                      "code(s) not seen in training were read as the unknown code[/yellow]")


def main() -> None:  # pragma: no cover - console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
