"""ehrdx train: a patient table (MLP, or K-fold cross-validation) or event streams (sequence models)."""

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
    Baselines,
    BatchSize,
    Censor,
    CodeCol,
    Depth,
    Device,
    Dropout,
    EpochProgress,
    Epochs,
    Events,
    GlobalOptions,
    Heads,
    Hidden,
    InferIntroduced,
    Labels,
    Layers,
    Lr,
    Meds,
    ModelKind,
    NewOnset,
    Omop,
    OmopCodes,
    OmopPrefix,
    Patience,
    PosWeight,
    Precision,
    Seed,
    SplitNames,
    StoreDir,
    SubjectCol,
    TargetsOpt,
    Task,
    TimeCol,
    TimeFormat,
    ValueCol,
    VisitGap,
    WeightDecay,
    Workers,
    check_out,
    console,
    fail,
    split_list,
)
from ehrdx.errors import EhrdxError
from ehrdx.paths import label_map_path

CHECKPOINT_DIR = "checkpoint"


def _note_resume(history, resume: bool) -> None:
    if history is not None and history.resumed_after_epoch is not None:
        console.print(f"resumed from the checkpoint after epoch {history.resumed_after_epoch}")
    elif resume:
        console.print("[yellow]--resume: no checkpoint found, trained from the start[/yellow]")


def _save_trained(opts: GlobalOptions, clf, metrics: dict, out: Path, resume: bool) -> None:
    """Rank 0 saves the model and metrics.json, then drops the training checkpoint (no longer needed)."""
    import shutil

    from ehrdx.train.distributed import is_main

    _note_resume(clf.history_, resume)
    if is_main():
        clf.save(out)
        opts.write_json(out / "metrics.json", metrics)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


@app.command()
def train(
    ctx: typer.Context,
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
    opts: GlobalOptions = ctx.obj
    source = "meds" if meds is not None else "omop" if omop is not None else "events"
    check_out(out, {"patient table": data, **event_inputs(meds, events, omop, store), "targets (--targets)": targets,
                     "oracle (--oracle)": oracle, "label map (--labels)": label_map_path(labels)}, kind="dir")
    events = with_omop(events, omop, omop_codes, omop_prefix)
    import polars as pl

    from ehrdx.train.distributed import init_distributed, is_main

    try:
        device = init_distributed(device)
    except EhrdxError as exc:
        fail(exc)
    if not is_main():
        console.quiet = True

    if meds is not None or events is not None:
        if data is not None:
            fail(EhrdxError("give either a patient table or --meds/--events, not both"))
        _train_events(opts, meds=meds, events=events, out=out, task=task, new_onset=new_onset, censor=censor,
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
        fail(EhrdxError("give a patient table, or --meds DIR / --events FILE for event streams"))
    if infer_introduced:
        fail(EhrdxError("--infer-introduced is for event streams (--meds/--events): a patient table has one "
                         "prediction per patient and no event times"))

    from ehrdx.api import EHRClassifier
    from ehrdx.data.table import TableSchema, read_table
    from ehrdx.evaluate.report import print_report
    from ehrdx.pipeline import cross_validate, train_and_evaluate

    schema = TableSchema(id_column=id_col, label_column=label_col, numeric=split_list(numeric),
                         categorical=split_list(categorical), codes=split_list(codes), ignore=split_list(ignore))
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
                table, lambda: EHRClassifier(**params), cv, seed=seed, val_fraction=val_fraction,
                on_fold=lambda f, m: console.print(f"fold {f + 1}/{cv}: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in m.items() if v is not None)))
            for key, s in result["summary"].items():
                if s["mean"] is not None:
                    spread = f" ± {s['std']:.3f}" if s["std"] is not None else ""
                    console.print(f"  {key:12s} {s['mean']:.3f}{spread}")
            if is_main():
                opts.write_json(out / "cv_metrics.json", result)
            console.print(f"wrote {escape(str(out / 'cv_metrics.json'))}")
            return
        oracle_frame = pl.read_parquet(oracle, glob=False) if oracle else None
        fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        with EpochProgress(epochs) as progress:
            clf, metrics = train_and_evaluate(table, EHRClassifier(**params), fractions=fractions,
                                              seed=seed, oracle=oracle_frame, on_epoch=progress,
                                              checkpoint=out / CHECKPOINT_DIR, resume=resume)
        _save_trained(opts, clf, metrics, out, resume)
    except EhrdxError as exc:
        fail(exc)
    print_report(console, opts.release(metrics))
    console.print(f"model saved to {escape(str(out))}")


def _train_events(opts: GlobalOptions, *, meds, events, out, task, new_onset, censor, labels, model, baselines, visit_gap, store,
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
        st = open_events(meds, events, store, visit_gap, columns if events is not None else None, until, workers)
        splits = patient_splits(st, meds, params["seed"], fractions, clf.selector, split_names=names)
        console.print(f"patients: train {len(splits[0]):,}, validation {len(splits[1]):,}, test {len(splits[2]):,}"
                      + (" (MEDS subject_splits)" if meds is not None and (Path(meds) / "metadata" /
                                                                          "subject_splits.parquet").exists() else ""))
        oracle_frame = pl.read_parquet(oracle, glob=False) if oracle else None
        given = read_targets(targets) if targets else None
        with EpochProgress(params["max_epochs"], f"training {model}") as progress:
            clf, metrics = train_and_evaluate_events(
                st, clf, splits, oracle=oracle_frame, baselines=tuple(split_list(baselines)), on_epoch=progress,
                on_baseline=lambda name: console.print(f"fitting baseline {name}"), targets=given,
                checkpoint=out / CHECKPOINT_DIR, resume=resume)
        _save_trained(opts, clf, metrics, out, resume)
    except EhrdxError as exc:
        fail(exc)
    print_events_report(console, opts.release(metrics))
    console.print(f"model saved to {escape(str(out))}")


