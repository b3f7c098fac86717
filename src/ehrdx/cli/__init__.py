"""The command line: `ehrdx demo | synth | pretrain | train | evaluate | predict | update | targets | report | explain`.

app.py holds the `ehrdx` command and its global options, options.py what the commands share, inputs.py how
event data is read and event_data.py the options that say where it is and how to read it (one bundle); then
one module per command group. Commands parse, call the library and print."""

from __future__ import annotations

from ehrdx.cli import models, predict, pretrain, report, synth, targets, train, update  # noqa: F401  (registers the commands)
from ehrdx.cli.app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script entry point
    app()
