"""`ehrdx train --search N --budget 10m`: the options, and the search run before the final fit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.options import console, fail
from ehrdx.errors import EhrdxError

Search = Annotated[int, typer.Option(help="Try N settings of the model on the tuning patients first (Optuna, "
                                     "seeded; for --model auto, N of each member), then train with the best; "
                                     "resumable (the trials are kept in OUT/search_*.journal). 0: off.")]
Budget = Annotated[str | None, typer.Option(help="Time budget of --search, e.g. 10m or 1h (default: none).")]


def check_search_options(trials: int, budget: str | None) -> float | None:
    """--search and --budget checked before any data is read: the budget in seconds (None: none)."""
    from ehrdx.search import check_search
    from ehrdx.tasks.task import parse_duration

    try:
        if budget is not None and not trials:  # a budget for no search would be ignored without a word
            raise EhrdxError("--budget limits --search, which is off (0 settings to try)\n"
                             "  fix: give --search N with it, or leave --budget out")
        if trials < 0:
            raise EhrdxError(f"option --search: {trials} settings to try\n  fix: --search N with N at least 1 "
                             "(0, the default, trains without a search)")
        seconds = parse_duration(budget, "--budget") if budget is not None else None
        if trials:
            check_search(trials, seconds)
    except EhrdxError as exc:
        fail(exc)
    return seconds


def run_search(opts, clf, data, splits, trials: int, seconds: float | None, out: Path, targets=None) -> None:
    """Search (`seconds`: the budget from check_search_options), set the best settings on `clf`, write
    OUT/search.json and print what was chosen."""
    from ehrdx.search import search_settings

    out.mkdir(parents=True, exist_ok=True)

    def said(model: str, number: int, values: dict, score: float) -> None:
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        console.print(f"search {escape(model)} #{number + 1}: tuning macro AUPRC {score:.4f} ({escape(shown)})")

    result = search_settings(clf, data, splits, trials, seconds, journal_dir=out, targets=targets, on_trial=said)
    opts.write_json(out / "search.json", result)
    for model, r in result["members"].items():
        console.print(f"search {escape(model)}: best tuning macro AUPRC {r['best_tuning_auprc']:.4f} of "
                      f"{len(r['trials'])} trial(s): {escape(str(r['best']))}")
        if r["stopped_by_budget"]:  # fewer trials than asked for: say why
            console.print(f"[yellow]search {escape(model)}: the --budget ran out after {len(r['trials'])} of "
                          f"{r['requested_trials']} trial(s); the same command again continues the search[/yellow]")
