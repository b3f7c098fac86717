"""ehrdx train: a patient table (MLP, or K-fold cross-validation) or event streams (sequence models)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.event_data import EventData, reads_events
from ehrdx.cli.inputs import (
    open_events,
    read_given_targets,
)
from ehrdx.cli.options import (
    Baselines,
    BatchSize,
    Censor,
    Depth,
    Device,
    Dropout,
    EpochProgress,
    Epochs,
    GlobalOptions,
    Heads,
    Hidden,
    InferIntroduced,
    Labels,
    Layers,
    Lr,
    ModelKind,
    NewOnset,
    Patience,
    PosWeight,
    Precision,
    Seed,
    SplitNames,
    TargetsOpt,
    Task,
    WeightDecay,
    Workers,
    check_fractions,
    check_out,
    console,
    fail,
    given_options,
    split_list,
)
from ehrdx.cli.pretrain import say_encoder_use
from ehrdx.cli.resume import CHECKPOINT_DIR, note_resume, resume_check
from ehrdx.cli.search import Budget, Search, check_search_options, run_search
from ehrdx.errors import EhrdxError, ModelError
from ehrdx.paths import label_map_path

TABLE_ONLY = ("id_col", "label_col", "numeric", "categorical", "codes", "ignore", "cv")
EVENTS_ONLY = ("task", "new_onset", "censor", "labels", "baselines", "targets", "split_names", "heads", "workers",
               "context", "init", "probe")


def _save_trained(opts: GlobalOptions, clf, metrics: dict, out: Path, resume: bool, print_metrics) -> None:
    """Rank 0 saves the model and metrics.json, then drops the training checkpoint (no longer needed); the
    metrics are printed (small cells suppressed)."""
    import shutil

    from ehrdx.train.distributed import is_main

    note_resume(clf, resume)
    if "without_validation" in metrics.get("train_summary", {}):
        console.print(f"[yellow]{escape(metrics['train_summary']['without_validation'])}[/yellow]")
    if is_main():
        clf.save(out)
        opts.write_json(out / "metrics.json", metrics)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    print_metrics(console, opts.release(metrics))
    console.print(f"model saved to {escape(str(out))}")


@app.command()
@reads_events(for_model=False, table_only=TABLE_ONLY, events_only=EVENTS_ONLY)
def train(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Argument(help="Patient table (.csv or .parquet), one row per patient; "
                                                "or give --meds / --events for event streams.")] = None,
    out: Annotated[Path, typer.Option(help="Model directory to write.")] = Path("model_out"),
    task: Task = "next-visit",
    new_onset: NewOnset = False,
    censor: Censor = True,
    labels: Labels = "prefix:DX//",
    model: ModelKind = None,
    baselines: Baselines = None,
    targets: TargetsOpt = None,
    split_names: SplitNames = None,
    id_col: Annotated[str | None, typer.Option(help="Patient table: patient id column (inferred if not "
                                                  "given).")] = None,
    label_col: Annotated[str | None, typer.Option(help="Patient table: column with each patient's disease "
                                                     "list.")] = None,
    numeric: Annotated[str | None, typer.Option(help="Patient table: comma-separated numeric columns.")] = None,
    categorical: Annotated[str | None, typer.Option(help="Patient table: comma-separated categorical "
                                                       "columns.")] = None,
    codes: Annotated[str | None, typer.Option(help="Patient table: comma-separated code-list columns.")] = None,
    ignore: Annotated[str | None, typer.Option(help="Patient table: comma-separated columns to ignore.")] = None,
    oracle: Annotated[Path | None, typer.Option(help="Oracle probabilities (from ehrdx synth) to compare with.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of patients for validation.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of patients for the test set.")] = 0.15,
    cv: Annotated[int, typer.Option(help="Patient table: run K-fold cross-validation by patient "
                                     "instead (0 = off).")] = 0,
    hidden: Hidden = 128,
    layers: Layers = None,
    depth: Depth = None,
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
    context: Annotated[int | None, typer.Option(min=1, help="Event streams, sequence models: read the latest visits "
                                                "(between N + 1 and 2N; all of a shorter history) plus a summary of "
                                                "the earlier ones, instead of the whole history.")] = None,
    init: Annotated[Path | None, typer.Option(help="Event streams: start from a pretrained encoder (the directory "
                                              "ehrdx pretrain wrote): its model, sizes, input vocabulary and "
                                              "weights; the label head is trained as usual. With --model auto: "
                                              "the ensemble's network member starts from it.")] = None,
    probe: Annotated[bool, typer.Option("--probe", help="With --init: train the label head only, on the "
                                        "encoder's frozen states (a linear probe).")] = False,
    search: Search = 0,
    budget: Budget = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last complete "
                                         "epoch (checkpoints are kept in OUT/checkpoint until the model is "
                                         "saved); the same data and options are required.")] = False,
    *,
    event_data: EventData,
) -> None:
    """Train a model: split by patient into train/validation/test, fit on train, stop early and tune
    thresholds on validation, evaluate on test, save the model directory with metrics.json.

    Patient table: one prediction per patient (MLP, logistic or gbm). With --cv K, K-fold mean and spread
    instead. Event streams (--meds, --events or --omop): a prediction at every prediction time (end of each
    visit) with auto (the default: gradient boosting on history features, a GRU and gradient boosting on code
    counts, averaged with one weighting for all labels chosen on the validation patients), a GRU, LSTM,
    causal Transformer, gbm, or the count baselines (mlp, logistic).
    `ehrdx models` lists them all. --resume works for every model (gbm and auto's gbm members: the fitted model).

    Under torchrun (torchrun --nproc_per_node=N -m ehrdx train ...) it trains data parallel: gloo on
    CPUs, NCCL on GPUs (gbm, and auto's gbm member: every process fits the same boosters on all training
    patients); only rank 0 writes the model and prints."""
    opts: GlobalOptions = ctx.obj
    check_fractions(val_fraction, test_fraction)
    budget_seconds = check_search_options(search, budget)
    meds_split = event_data.meds is not None and (Path(event_data.meds) / "metadata" / "subject_splits.parquet").exists()
    if search and val_fraction == 0 and not cv and not meds_split:  # known now, not after the data is read
        fail(EhrdxError("--search scores settings on the tuning patients, and --val-fraction 0 leaves none\n"
                        "  fix: a validation share above 0 (--val-fraction) or MEDS tuning patients"))
    if probe and init is None:  # known now: the estimator would say it in its parameters' words, after reading
        fail(EhrdxError("option --probe trains the label head on a pretrained encoder's frozen states, and no encoder "
                        "is given\n  fix: give --init ENCODER_DIR (the folder ehrdx pretrain wrote), or leave --probe out"))
    check_out(out, {"patient table": data, **event_data.paths(), "targets (--targets)": targets,
                     "oracle (--oracle)": oracle, "label map (--labels)": label_map_path(labels),
                     "pretrained encoder (--init)": init}, kind="dir")
    event_data.source()  # --events with --omop, or an unreadable OMOP export, stop here
    run_started = resume_check(ctx, out, resume)
    from ehrdx.train.distributed import init_distributed, is_main

    try:
        device = init_distributed(device)
    except EhrdxError as exc:
        fail(exc)
    if not is_main():
        console.quiet = True
    if depth is not None:
        console.print("[yellow]--depth is the old name of --layers, and still works[/yellow]")
        layers = depth if layers is None else layers

    if search and model not in ("gbm", "gbm-counts", "logistic"):  # --search replaces these: say so
        replaced = given_options(ctx, ("hidden", "layers", "dropout", "lr", "batch_size", "weight_decay"))
        if replaced:
            console.print(f"[yellow]--search chooses {', '.join(replaced)} itself: the values given are not "
                          "used[/yellow]")
    if model not in ("transformer", None) and given_options(ctx, ("heads",)) and init is None:
        console.print(f"[yellow]--heads is for the transformer: the {model} model does not use it[/yellow]")
    if init is not None:  # the encoder's sizes unless given (ehrdx.pretrained checks given ones)
        given = given_options(ctx, ("hidden", "heads"))
        hidden, heads = (hidden if "--hidden" in given else None), (heads if "--heads" in given else None)
    if event_data.given:
        if data is not None:
            fail(EhrdxError("give either a patient table or --meds/--events, not both"))
        _train_events(opts, event_data, out=out, task=task, new_onset=new_onset, censor=censor, labels=labels,
                      model=model, baselines=baselines, targets=targets, split_names=split_names, oracle=oracle,
                      fractions=(1 - val_fraction - test_fraction, val_fraction, test_fraction),
                      resume=resume, run_started=run_started, workers=workers, search=(search, budget_seconds),
                      fractions_given=given_options(ctx, ("val_fraction", "test_fraction")),
                      params={"hidden": hidden, "layers": layers, "heads": heads, "dropout": dropout,
                              "weight_decay": weight_decay, "lr": lr, "max_epochs": epochs,
                              "patience": patience, "batch_size": batch_size,
                              "pos_weight": pos_weight, "seed": seed, "device": device, "precision": precision,
                              "infer_introduced": infer_introduced, "context": context,
                              "init": None if init is None else str(init), "probe": probe})
        return
    if data is None:
        fail(EhrdxError("give a patient table, or --meds DIR / --events FILE for event streams"))
    if infer_introduced:
        fail(EhrdxError("--infer-introduced is for event streams (--meds/--events): a patient table has one "
                         "prediction per patient and no event times"))
    if cv < 0 or cv == 1:  # before the table is read
        fail(EhrdxError(f"--cv {cv}: cross-validation needs at least 2 folds\n  fix: give --cv 5 (or another number "
                        "from 2 to the number of patients), or --cv 0 / leave it out to train once"))
    if cv and search:  # cross_validate trains each fold with the settings given: the search would be skipped
        fail(EhrdxError(f"--search {search} chooses the settings of one training, and --cv {cv} cross-validates the "
                        "settings given\n  fix: leave out --cv to search and then train once, or --search to "
                        "cross-validate the settings given"))
    if cv and oracle is not None:  # cross_validate scores the folds only
        fail(EhrdxError(f"--oracle is scored on the test patients of one training, and --cv {cv} scores its folds "
                        "only\n  fix: leave out --cv to compare the model with the oracle, or --oracle"))

    from ehrdx.data.table import TableSchema, read_table
    from ehrdx.estimator import EHRClassifier
    from ehrdx.evaluate.report import print_cv, print_report
    from ehrdx.models.registry import get_model
    from ehrdx.pipeline import cross_validate, train_and_evaluate

    schema = TableSchema(id_column=id_col, label_column=label_col, numeric=split_list(numeric),
                         categorical=split_list(categorical), codes=split_list(codes), ignore=split_list(ignore))
    params = {"model": model, "hidden": hidden, "layers": layers, "dropout": dropout, "weight_decay": weight_decay,
              "lr": lr, "max_epochs": epochs, "patience": patience, "batch_size": batch_size,
              "pos_weight": pos_weight, "seed": seed, "device": device, "precision": precision,
              "val_fraction": val_fraction}
    try:
        get_model(model or "mlp", "table")  # a typo, or a model for event streams, fails before the table is read
        oracle_frame = read_oracle(oracle)
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
            print_cv(console, result)
            if is_main():
                opts.write_json(out / "cv_metrics.json", result)
            console.print(f"wrote {escape(str(out / 'cv_metrics.json'))}")
            return
        fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        clf = EHRClassifier(**params)
        splits = clf.source(table, for_fit=True).default_splits(seed, fractions)
        if search:
            run_search(opts, clf, table, splits, search, budget_seconds, out)
        kind = get_model(clf.model or "mlp", "table")
        # shown once the labels and samples are checked
        progress = EpochProgress(epochs, f"training {kind.name}", epochs=kind.epochs)
        try:
            clf, metrics = train_and_evaluate(table, clf, splits, oracle=oracle_frame, on_epoch=progress,
                                              checkpoint=out / CHECKPOINT_DIR, resume=resume,
                                              on_start=lambda: (run_started(), progress.start()))
        finally:
            progress.stop()
    except EhrdxError as exc:
        fail(exc)
    _save_trained(opts, clf, metrics, out, resume, print_report)


def read_oracle(path: Path | None):
    """The oracle probabilities ehrdx synth wrote (None without --oracle), read before the data: an unreadable
    file is an error naming it, not a traceback after the store is built."""
    if path is None:
        return None
    import polars as pl

    from ehrdx.errors import DataError, reader_detail

    try:
        return pl.read_parquet(path, glob=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"could not be read as Parquet ({reader_detail(exc)})", file=str(path), column="--oracle",
                        fix="give the oracle file that ehrdx synth wrote (oracle.parquet)") from exc


# Labels from which a model fit per label (logistic, gbm, auto's gbm members) is said to be slow: a booster per label
# is minutes per hundred labels on a large cohort (README), where a network's one head costs the same for any number.
MANY_LABELS = 1000


def say_labels(clf, from_targets: bool = False) -> None:
    """How many labels the selection made, once they are known (before the training bar): a selection far wider than
    meant (regex:.* makes every code a label) is seen at once, and so is what it costs a model fit per label."""
    from ehrdx.models.registry import get_model

    n = len(clf.label_vocab_)
    spec = "--targets" if from_targets else f"--labels '{clf.selector_.spec}'"
    console.print(escape(f"labels: {n:,} (from {spec}, in the training patients)"))
    birth = [lab for lab in clf.label_vocab_.labels if "MEDS_BIRTH" in (clf.label_vocab_.info[lab].get("codes") or [])]
    if birth and not from_targets:
        console.print(f"[yellow]{escape(spec)} makes MEDS_BIRTH a label ({escape(birth[0])}): every patient's birth "
                      "is no diagnosis to predict; narrow --labels to the diagnosis codes (e.g. prefix:DX//)[/yellow]")
    if n >= MANY_LABELS and get_model(clf.model_name_).per_label:
        console.print(f"[yellow]{n:,} labels: {clf.model_name_} fits a model per label"
                      + (" (its gbm members)" if clf.model_name_ == "auto" else "")
                      + ", minutes per hundred labels on a large cohort; a network (--model gru or transformer) "
                      "learns every label in one head, at the same cost for any number[/yellow]")


def _train_events(opts: GlobalOptions, data: EventData, *, out, task, new_onset, censor, labels, model, baselines,
                  targets, oracle, fractions, params, resume=False, run_started=None, workers=1, split_names=None,
                  search=(0, None), fractions_given=()) -> None:
    from ehrdx.estimator import DEFAULT_MODEL, EHRClassifier
    from ehrdx.evaluate.report import print_events_report
    from ehrdx.events_pipeline import patient_splits
    from ehrdx.input_settings import parse_split_names, settings_to_save
    from ehrdx.models.registry import get_model
    from ehrdx.models.sequence import check_heads
    from ehrdx.pipeline import train_and_evaluate
    from ehrdx.pretrained import check_pretrained_patients, load_encoder
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.tasks.task import TaskSpec

    try:
        # Checked before the events are read: a typo in the task, labels, model or baselines, or an unreadable
        # --oracle, --targets or --init, fails at once (reading the events is slow on big data).
        selector = LabelSelector.parse(labels)
        get_model(model or DEFAULT_MODEL["events"], "events")
        for name in split_list(baselines):
            try:
                get_model(name, "events")
            except EhrdxError as exc:
                raise ModelError(f"option --baselines: {exc}") from None
        if not params.get("init"):  # with --init the sizes are the encoder's (asking others is refused later)
            check_heads(model or DEFAULT_MODEL["events"], params["hidden"], params["heads"])
        oracle_frame = read_oracle(oracle)
        given = read_given_targets(targets)
        enc = load_encoder(params["init"]) if params.get("init") else None
        clf = EHRClassifier(model=model, task=TaskSpec.parse(task, new_onset, censor), labels=selector,
                            new_onset=new_onset, censor=censor, **params)
        names = parse_split_names(split_names)
        clf.input_ = settings_to_save({"visit_gap": data.visit_gap, **data.columns(), "split_names": names,
                                       "until": data.until, "omop_codes": data.omop_codes,
                                       "omop_prefix": data.omop_prefix}, fractions, data.kind)
        events = data.source()
        st = open_events(data.meds, events, data.store, data.visit_gap,
                         data.columns() if events is not None else None, data.until, workers)
        meds = data.meds
        splits = patient_splits(st, meds, params["seed"], fractions, selector, split_names=names)
        if enc is not None:  # before any training: no validation or test patient was pretrained on
            import numpy as np

            ids = np.asarray(st.subject_ids)
            check_pretrained_patients(enc, {"validation": ids[splits[1]], "test": ids[splits[2]]})
            if params["context"] is None:  # read the visits as the encoder did (another --context is refused)
                clf.set_params(context=enc.context)
            console.print(escape(f"from the pretrained {enc.model_name} encoder in {params['init']} (hidden "
                                 f"{enc.sizes['hidden']}, {len(enc.targets):,} targets"
                                 + (f", context {enc.context}" if enc.context is not None else "") + "): "
                                 + (f"auto's {enc.model_name} member, " if model == "auto" else "")
                                 + ("the label head on its frozen states" if params["probe"] else "full fine-tune")))
        meds_split = meds is not None and (Path(meds) / "metadata" / "subject_splits.parquet").exists()
        console.print(f"patients: train {len(splits[0]):,}, validation {len(splits[1]):,}, test {len(splits[2]):,}"
                      + (" (MEDS subject_splits)" if meds_split else ""))
        if meds_split and fractions_given:
            console.print(f"[yellow]{' and '.join(fractions_given)} not used: the MEDS subject_splits decide the "
                          "split[/yellow]")
        if search[0]:
            run_search(opts, clf, st, splits, search[0], search[1], out, targets=given)
        # shown once the labels and samples are checked (no label code in the training patients: no bar);
        # without --model, --init trains the encoder's own model
        trained = model or (enc.model_name if enc is not None else DEFAULT_MODEL["events"])
        progress = EpochProgress(params["max_epochs"], f"training {trained}", epochs=get_model(trained).epochs)
        try:
            clf, metrics = train_and_evaluate(
                st, clf, splits, oracle=oracle_frame, baselines=tuple(split_list(baselines)), on_epoch=progress,
                on_baseline=lambda name: console.print(f"fitting baseline {name}"), targets=given,
                checkpoint=out / CHECKPOINT_DIR, resume=resume,
                on_start=lambda: (run_started and run_started(), say_labels(clf, given is not None), progress.start()))
        finally:
            progress.stop()
    except EhrdxError as exc:
        fail(exc)
    if enc is not None:
        say_encoder_use(clf, st, splits[0], metrics)
    if "not_evaluated" in metrics:
        console.print(f"[yellow]{escape(' and '.join(metrics['not_evaluated']['what']))} not fitted or scored: "
                      f"{metrics['not_evaluated']['why']}[/yellow]")
    _save_trained(opts, clf, metrics, out, resume, print_events_report)


