"""ehrdx pretrain: a sequence encoder pretrained on every frequent code of event streams, with no labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.event_data import EventData, reads_events
from ehrdx.cli.inputs import open_events
from ehrdx.cli.options import (
    Device,
    Dropout,
    EpochProgress,
    Heads,
    Hidden,
    Labels,
    Lr,
    Precision,
    Seed,
    SplitNames,
    WeightDecay,
    Workers,
    check_fractions,
    check_out,
    console,
    fail,
    print_counts,
)
from ehrdx.errors import EhrdxError
from ehrdx.paths import label_map_path


@app.command()
@reads_events(for_model=False)
def pretrain(
    out: Annotated[Path, typer.Option(help="Encoder directory to write (give it to ehrdx train --init).")],
    model: Annotated[str, typer.Option(help="The encoder: gru, lstm or transformer.")] = "gru",
    hidden: Hidden = 128,
    layers: Annotated[int | None, typer.Option(min=1, help="Recurrent or Transformer layers (default: 1 for gru and "
                                               "lstm, 2 for transformer).")] = None,
    heads: Heads = 4,
    dropout: Dropout = 0.1,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs; early stopping on the tuning patients' next-visit "
                                        "loss may end sooner.")] = 10,
    patience: Annotated[int, typer.Option(min=0, help="Epochs without improvement on the tuning patients before "
                                          "stopping.")] = 2,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Patients per training batch (default 64: a patient "
                                                   "brings all their visits).")] = None,
    lr: Lr = 2e-3,
    weight_decay: WeightDecay = 1e-4,
    min_count: Annotated[int, typer.Option(help="A code is a target when at least this many training patients "
                                           "have it at a visit.")] = 20,
    max_targets: Annotated[int, typer.Option(min=1, help="At most this many target codes, the most frequent first.")] = 4096,
    min_code_count: Annotated[int, typer.Option(help="Input codes rarer than this in training read as the unknown "
                                                "code.")] = 1,
    time_targets: Annotated[bool, typer.Option("--time-targets/--no-time-targets", help="Also predict how soon "
                                               "the next visit comes (within 7, 30, 90, 365 days).")] = True,
    labels: Labels = "prefix:DX//",
    val_fraction: Annotated[float, typer.Option(help="Share of patients for tuning (early stopping), as in ehrdx "
                                                "train.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Share of patients held out (never read), as in ehrdx "
                                                 "train.")] = 0.15,
    split_names: SplitNames = None,
    context: Annotated[int | None, typer.Option(min=1, help="Read the latest visits (between N + 1 and 2N; all of "
                                                "a shorter history) plus a summary of the earlier ones, instead of whole histories "
                                                "(long histories); ehrdx train --init reads them the same way.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = 1,
    *,
    event_data: EventData,
) -> None:
    """Pretrain a sequence encoder without labels: at the end of every visit of a training patient, predict
    which codes (every code at least --min-count training patients have) occur in the next visit, and how
    soon it comes. The patients are split as ehrdx train splits them with the same options (MEDS
    subject_splits, else the seeded split stratified by --labels), so the encoder never reads a later run's
    test patients; --labels only shapes that split. Early stopping on the tuning patients' next-visit loss.
    Writes OUT: weights (safetensors), model config, input and target vocabularies, and hashes of the
    pretraining patients' ids, which ehrdx train --init checks its validation and test patients against."""
    check_fractions(val_fraction, test_fraction)
    check_out(out, {**event_data.paths(), "label map (--labels)": label_map_path(labels)}, kind="dir")
    if not event_data.given:
        fail(EhrdxError("give the event data to pretrain on: --meds DIR, --events FILE or --omop DIR"))
    from ehrdx.events_pipeline import patient_splits
    from ehrdx.input_settings import parse_split_names
    from ehrdx.pretrain import encoder_spec
    from ehrdx.pretrain import pretrain as run_pretraining
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.train.device import resolve_device

    try:
        selector = LabelSelector.parse(labels)
        spec = encoder_spec(model, hidden, heads)  # refused before the events are read (slow on big data)
        names = parse_split_names(split_names)
        events = event_data.source()
        st = open_events(event_data.meds, events, event_data.store, event_data.visit_gap,
                         event_data.columns() if events is not None else None, event_data.until, workers)
        fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
        splits = patient_splits(st, event_data.meds, seed, fractions, selector, split_names=names)
        console.print(f"patients: pretraining {len(splits[0]):,}, tuning {len(splits[1]):,}, held out (not read) "
                      f"{len(splits[2]):,}")
        settings = {"seed": seed, "fractions": list(fractions), "labels": labels, "split_names": names,
                    "reader": event_data.kind, "visit_gap": event_data.visit_gap, "until": event_data.until}
        progress = EpochProgress(epochs, f"pretraining {model}")  # shown once the target codes are checked
        try:
            enc = run_pretraining(
                st, splits, model=model, hidden=hidden, layers=layers, heads=heads, dropout=dropout,
                max_epochs=epochs, batch_size=batch_size or spec.default_batch_size, lr=lr,
                weight_decay=weight_decay, patience=patience, seed=seed, min_count=min_count,
                max_targets=max_targets, min_code_count=min_code_count, time_targets=time_targets,
                context=context, device=str(resolve_device(device)), precision=precision, settings=settings,
                on_epoch=progress, on_start=progress.start)
        finally:
            progress.stop()
        enc.save(out)
    except EhrdxError as exc:
        fail(exc)
    print_counts(enc.settings["excluded"])
    history = enc.history or {}
    best = history.get("best_epoch", 0)
    val = history.get("val_loss") or []
    console.print(f"{len(enc.targets) - enc.n_time_targets:,} target codes"
                  + (f" + {enc.n_time_targets} time-to-next-visit targets" if enc.n_time_targets else "")
                  + f", {enc.settings['train_samples']:,} visits of {enc.settings['train_patients']:,} patients"
                  + (f" (context {enc.context})" if enc.context is not None else "") + "; "
                  f"{history.get('epochs_run', 0)} epoch(s), best {best + 1}"
                  + (f" (tuning loss {val[best]:.4f})" if len(val) > best else "")
                  + f", {history.get('samples_per_second', 0):,.0f} visits/s")
    console.print(f"encoder saved to {escape(str(out))}")


def say_encoder_use(clf, st, train_rows, metrics: dict) -> None:
    """After `train --init`: how many labels started from the encoder's rows, and the training patients' events
    whose code is outside the encoder's vocabulary (read as the unknown code), counted in the train summary."""
    from ehrdx.events_pipeline import unseen_code_events

    if getattr(clf, "pretrained_", None):
        console.print(f"{clf.pretrained_['labels_from_encoder']:,} of {len(clf.labels_):,} labels started from the "
                      "pretrained rows of their codes")
    unseen = unseen_code_events(clf.encoder_, st, train_rows) if getattr(clf, "encoder_", None) is not None else {}
    if unseen:
        metrics.setdefault("train_summary", {})["codes_unknown_to_the_encoder"] = unseen
        share = unseen["events_with_unseen_codes"] / unseen["events_read"]
        console.print(f"[yellow]{unseen['events_with_unseen_codes']:,} of the training patients' "
                      f"{unseen['events_read']:,} events ({share:.0%}) have one of {unseen['unseen_codes']:,} "
                      "code(s) outside the pretrained encoder's vocabulary (never seen, or too rare when it was "
                      "pretrained): each is read as the unknown code"
                      + ("; most of the data: pretrain on data coded as this data is, or train without --init"
                         if share > 0.5 else "") + "[/yellow]")
