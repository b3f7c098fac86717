"""Fit any model of the registry on its training set, and get its logits: a network through the training
loop (label biases started at the training prevalence), any other model through its own `fit_sets`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ehrdx.data.bits import label_counts, label_tables
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
    t0 = time.perf_counter()
    model.fit_sets(train_set, val_set, seed=config.seed)
    seconds = time.perf_counter() - t0
    n = len(next(iter(train_set.values()))) if isinstance(train_set, dict) else len(train_set)
    return TrainHistory(epochs_run=1, seconds=seconds, samples_per_second=n / max(seconds, 1e-9))


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
        x = logits[r0 : r0 + rows].astype(np.float64)
        logits[r0 : r0 + rows] = 1.0 / (1.0 + np.exp(-x))
    return logits
