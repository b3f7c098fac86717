"""The model registry: every model ehrdx can train, by name, and how it is built, saved and loaded.

Adding a model is one new file in `ehrdx/models/` that calls `register_model` when imported; `models()`
imports every module of this folder first, so the CLI's `--model` choices, the estimator's checks, the
saved `config.json` (`model_name`) and loading all come from here.

A model takes one kind of input, built by the source for its samples (`ehrdx.sources`):
  SEQUENCE  each patient's visits up to each prediction time (`data.sequences.SequenceSet`): events only
  ROWS      one row per sample: a dense block and a bag of codes (`data.batches.SampleSet`)
  MATRIX    one sparse row per sample (`data.batches.MatrixSet`): counts and last values
  HISTORY   the samples with their store (`data.history.HistorySet`), for a model that fits its own features
A torch model (`torch.nn.Module` with a `head`) is trained by `train.loop.train_model`; any other model
fits itself: `fit_sets(train_set, val_set, seed)`, `predict_logits(dataset) -> [N, L]`, and
`add_labels(train_set, val_set, n_old, seed)` for `ehrdx update`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ehrdx.data.batches import HISTORY, MATRIX, ROWS, SEQUENCE
from ehrdx.errors import ModelError

__all__ = ["EVENTS", "HISTORY", "MATRIX", "ROWS", "SEQUENCE", "TABLE", "ModelKind", "get_model", "model_names", "models",
           "register_model", "torch_save"]
TABLE, EVENTS = "table", "events"  # the kinds of source (ehrdx.sources: TableSource.kind, EventSource.kind)


@dataclass(frozen=True)
class ModelKind:
    """One trainable model. `build(train_set, n_labels, params)` makes a new, untrained model for a training
    set (its sizes come from the set) and the estimator's settings (`params`: hidden, layers, heads, dropout,
    code_dim); `save(model)` gives (config dict, tensors, JSON files); `load(config, tensors, files)` undoes it."""

    name: str
    inputs: str | dict[str, str]  # SEQUENCE | ROWS | MATRIX | HISTORY, or one of them per kind of source
    sources: tuple[str, ...]  # TABLE and/or EVENTS
    description: str
    build: Callable[[Any, int, dict], Any]
    save: Callable[[Any], tuple[dict, dict, dict]]
    load: Callable[[dict, dict, dict], Any]
    default_layers: int = 1
    default_batch_size: int = 256  # rows per batch; sequence models count whole patients
    explains: bool = False  # `ehrdx explain` can attribute its predictions to past events
    epochs: bool = True  # learns epoch by epoch in the training loop (a network); False: it fits itself in one go
    per_label: bool = False  # fits a model per label (its time grows with the labels), not one head for all

    def inputs_for(self, source: str) -> str:
        """What the model reads from a source of this kind."""
        return self.inputs[source] if isinstance(self.inputs, dict) else self.inputs


_MODELS: dict[str, ModelKind] = {}


def register_model(kind: ModelKind) -> ModelKind:
    _MODELS[kind.name] = kind
    return kind


def models() -> dict[str, ModelKind]:
    """Every registered model by name (the modules of ehrdx.models are imported first, so each registers)."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry":
            importlib.import_module(f"{__package__}.{info.name}")
    return dict(sorted(_MODELS.items()))


def model_names(source: str | None = None) -> tuple[str, ...]:
    """The names, sorted; with `source`, those that can learn from that kind of source."""
    return tuple(sorted(name for name, kind in models().items() if source is None or source in kind.sources))


def get_model(name: str, source: str | None = None) -> ModelKind:
    """The model called `name`; a clear error listing the choices (for `source`, if given) otherwise."""
    found = models().get(name)
    if found is None:
        raise ModelError(f"unknown model '{name}': choose from {', '.join(model_names(source))}")
    if source is not None and source not in found.sources:
        where = "event streams (MEDS, a long events table or OMOP)" if EVENTS in found.sources else "patient tables"
        raise ModelError(f"model '{name}' learns from {where} only, and this is a "
                         f"{'patient table' if source == TABLE else 'event stream'}: choose from "
                         f"{', '.join(model_names(source))}")
    return found


def torch_save(model) -> tuple[dict, dict, dict]:
    """(config, tensors, files) of a torch model with a dataclass `config` (with `to_dict`) and a state dict."""
    return model.config.to_dict(), {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, {}
