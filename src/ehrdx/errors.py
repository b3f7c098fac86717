"""Errors that a user can act on: each names the file, the column, the offending rows and a fix."""

from __future__ import annotations

import os
from collections.abc import Sequence

# Patient identifiers and raw cell values are kept out of messages unless asked for (`ehrdx --show-ids`,
# or EHRDX_SHOW_IDS=1): a log or a terminal is often shared further than the data it came from.
_show_ids = os.environ.get("EHRDX_SHOW_IDS", "") not in ("", "0")


def show_identifiers(flag: bool) -> None:
    global _show_ids
    _show_ids = bool(flag)


def identifiers_shown() -> bool:
    return _show_ids


def ident(value: object) -> str:
    """A patient id or raw value for a message: itself with --show-ids, else a placeholder."""
    return f"{value}" if _show_ids else "[hidden]"


def reader_detail(exc: Exception) -> str:
    """A file reader's own error message can quote cells: shown with --show-ids, else its kind only."""
    if _show_ids:
        return str(exc)
    if type(exc).__name__ == "NoDataError":  # polars' word for a file of 0 bytes: no cell to quote
        return "the file is empty"
    return f"{type(exc).__name__}; its message may quote cell values, run with ehrdx --show-ids to see it"


HIDDEN_NOTE = "(patient ids and cell values hidden; run with ehrdx --show-ids to see them)"


class EhrdxError(Exception):
    """Base class of every error ehrdx raises on purpose."""


class DataError(EhrdxError):
    """Bad input data. The message names file, column, first offending rows and how to fix it; a `column`
    that starts with "--" is the command-line option the input came from (e.g. --add)."""

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
                msg += f"\n  {HIDDEN_NOTE}"
        if fix:
            msg += f"\n  fix: {fix}"
        super().__init__(msg)


class ModelError(EhrdxError):
    """A model directory that is missing, incomplete or inconsistent."""


class LeakageError(EhrdxError):
    """A run-time leakage guard failed: features from after a prediction time, overlapping patient
    splits, or something learned from patients outside training. This is a bug in ehrdx (or in code
    that calls it with hand-made samples), never a property of the data: the run is stopped."""
