"""Fit any model of the registry on its training set, and get its logits: a network through the training
loop (label biases started at the training prevalence), any other model through its own `fit_sets`.

Checkpoints (`checkpoint`, `resume`): a network saves one after every epoch (train/checkpoint.py); a model
that fits itself in one go (gbm, logistic) saves itself once fitted (`FittedCheckpoint`), so a resumed run
reads it back instead of fitting it again; a model with members (`auto`) checkpoints each member in its own
subfolder (its `fit_sets` takes `checkpoint` and `resume`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ehrdx.data.bits import label_counts, label_tables
from ehrdx.models.registry import get_model
from ehrdx.ranking import sigmoid
from ehrdx.train.checkpoint import FittedCheckpoint, data_fingerprint
from ehrdx.train.distributed import is_main
from ehrdx.train.loop import TrainConfig, TrainHistory, predict_logits, train_model


def fit_model(model, train_set, val_set, config: TrainConfig,
              on_epoch: Callable[[int, float, float | None], None] | None = None,
              checkpoint: str | Path | None = None, resume: bool = False) -> TrainHistory:
    """Train `model` in place on `train_set` (early stopping on `val_set`); the history of the run."""
    if isinstance(model, nn.Module):
        positives, known = label_counts(*label_tables(train_set))  # from packed bits: no dense [N, L] copy
        prevalence = positives / np.maximum(known, 1)
        model.head.set_bias_from_prevalence(torch.from_numpy(np.asarray(prevalence, dtype=np.float32)))
        return train_model(model, train_set, val_set, config, on_epoch, checkpoint=checkpoint, resume=resume)
    if getattr(model, "has_members", False):  # the ensemble: its members train (and checkpoint) one by one
        return model.fit_sets(train_set, val_set, seed=config.seed, on_epoch=on_epoch, checkpoint=checkpoint,
                              resume=resume).history
    t0 = time.perf_counter()
    resumed = None
    if checkpoint is None:
        model.fit_sets(train_set, val_set, seed=config.seed)
    else:
        resumed = 1 if fit_or_restore(model, train_set, val_set, config, checkpoint, resume) else None
    seconds = time.perf_counter() - t0
    n = len(next(iter(train_set.values()))) if isinstance(train_set, dict) else len(train_set)
    return TrainHistory(epochs_run=1, seconds=seconds, samples_per_second=n / max(seconds, 1e-9),
                        resumed_after_epoch=resumed)


def fitted_fingerprint(model, train_set, val_set, config: TrainConfig) -> dict:
    """What a fitted model that fits itself depends on: its registry name and settings (`hyperparameters`
    where it has them, else its config), the seed, and the training and validation targets."""
    settings = model.hyperparameters if hasattr(model, "hyperparameters") else model.config
    return {"model": model.config["kind"], "settings": settings, "seed": config.seed,
            "data": data_fingerprint(train_set, val_set)}


def fit_or_restore(model, train_set, val_set, config: TrainConfig, checkpoint: str | Path, resume: bool) -> bool:
    """Fit `model` (one that fits itself) and keep it in `checkpoint`; or, resuming with a checkpoint of the
    same run there, read it back instead (the registry's load; the caller's object takes its state). Returns
    whether it was read back. Under torchrun only rank 0 writes; every rank reads."""
    spec = get_model(model.config["kind"])
    ckpt = FittedCheckpoint(checkpoint, fitted_fingerprint(model, train_set, val_set, config))
    if resume and ckpt.exists():
        # The registry builds a new object; the caller (estimator, ensemble) holds this one: it takes the state.
        vars(model).update(vars(spec.load(*ckpt.load())))
        return True
    if is_main():
        ckpt.clear()  # a fresh fit: an older checkpoint must not be read later by mistake
    model.fit_sets(train_set, val_set, seed=config.seed)
    if is_main():
        ckpt.save(*spec.save(model))
    return False


def model_logits(model, dataset, dtype=np.float64) -> np.ndarray:
    """Logits [N, L] of `model` for every sample of `dataset` (in sample order); a network's come as
    float32, so `dtype=np.float32` takes them without a copy."""
    if isinstance(model, nn.Module):
        return np.asarray(predict_logits(model, dataset), dtype=dtype)
    return np.asarray(model.predict_logits(dataset), dtype=dtype)


def sigmoid_(logits: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """Probabilities from float32 logits, written over them (no second [N, L] array) and returned: each
    computed in float64, a block of rows at a time, and rounded once to float32, so a logit gives the same
    probability wherever it sits (vectorised float32 kernels may differ from their scalar tails in the
    last bit) and what float64 probabilities gave, to float32's precision."""
    rows = max(1, block // max(logits.shape[1], 1)) if logits.ndim == 2 else len(logits)
    for r0 in range(0, len(logits), rows):
        logits[r0 : r0 + rows] = sigmoid(logits[r0 : r0 + rows].astype(np.float64))
    return logits
