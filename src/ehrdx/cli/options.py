"""What every command shares: the terminal, error printing, output-path checks, the released (small cells
suppressed) JSON writer, a progress bar over epochs, and the option types used by more than one command."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ehrdx.errors import EhrdxError
from ehrdx.evaluate.privacy import DEFAULT_MIN_CELL, suppress_small_cells
from ehrdx.paths import check_output

console = Console()
if not console.is_terminal:  # piped or captured output: wide enough for the per-label table
    console = Console(width=120)
err = Console(stderr=True)


@dataclass(frozen=True)
class GlobalOptions:
    """The options of the `ehrdx` command itself, for one run: typer's context object (`ctx.obj`), which
    each command that reports hands to what it calls."""

    show_ids: bool = False
    min_cell: int = DEFAULT_MIN_CELL

    def release(self, obj: dict) -> dict:
        """What leaves the process (terminal, metrics files): small cells suppressed."""
        return suppress_small_cells(obj, self.min_cell) if isinstance(obj, dict) else obj

    def write_json(self, path: Path, obj: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.release(obj), indent=2, default=float))


def split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def fail(exc: Exception) -> None:
    """Print one error paragraph and stop with exit code 2."""
    # Messages quote paths, labels and codes: `[/bold]` or `[red]x` in them must print as written.
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


STORE_ROLE = "event store (--store)"


def check_out(out: Path | None, inputs: dict, kind: str = "file", suffixes: tuple[str, ...] | None = None,
              option: str = "--out") -> None:
    """Stop before any work when `out` would overwrite an input or cannot be written (ehrdx.paths). The
    event store among `inputs` is written too (the converted arrays): it is checked the same way against
    the other inputs (never the MEDS dataset, the model directory, or inside them)."""
    try:
        if inputs.get(STORE_ROLE) is not None:
            check_output(inputs[STORE_ROLE], {k: v for k, v in inputs.items() if k != STORE_ROLE}, kind="dir",
                         option="--store")
        check_output(out, inputs, kind=kind, option=option, suffixes=suffixes)
    except EhrdxError as exc:
        fail(exc)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Stop (exit 2) on split shares that make no split: each at least 0 and below 1, together below 1 (the
    rest are the training patients). A negative share or shares summing past 1 would otherwise be dealt
    patients all the same."""
    bad = [f"--{name}-fraction {v:g}" for name, v in (("val", val_fraction), ("test", test_fraction))
           if not 0 <= v < 1]
    if bad or val_fraction + test_fraction >= 1:
        what = ", ".join(bad) if bad else (f"--val-fraction {val_fraction:g} and --test-fraction {test_fraction:g} "
                                           f"add up to {val_fraction + test_fraction:g}")
        fail(EhrdxError(f"{what}: each share of patients must be at least 0 and below 1, and the two together "
                        "below 1 (the rest are the training patients)\n"
                        "  fix: e.g. --val-fraction 0.15 --test-fraction 0.15 (0 gives that part no patient)"))


TABLE = "a patient table"
EVENT_STREAMS = "event streams (--meds, --events or --omop)"


def given_options(ctx: typer.Context, names) -> list[str]:
    """The flags among the parameters `names` that the user gave (command line or environment), in --help
    order; an option left at its default is not given."""
    return [param.opts[0] for param in ctx.command.params if param.name in names
            and getattr(ctx.get_parameter_source(param.name), "name", "DEFAULT") in ("COMMANDLINE", "ENVIRONMENT")]


def refuse_options(ctx: typer.Context, names, *, meant_for: str, reading: str, verb: str = "reads") -> None:
    """Stop (exit 2) when options that only make sense for one kind of input (`meant_for`) were given to a
    run that reads the other kind (`reading`; `verb`: what the run does with it, e.g. synth 'writes')."""
    flags = given_options(ctx, names)
    if flags:
        one = len(flags) == 1
        fail(EhrdxError(f"{', '.join(flags)} {'is an option' if one else 'are options'} for {meant_for}, and this "
                        f"run {verb} {reading}\n  fix: leave {'it' if one else 'them'} out"))


def print_counts(counts: dict, names: dict[str, list[str]] | None = None) -> None:
    """Counted exclusions (rows, events, samples left out), one yellow line each, naming what a count
    counts where that has names (`names`: e.g. the ignored columns)."""
    from ehrdx.evaluate.report import count_lines

    for line in count_lines(counts, names):
        console.print(f"[yellow]{escape(line)}[/yellow]")


def print_warnings(warnings: list[str]) -> None:
    """What the input made ehrdx do without it (e.g. an unreadable codes.parquet), one yellow line each."""
    for text in warnings:
        console.print(f"[yellow]{escape(text)}[/yellow]")


