"""ehrdx models: the models of the registry, what each reads and which inputs it learns from."""

from __future__ import annotations

from ehrdx.cli.app import app
from ehrdx.cli.options import console


@app.command("models")
def list_models() -> None:
    """List the models `--model` accepts (ehrdx.models.registry): name, inputs, sources, what it is."""
    from rich.table import Table

    from ehrdx.estimator import DEFAULT_MODEL  # (importing the estimator registers `auto`)
    from ehrdx.models.registry import models

    table = Table("model", "reads", "learns from", "explain", "what it is")
    for name, kind in models().items():
        sources = " and ".join("event streams" if s == "events" else "patient tables" for s in kind.sources)
        def said(v):
            return v if isinstance(v, str) else " + ".join(v)

        reads = said(kind.inputs) if not isinstance(kind.inputs, dict) else ", ".join(
            f"{said(v)} ({k})" for k, v in kind.inputs.items())
        table.add_row(name, reads, sources, "yes" if kind.explains else "no", kind.description)
    console.print(table)
    console.print(f"without --model: {DEFAULT_MODEL['events']} for event streams, {DEFAULT_MODEL['table']} for a "
                  "patient table")
