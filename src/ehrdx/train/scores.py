"""Probabilities of every label for every sample, as an array or, when that table would be large, as
scores computed when read (ranking.HeadScores: the patient states and the label head).

A sequence model's output is a linear label head over its patient state, so an evaluation of S prediction
times x L labels can keep the states [S, H] (H = 128 by default) and compute any block of scores from
them, instead of holding [S, L] probabilities: at 1,500 labels that is 12x less memory, and it does not
grow with the labels. Other models (gbm, auto, mlp on tables) give their table.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ehrdx.ranking import HeadScores
from ehrdx.train.fit import model_logits, sigmoid_
from ehrdx.train.probe import sample_states

DENSE_LIMIT = 1 << 25  # entries (128 MB of float32) above which a sequence model's scores stay lazy


def model_scores(model, dataset, dense_limit: int | None = None):
    """Probabilities [N, L] of `model` for every sample of `dataset` (sample order): predict_samples' float32
    array, or HeadScores where `model` reads out a label head from patient states (`states`, `head`) and
    N x L is above `dense_limit` (DENSE_LIMIT)."""
    limit = DENSE_LIMIT if dense_limit is None else dense_limit
    head = getattr(model, "head", None)
    if isinstance(model, nn.Module) and hasattr(model, "states") and head is not None \
            and len(dataset) * head.n_labels > limit:
        states = sample_states(model, dataset)
        with torch.no_grad():
            rows = head.rows().float().cpu().numpy()
            bias = head(torch.zeros(1, head.state_dim, device=rows_device(head))).float().cpu().numpy()[0]
        if len(states) == 0:
            states = np.zeros((0, head.state_dim), np.float32)
        return HeadScores(states, rows, bias)
    return model_probabilities(model, dataset)


def model_probabilities(model, dataset) -> np.ndarray:
    """Probabilities [N, L] of every label for every sample (float32; the sigmoid written over the logits:
    at 1,500 labels the [N, L] table is the largest array of a prediction)."""
    return sigmoid_(model_logits(model, dataset, dtype=np.float32))


def rows_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
