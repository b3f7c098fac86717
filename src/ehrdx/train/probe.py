"""New label rows for a trained network without moving its body: the states its label head reads, and
logistic regressions on them (linear probing, the first half of LP-FT). Used by `ehrdx update` and by the
auto ensemble's sequence member."""

from __future__ import annotations

import numpy as np
import torch

from ehrdx.models.baselines import LogisticBaseline
from ehrdx.train.device import device_batches
from ehrdx.train.loop import model_device


@torch.no_grad()
def sample_states(model, dataset) -> np.ndarray:
    """[S, H] the state the label head reads, for every sample (in sample order)."""
    model.eval()
    out = None
    device = model_device(model)
    for batch in device_batches(dataset.batches(512), device):
        h = model.states(batch).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(dataset), h.shape[1]), dtype=np.float32)
        out[batch.sample_index.cpu().numpy()] = h
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def probe_rows(model, dataset, y: np.ndarray, mask: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """New label rows fit by logistic regression on the frozen model's states (linear probing, the first
    half of LP-FT): the best a row can do before the body moves at all."""
    H = sample_states(model, dataset)
    fit = LogisticBaseline(H.shape[1], y.shape[1], C=1.0).fit(H, y, mask, seed=seed)
    return torch.from_numpy(fit.coef.astype(np.float32)), torch.from_numpy(fit.intercept.astype(np.float32))
