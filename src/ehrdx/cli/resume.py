"""ehrdx train --resume: a checkpoint of other options is refused before any data is read, and what the run
resumed is said."""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from ehrdx.cli.options import console, fail
from ehrdx.errors import EhrdxError
from ehrdx.paths import label_map_path

CHECKPOINT_DIR = "checkpoint"  # OUT/checkpoint: what a run resumes from


# Options that do not change what a resumed run computes (where it runs, where it writes), and the inputs'
# locations (their contents are checked by the checkpoint's data fingerprint: moved files still resume).
NOT_RESUMED = ("out", "resume", "device", "workers", "store", "budget", "oracle", "baselines", "data", "meds",
               "events", "omop", "targets", "init")


def resume_check(ctx: typer.Context, out: Path, resume: bool):
    """With --resume, refuse a checkpoint of other options before any data is read (train/checkpoint.py's
    run.json); returns what to call when training starts: a run that does not resume a checkpoint replaces
    any there and keeps its options."""
    from ehrdx.train.checkpoint import check_run_options, start_run
    from ehrdx.train.distributed import is_main

    params = dict(ctx.params)
    if params.get("layers") is None:  # --depth is --layers' old name: the same run either way
        params["layers"] = params.get("depth")
    params.update(_defaults_given(params))
    label_map = label_map_path(params.get("labels"))
    if label_map is not None and label_map.is_file():  # its contents, not where it lies (as for the data)
        params["labels"] = f"map file, sha256 {hashlib.sha256(label_map.read_bytes()).hexdigest()[:12]}"
    options = {f"--{k.replace('_', '-')}": v for k, v in params.items() if k not in (*NOT_RESUMED, "depth")}
    where = out / CHECKPOINT_DIR
    try:
        resuming = resume and check_run_options(where, options, value_of=_value_of)
    except EhrdxError as exc:
        fail(exc)

    def started() -> None:
        if not resuming and is_main():
            start_run(where, options)
    return started


def _value_of(option: str, value: object) -> object:
    """What an option's text stands for, so that a resume spelling it otherwise (--visit-gap 0 and 0s, --task
    window:10m and window:600s, --until 2020-01-01 and 2020-01-01T00:00) is the same run. Numbers were parsed
    already (0.1 and .1 are one float); text that does not parse is compared as written (the run refuses it)."""
    from ehrdx.events_pipeline import parse_until
    from ehrdx.tasks.task import TaskSpec, parse_duration

    parse = {"--visit-gap": parse_duration, "--task": lambda text: TaskSpec.parse(text).name,
             "--until": parse_until}.get(option)
    if parse is None or not isinstance(value, str):
        return value
    try:
        return parse(value)
    except EhrdxError:
        return value


def _defaults_given(params: dict) -> dict:
    """The settings left out (None) as the model takes them (EHRClassifier.resolve_settings), so that a resume
    giving a default (--patience 3) is the run that left it out. With --init, the encoder decides the model and
    its sizes: left as given. An unknown model is left for the run to refuse."""
    from ehrdx.estimator import DEFAULT_MODEL, DEFAULT_PATIENCE
    from ehrdx.models.registry import EVENTS, TABLE, get_model

    kind = TABLE if params.get("data") is not None else EVENTS
    out = {"patience": params.get("patience") or DEFAULT_PATIENCE[kind]}
    if params.get("init") is None:
        try:
            spec = get_model(params.get("model") or DEFAULT_MODEL[kind])
        except EhrdxError:
            return out
        out.update(model=spec.name, batch_size=params.get("batch_size") or spec.default_batch_size,
                   layers=params["layers"] if params.get("layers") is not None else spec.default_layers)
    return out


def note_resume(clf, resume: bool) -> None:
    import torch

    history, members = clf.history_, getattr(clf.model_, "resumed", None)
    if members:  # the auto ensemble: what each member read from its checkpoint
        console.print("resumed from the checkpoint: " + "; ".join(f"{k} {v}" for k, v in members.items()))
    elif history is not None and history.resumed_after_epoch is not None:
        console.print(f"resumed from the checkpoint after epoch {history.resumed_after_epoch}" if
                      isinstance(clf.model_, torch.nn.Module) else "resumed: the fitted model was read from the "
                      "checkpoint, not fitted again")
    elif resume:
        console.print("[yellow]--resume: no checkpoint found, trained from the start[/yellow]")
