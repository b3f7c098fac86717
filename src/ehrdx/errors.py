"""Errors that a user can act on: each names the file, the column, the offending rows and a fix."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

# Patient identifiers and raw cell values are kept out of messages unless asked for (`ehrdx --show-ids`,
# or EHRDX_SHOW_IDS=1): a log or a terminal is often shared further than the data it came from.
_show_ids = os.environ.get("EHRDX_SHOW_IDS", "") not in ("", "0")


def show_identifiers(flag: bool) -> None:
    global _show_ids
    _show_ids = bool(flag)


def identifiers_shown() -> bool:
    return _show_ids


def warn_caller(message: str) -> None:
    """A UserWarning attributed to the first caller outside ehrdx (a fixed stacklevel names ehrdx's own
    wrappers, e.g. python_terms', when the call came through them)."""
    package, frame, level = os.path.dirname(__file__) + os.sep, sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def ident(value: object) -> str:
    """A patient id or raw value for a message: itself with --show-ids, else a placeholder."""
    return f"{value}" if _show_ids else "[hidden]"


def reader_detail(exc: Exception) -> str:
    """A file reader's own error message can quote cells: shown with --show-ids, else its kind only."""
    if _show_ids:
        return str(exc)
    if type(exc).__name__ == "NoDataError":  # polars' word for a file of 0 bytes: no cell to quote
        return "the file is empty"
    return f"{type(exc).__name__}; its message may quote cell values, {how_to_show_ids()} to see it"


def how_to_show_ids() -> str:
    """How to see what is hidden, in the caller's terms: the command's option, or for a Python caller the call
    (ehrdx --show-ids is no option of theirs)."""
    return "run with ehrdx --show-ids" if on_command_line() else "call ehrdx.errors.show_identifiers(True)"


class EhrdxError(Exception):
    """Base class of every error ehrdx raises on purpose."""


class DataError(EhrdxError):
    """Bad input data. The message names file, column, first offending rows and how to fix it; a `column`
    that starts with "--" is the command-line option the input came from (e.g. --add); raised to a Python caller
    through a public function, it is the parameter instead (e.g. new_labels, `python_terms`)."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        column: str | None = None,
        rows: Sequence[int] | None = None,
        values: Sequence[object] | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.column = column
        self.rows = list(rows) if rows is not None else []
        self.fix = fix
        parts = []
        if file:
            parts.append(f"{file}")
        if column and column.startswith("--"):  # a command-line option, not a file's column
            parts.append(f"option {column}")
        elif column:
            parts.append(f"column '{column}'")
        where = ", ".join(parts)
        msg = f"{where}: {problem}" if where else problem
        if self.rows:
            shown = self.rows[:5]
            with_values = values is not None and _show_ids
            # Rows are reported 1-based as a person counts data rows (the header is not row 1).
            desc = ", ".join(
                f"row {r + 1}" + (f" ({values[i]!r})" if with_values and i < len(values) else "")
                for i, r in enumerate(shown)
            )
            more = f" and {len(self.rows) - len(shown)} more" if len(self.rows) > len(shown) else ""
            msg += f"\n  first offending rows: {desc}{more}"
            if values is not None and not _show_ids:
                msg += f"\n  (patient ids and cell values hidden; {how_to_show_ids()} to see them)"
        if fix:
            msg += f"\n  fix: {fix}"
        super().__init__(msg)


class ModelError(EhrdxError):
    """A model directory that is missing, incomplete or inconsistent."""


class LeakageError(EhrdxError):
    """A run-time leakage guard failed: features from after a prediction time, overlapping patient
    splits, or something learned from patients outside training. This is a bug in ehrdx (or in code
    that calls it with hand-made samples), never a property of the data: the run is stopped."""


# -- command-line options or Python parameters ----------------------------------------------------------------
# Messages are written for the command line ("option --labels", "fix: ... --no-censor"), where most errors are
# raised. The same error reaching a Python caller through a public function names that function's parameters
# instead (`python_terms`); under the `ehrdx` command (`command_line`) messages stay as written.
_surface: contextvars.ContextVar[str | None] = contextvars.ContextVar("ehrdx_surface", default=None)

# a word after an option that is prose, not the option's value ("check --labels against ...", "the date given
# with --add are masked"): English's small words and the verbs messages put after an option
_PROSE = {"a", "after", "against", "all", "also", "an", "and", "are", "as", "at", "be", "before", "but", "by", "can",
          "cannot", "checks", "could", "does", "each", "for", "from", "gives", "given", "had", "has", "have", "if",
          "in", "instead", "into", "is", "it", "its", "may", "must", "needs", "no", "not", "of", "on", "only", "or",
          "out", "reads", "says", "should", "shows", "so", "than", "that", "the", "then", "there", "this", "to",
          "was", "were", "when", "where", "which", "will", "with", "would"}
# an option stands alone: not inside a path or a word ("run--seed1/events.csv" is a file's name)
_OPTION = re.compile(r"(?P<cli>ehrdx [a-z]+ (?:--[a-z-]+ (?:[^\s;,()-][^\s;,()]* )?)*)?(?P<option>option )?(?P<leave>leave )?(?<![\w./\\-])--(?P<name>[a-z][a-z-]*)"
                     r"(?P<value> (?!--)[^\s,;()]+?(?=[\s,;()]|\.\s|\.$|$))?")


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """While the ehrdx command runs: errors name its options, as written."""
    token = _surface.set("cli")
    try:
        yield
    finally:
        _surface.reset(token)


def on_command_line() -> bool:
    """Whether the ehrdx command runs (`command_line`): messages name its options; else a Python caller's."""
    return _surface.get() == "cli"


def python_text(text: str, names: Mapping[str, str]) -> str:
    """`text` with the command-line options in `names` (option -> parameter) said as Python parameters: "option
    --labels" as "parameter labels", "--hidden 128" as "hidden=128", "leave --model out" as "leave model out",
    a bare "--labels" as "labels="; a parameter given whole ("censor=False", "open_store(until=...)") replaces
    the option as it is. A key with a space is a phrase replaced whole ("--add LABEL=DATE"), first. A command
    line quoted in the text ("ehrdx pretrain --model gru") stays."""
    for phrase in sorted((k for k in names if " " in k), key=len, reverse=True):
        text = text.replace(phrase, names[phrase])

    def said(m: re.Match) -> str:
        option = "--" + m["name"]
        param = names.get(option)
        if param is None or m["cli"]:
            return m[0]
        if not param.isidentifier():  # a whole expression: the option's value, if any, is not appended
            return (m["option"] or "") + (m["leave"] or "") + param + (m["value"] or "")
        value = m["value"]
        if m["option"]:
            return f"parameter {param}" + (value or "")
        if m["leave"]:
            return f"leave {param}" + (value or "")
        if value and value.strip().lower() not in _PROSE:
            return f"{param}={value.strip()}"
        return f"{param}=" + (value or "")

    return _OPTION.sub(said, text)


def python_column(column: str | None, problem: str, names: Mapping[str, str]) -> str | None:
    """A DataError's `column` that is a command-line option, as the parameter its message names to a Python
    caller (the message's "option --add: a date ..." may be "parameter introduced: a date ..."); a setting given
    whole ("infer_introduced=True") by its name; other columns, and options without a parameter, as they are."""
    if not column or not column.startswith("--"):
        return column
    said = python_text(f"option {column}: {problem}", names)
    m = re.match(r"(?:parameter |option )?(.+?): ", said)
    if m is None or m[1] == column:
        return column
    setting = re.fullmatch(r"([A-Za-z_]\w*)=.*", m[1])
    return setting[1] if setting else m[1]


def python_terms(names: Mapping[str, str]) -> Callable:
    """Decorate a public function so that an EhrdxError it raises to a Python caller names its parameters
    (`names`: option -> parameter, see `python_text`) instead of the command-line options. Only the outermost
    such call rewrites (a public function calling another keeps its own parameter names); under `command_line`
    nothing does."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if _surface.get() is not None:
                return function(*args, **kwargs)
            token = _surface.set("python")
            try:
                return function(*args, **kwargs)
            except EhrdxError as exc:
                exc.args = tuple(python_text(a, names) if isinstance(a, str) else a for a in exc.args)
                if isinstance(exc, DataError):
                    exc.column = python_column(exc.column, exc.problem, names)
                    exc.fix = exc.fix and python_text(exc.fix, names)
                    exc.problem = python_text(exc.problem, names)
                raise
            finally:
                _surface.reset(token)
        return wrapper
    return decorate
