"""`ehrdx train --search N --budget 10m`: the options, and the search run before the final fit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.options import console

Search = Annotated[int, typer.Option(help="Try N settings of the model on the tuning patients first (Optuna, "
                                     "seeded; for --model auto, N of each member), then train with the best; "
                                     "resumable (the trials are kept in OUT/search_*.journal). 0: off.")]
Budget = Annotated[str | None, typer.Option(help="Time budget of --search, e.g. 10m or 1h (default: none).")]


def run_search(opts, clf, data, splits, trials: int, budget: str | None, out: Path, targets=None) -> None:
    """Search, set the best settings on `clf`, write OUT/search.json and print what was chosen."""
    from ehrdx.search import search_settings
    from ehrdx.tasks.task import parse_duration

    seconds = parse_duration(budget, "--budget") if budget else None
    out.mkdir(parents=True, exist_ok=True)

    def said(model: str, number: int, values: dict, score: float) -> None:
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        console.print(f"search {escape(model)} #{number + 1}: tuning macro AUPRC {score:.4f} ({escape(shown)})")

    result = search_settings(clf, data, splits, trials, seconds, journal_dir=out, targets=targets, on_trial=said)
    opts.write_json(out / "search.json", result)
    for model, r in result["members"].items():
        console.print(f"search {escape(model)}: best tuning macro AUPRC {r['best_tuning_auprc']:.4f} of "
                      f"{len(r['trials'])} trial(s): {escape(str(r['best']))}")