class EpochProgress:
    """A rich progress bar over epochs, showing train and validation loss. Where the terminal is not one (a
    log file, a batch job's output) the bar would show nothing until the run ends: it prints a line when
    training starts and one per epoch instead."""

    def __init__(self, total: int, description: str = "training", epochs: bool = True) -> None:
        """`epochs` False: a model that fits in one go (gbm, logistic) gets a spinner and the time, not a bar
        of epochs it never runs."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        from ehrdx.train.distributed import is_main

        columns = ((TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[losses]}")) if epochs else (TextColumn("{task.description}"),
                                                                          SpinnerColumn()))
        self.progress = Progress(*columns, TimeElapsedColumn(), console=err, transient=False,
                                 disable=not is_main())
        self.task = self.progress.add_task(description, total=total if epochs else None, losses="")
        self.description, self.total = description, total
        self.lines = is_main() and not err.is_terminal  # a line per step instead of a live bar
        self.started, self.t0 = False, 0.0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        import time

        self.t0 = time.perf_counter()
        if self.lines:
            err.print(f"{escape(self.description)} ...", highlight=False)
        else:
            self.progress.start()
        self.started = True

    def stop(self) -> None:
        """Stop the bar (nothing if it never started: rich would still print an empty line where the output is
        not a terminal, before the error that stopped the run)."""
        if self.started:
            if not self.lines:
                self.progress.stop()
            self.started = False

    def __call__(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        import time

        losses = f"train {train_loss:.4f}" + (f"  val {val_loss:.4f}" if val_loss is not None else "")
        if self.lines:
            err.print(f"{escape(self.description)}: epoch {epoch + 1}/{self.total}  {losses}  "
                      f"({time.perf_counter() - self.t0:,.0f} s)", highlight=False)
        else:
            self.progress.update(self.task, completed=epoch + 1, losses=losses)


# Options shared by train and demo.
Hidden = Annotated[int, typer.Option(min=1, help="Width of each hidden layer.")]
Depth = Annotated[int | None, typer.Option(help="Old name of --layers (still works).", hidden=True)]
Dropout = Annotated[float, typer.Option(min=0.0, max=1.0, help="Dropout probability in hidden layers.")]
WeightDecay = Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")]
Lr = Annotated[float, typer.Option(min=0.0, help="Learning rate.")]
Epochs = Annotated[int, typer.Option(min=1, help="Maximum epochs; early stopping on validation loss may end sooner.")]
Patience = Annotated[int | None, typer.Option(min=0, help="Epochs without validation improvement before stopping "
                                              "(default 4 for tables, 3 for event streams).")]
BatchSize = Annotated[int | None, typer.Option(min=1, help="Training batch: patients for gru, lstm, transformer and "
                                               "auto (default 64: a patient brings all their visits), else rows "
                                               "(default 256).")]
Layers = Annotated[int | None, typer.Option(min=1, help="Hidden layers: recurrent or Transformer layers, MLP layers "
                                              "(default: the model's, 1 for gru/lstm, 2 for transformer and mlp).")]
Heads = Annotated[int, typer.Option(min=1, help="Event streams: attention heads (transformer).")]
Task = Annotated[str, typer.Option(help="Event streams: next-visit, or window:<N><unit> for (t, t+N], e.g. "
                                   "window:365d.")]
NewOnset = Annotated[bool, typer.Option("--new-onset", help="Event streams: new onsets only: a label already "
                                        "recorded at or before the prediction time is masked, not a negative.")]
Censor = Annotated[bool, typer.Option("--censor/--no-censor", help="Event streams: mask labels that did not occur "
                                      "when follow-up ends before the window does (default), or count them as "
                                      "negatives.")]
Labels = Annotated[str, typer.Option(help="Event streams: which codes are labels: prefix:PREFIX[:N chars], "
                                     "regex:PATTERN or map:FILE (.csv code,label / .json / .yaml).")]
ModelKind = Annotated[str | None, typer.Option(help="A model of the registry (`ehrdx models` lists them). Event "
                                               "streams: auto (gbm, gru and gbm-counts averaged with one weighting "
                                               "for all labels; train's default), gru, lstm, transformer, gbm (gradient boosting on history "
                                               "features), gbm-counts (the same on code counts and age), or the "
                                               "baselines mlp, logistic; a patient table: mlp (default), logistic "
                                               "or gbm.")]
Baselines = Annotated[str | None, typer.Option(help="Event streams: also fit these baselines and report them "
                                               "beside the model, e.g. gbm,logistic (gbm: gradient boosting on "
                                               "history features, the one to beat).")]
TargetsOpt = Annotated[Path | None, typer.Option(help="Event streams: given multi-label targets instead of the "
                                                 "task's windows: a long table (subject_id, prediction_time, label, "
                                                 "value) or a directory of per-label MEDS task directories.")]
IdCol = Annotated[str | None, typer.Option(help="Patient table: the patient id column (default: the one the "
                                           "model was trained with, else the first of patient_id, subject_id, "
                                           "person_id, patient, id). Ids are kept as given: 007 is not 7.")]
SplitNames = Annotated[str | None, typer.Option(help="Event streams (MEDS): subject_splits names other than "
                                                "train/tuning/held_out, mapped to those: e.g. "
                                                "test=held_out,val=tuning (default: the model's mapping). Any "
                                                "other name is an error.")]
InferIntroduced = Annotated[bool, typer.Option(
    "--infer-introduced", help="Event streams: a label without an introduced_at (label map, --add LABEL=DATE) "
    "is taken to start at its first record in the training patients, and samples whose window ends before "
    "it are masked. Off by default: a label is taken to have existed all along.")]
PosWeight = Annotated[bool, typer.Option(help="Up-weight positives of rare labels in the loss.")]
Seed = Annotated[int, typer.Option(help="Random seed: the same seed gives the same run on the same machine.")]
Workers = Annotated[int, typer.Option(min=1, help="Event streams (MEDS): processes that convert a sharded MEDS dataset "
                                     "into the store, each its own shards (under torchrun with --store, every "
                                     "process converts its own).")]
Device = Annotated[str, typer.Option(help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N.")]
Precision = Annotated[str, typer.Option(help="Training arithmetic: auto (float32: faster than bf16 for these "
                                        "model sizes, see BENCHMARKS.md), fp32, or bf16 autocast.")]
