"""Command-line interface: ehrdx demo | synth | train | evaluate | predict."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ehrdx.errors import EhrdxError

app = typer.Typer(
    help="ehrdx: predict which diseases a patient has or will be diagnosed with, from their EHR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
if not console.is_terminal:  # piped or captured output: wide enough for the per-label table
    console = Console(width=120)
err = Console(stderr=True)


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
    raise typer.Exit(code=2)


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float))


class _EpochProgress:
    """A rich progress bar over epochs, showing train and validation loss."""

    def __init__(self, total: int, description: str = "training") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), console=err,
                                 transient=False)
        self.task = self.progress.add_task(description, total=total, losses="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        losses = f"train {train_loss:.4f}" + (f"  val {val_loss:.4f}" if val_loss is not None else "")
        self.progress.update(self.task, completed=epoch + 1, losses=losses)


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
Patience = Annotated[int, typer.Option(help="Epochs without validation improvement before stopping.")]
BatchSize = Annotated[int, typer.Option(help="Patients per training batch.")]
PosWeight = Annotated[bool, typer.Option(help="Up-weight positives of rare labels in the loss.")]
Seed = Annotated[int, typer.Option(help="Random seed: the same seed gives the same run on the same machine.")]


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Directory to write the cohort into.")],
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 20_000,
    seed: Seed = 0,
    table_format: Annotated[str, typer.Option(help="Patient table format: parquet or csv.")] = "parquet",
    format: Annotated[str, typer.Option("--format", help="Events as 'events' (one events.parquet) or 'meds' "
                                        "(a MEDS dataset in OUT/meds with splits and code metadata).")] = "events",
) -> None:
    """Generate a synthetic cohort: event streams (events.parquet, or a MEDS dataset with --format meds),
    the patient table at the index date (patients.parquet/csv), and the oracle probability of every
    disease (oracle.parquet)."""
    from ehrdx.data.synth import generate_cohort, write_cohort

    if table_format not in ("parquet", "csv"):
        _fail(EhrdxError("--table-format must be parquet or csv"))
    if format not in ("events", "meds"):
        _fail(EhrdxError("--format must be events or meds"))
    try:
        with console.status(f"generating {patients:,} patients"):
            cohort = generate_cohort(patients, seed)
            paths = write_cohort(cohort, out, table_format, meds=format == "meds")
    except (EhrdxError, ValueError) as exc:
        _fail(exc)
    console.print(f"{patients:,} patients, {cohort.info['n_events']:,} events in {cohort.info['seconds']:.1f}s")
    for name, path in paths.items():
        console.print(f"  {name:7s} {path}")


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Patient table (.csv or .parquet), one row per patient.")],
    out: Annotated[Path, typer.Option(help="Model directory to write.")],
    id_col: Annotated[str | None, typer.Option(help="Patient id column (inferred if not given).")] = None,
    label_col: Annotated[str | None, typer.Option(help="Column with each patient's disease list.")] = None,
    numeric: Annotated[str | None, typer.Option(help="Comma-separated numeric columns.")] = None,
    categorical: Annotated[str | None, typer.Option(help="Comma-separated categorical columns.")] = None,
    codes: Annotated[str | None, typer.Option(help="Comma-separated code-list columns.")] = None,
    ignore: Annotated[str | None, typer.Option(help="Comma-separated columns to ignore.")] = None,
    oracle: Annotated[Path | None, typer.Option(help="Oracle probabilities (from ehrdx synth) to compare with.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of patients for validation.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of patients for the test set.")] = 0.15,
    cv: Annotated[int, typer.Option(help="Run K-fold cross-validation by patient instead (0 = off).")] = 0,
    hidden: Hidden = 128,
    depth: Depth = 2,
    dropout: Dropout = 0.1,
    weight_decay: WeightDecay = 1e-4,
    lr: Lr = 2e-3,
    epochs: Epochs = 30,
    patience: Patience = 4,
    batch_size: BatchSize = 256,
    pos_weight: PosWeight = False,
    seed: Seed = 0,
) -> None:
    """Train a model on a patient table: split by patient into train/validation/test, fit on train,
    stop early and tune thresholds on validation, evaluate on test, save the model directory with
    metrics.json. With --cv K, report K-fold mean and spread instead (cv_metrics.json)."""
    import polars as pl

    from ehrdx.data.table import TableSchema, read_table
    from ehrdx.evaluate.report import print_report
    from ehrdx.pipeline import cross_validate, train_and_evaluate

    schema = TableSchema(id_column=id_col, label_column=label_col, numeric=_split_list(numeric),
                         categorical=_split_list(categorical), codes=_split_list(codes), ignore=_split_list(ignore))
    params = {"hidden": hidden, "depth": depth, "dropout": dropout, "weight_decay": weight_decay, "lr": lr,
              "max_epochs": epochs, "patience": patience, "batch_size": batch_size, "pos_weight": pos_weight,
              "seed": seed}
    try:
        table = read_table(data, schema=schema)
        console.print(f"read {len(table):,} patients from {data}; roles: id={table.schema.id_column}, "
                      f"labels={table.schema.label_column}, numeric={table.schema.numeric}, "
                      f"categorical={table.schema.categorical}, codes={table.schema.codes}")
        if cv:
            result = cross_validate(
                table, lambda: _make_classifier(**params), cv, seed=seed, val_fraction=val_fraction,
                on_fold=lambda f, m: console.print(f"fold {f + 1}/{cv}: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in m.items() if v is not None)))
            for key, s in result["summary"].items():
                if s["mean"] is not None:
                    spread = f" ± {s['std']:.3f}" if s["std"] is not None else ""
                    console.print(f"  {key:12s} {s['mean']:.3f}{spread}")
            _write_json(out / "cv_metrics.json", result)
            console.print(f"wrote {out / 'cv_metrics.json'}")
            return
        oracle_frame = pl.read_parquet(oracle) if oracle else None
        fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        with _EpochProgress(epochs) as progress:
            clf, metrics = train_and_evaluate(table, _make_classifier(**params), fractions=fractions,
                                              seed=seed, oracle=oracle_frame, on_epoch=progress)
        clf.save(out)
        _write_json(out / "metrics.json", metrics)
    except EhrdxError as exc:
        _fail(exc)
    print_report(console, metrics)
    console.print(f"model saved to {out}")


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="Labelled patient table with the training columns.")],
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train.")],
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here.")] = None,
) -> None:
    """Evaluate a saved model on a labelled table: AUROC/AUPRC, F1, recall@k, calibration, per label."""
    import ehrdx
    from ehrdx.evaluate.report import print_report

    try:
        clf = ehrdx.load(model)
        result = clf.evaluate(data)
    except EhrdxError as exc:
        _fail(exc)
    _report_summary(result.get("summary", {}))
    print_report(console, {"test": result}, title=str(data))
    if out:
        _write_json(out, result)
        console.print(f"wrote {out}")


def _report_summary(summary: dict) -> None:
    for kind, n in summary.get("unknown", {}).items():
        console.print(f"[yellow]{n:,} {kind.replace(':', ' ')} value(s) not seen in training "
                      f"were mapped to the unknown bucket[/yellow]")
    for label, n in summary.get("labels_not_in_model", {}).items():
        console.print(f"[yellow]label '{label}' ({n:,} patients) is not in the model's vocabulary: left out[/yellow]")


@app.command()
def predict(
    data: Annotated[Path, typer.Argument(help="Patient table with the training columns (labels not needed).")],
    model: Annotated[Path, typer.Option(help="Model directory from ehrdx train.")],
    out: Annotated[Path, typer.Option(help="Output file, .csv or .parquet.")],
    threshold: Annotated[float | None, typer.Option(help="One threshold for all labels (default: tuned per label).")] = None,
) -> None:
    """Predict every disease's probability for each patient; writes patient id, one probability column
    per disease (p_<label>) and the predicted set."""
    import numpy as np
    import polars as pl

    import ehrdx
    from ehrdx.data.table import read_table

    try:
        clf = ehrdx.load(model)
        table = read_table(data, schema=clf.preprocessor_.schema, require_labels=False, fixed_schema=True)
        t0 = time.perf_counter()
        proba = clf.predict_proba(table)
        seconds = time.perf_counter() - t0
    except EhrdxError as exc:
        _fail(exc)
    thr = clf.thresholds_ if threshold is None else np.full(proba.shape[1], threshold)
    labels = clf.labels_
    pred = proba >= thr[None, :]
    frame = pl.DataFrame({table.schema.id_column: table.patient_ids,
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
    console.print(f"predicted {len(table):,} patients x {len(labels)} labels in {seconds:.2f}s -> {out}")
    _report_summary(clf.last_prediction_summary_)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the cohort, the model and metrics.json.")] = Path("demo_out"),
    patients: Annotated[int, typer.Option(help="Synthetic patients to generate.")] = 20_000,
    hidden: Hidden = 128,
    depth: Depth = 2,
    epochs: Epochs = 30,
    seed: Seed = 0,
) -> None:
    """The whole thing on built-in synthetic data: generate a cohort, train, evaluate on held-out
    patients, compare with the oracle, save the model and DIR/metrics.json."""
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
                      f"-> {out / 'data'}")
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
    print_report(console, metrics, title="4. held-out test patients")
    gap = metrics["oracle"]["macro_auroc"] - metrics["test"]["macro_auroc"]
    console.print(f"macro AUROC {metrics['test']['macro_auroc']:.3f} vs oracle {metrics['oracle']['macro_auroc']:.3f} "
                  f"(gap {gap:.3f}); {metrics['wall_seconds']}s in all")
    console.print(f"model: {out / 'model'}   metrics: {out / 'metrics.json'}")


def main() -> None:  # pragma: no cover - console script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
