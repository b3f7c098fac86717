"""Errors that a user can act on: each names the file, the column, the offending rows and a fix."""

from __future__ import annotations

from collections.abc import Sequence


class EhrdxError(Exception):
    """Base class of every error ehrdx raises on purpose."""


class DataError(EhrdxError):
    """Bad input data. The message names file, column, first offending rows and how to fix it."""

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
        if column:
            parts.append(f"column '{column}'")
        where = ", ".join(parts)
        msg = f"{where}: {problem}" if where else problem
        if self.rows:
            shown = self.rows[:5]
            # Rows are reported 1-based as a person counts data rows (the header is not row 1).
            desc = ", ".join(
                f"row {r + 1}" + (f" ({values[i]!r})" if values is not None and i < len(values) else "")
                for i, r in enumerate(shown)
            )
            more = f" and {len(self.rows) - len(shown)} more" if len(self.rows) > len(shown) else ""
            msg += f"\n  first offending rows: {desc}{more}"
        if fix:
            msg += f"\n  fix: {fix}"
        super().__init__(msg)


class ModelError(EhrdxError):
    """A model directory that is missing, incomplete or inconsistent."""


class LeakageError(EhrdxError):
    """A run-time leakage guard failed: features from after a prediction time, overlapping patient
    splits, or something learned from patients outside training. This is a bug in ehrdx (or in code
    that calls it with hand-made samples), never a property of the data: the run is stopped."""
