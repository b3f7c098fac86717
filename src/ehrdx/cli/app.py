"""The `ehrdx` command: the typer app, its global options (--show-ids, --min-cell) and the safety net that
turns any ehrdx or file system error into a one-paragraph error with exit code 2."""

from __future__ import annotations

import errno
from typing import Annotated

import typer
from typer.core import TyperGroup

from ehrdx.cli.options import GlobalOptions, fail
from ehrdx.errors import EhrdxError, command_line, show_identifiers
from ehrdx.evaluate.privacy import DEFAULT_MIN_CELL

# The order of `ehrdx --help`: the way through the tool, whichever module defines each command.
ORDER = ("synth", "pretrain", "train", "evaluate", "predict", "report", "explain", "update", "targets", "demo")


class Commands(TyperGroup):
    """The safety net under every command: an ehrdx error or a file system error (a disk that fills up, a
    permission that changes mid-run) that no command caught ends as a one-paragraph error, exit code 2."""

    def list_commands(self, ctx):
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def invoke(self, ctx):
        try:
            with command_line():  # errors raised by the library name this command's options, not Python's
                return super().invoke(ctx)
        except EhrdxError as exc:
            fail(exc)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # a closed pipe (ehrdx ... | head) is typer's to handle
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            fail(EhrdxError(f"{where}{exc.strerror or exc} (while reading or writing this path)\n  fix: check "
                            "that the path exists, is the kind expected (file or directory), has space and "
                            "permissions"))


app = typer.Typer(
    help="ehrdx: predict which diseases a patient has or will be diagnosed with, from their EHR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Commands,
)


@app.callback()
def options(
    ctx: typer.Context,
    show_ids: Annotated[bool, typer.Option("--show-ids", help="Show patient ids and raw cell values in error "
                                           "messages (hidden by default: logs travel further than data).")] = False,
    min_cell: Annotated[int, typer.Option(help="Suppress report cells (per-label counts and metrics, rows by "
                                          "prior visits) built from fewer than this many patients; 0 turns it "
                                          "off.")] = DEFAULT_MIN_CELL,
) -> None:
    """ehrdx: predict which diseases a patient has or will be diagnosed with, from their EHR."""
    if show_ids:
        show_identifiers(True)
    ctx.obj = GlobalOptions(show_ids=show_ids, min_cell=min_cell)
