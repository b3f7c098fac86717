"""New label rows for a trained network without moving its body: the states its label head reads, and
logistic regressions on them (linear probing, the first half of LP-FT). Used by `ehrdx update` and by the
auto ensemble's sequence member.

A label may come with a starting row (a model that came from a pretrained encoder keeps the encoder's
next-visit output rows, and a label defined by pretrained codes starts from the mean of their rows): its
regression then starts from that row and its L2 penalty pulls towards it instead of towards zero (a prior
centred on what pretraining learned), which is what lets a few dozen positives move it only as far as they
support. Labels without a starting row are fit as before (scikit-learn, penalty towards zero).
"""

from __future__ import annotations

import numpy as np
import torch

from ehrdx.models.baselines import LogisticBaseline
from ehrdx.train.loop import predict_logits

PROBE_C = 1.0  # inverse L2 strength, as scikit-learn's C: sum of losses + |w - w0|^2 / (2 C)
PROBE_ITERATIONS = 300


def sample_states(model, dataset) -> np.ndarray:
    """[S, H] the state the label head reads, for every sample (in sample order)."""
    if len(dataset) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return predict_logits(model, dataset, forward=model.states)


def probe_rows(model, dataset, y: np.ndarray, mask: np.ndarray, seed: int = 0,
               start: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """New label rows fit by logistic regression on the frozen model's states (linear probing, the first
    half of LP-FT): the best a row can do before the body moves at all. `start` = (rows [k, H], bias [k],
    found [k] bool): the labels found start from their row and are pulled towards it (`fit_from_start`)."""
    H = sample_states(model, dataset)
    y, mask = np.asarray(y), np.asarray(mask, dtype=bool)
    found = np.zeros(y.shape[1], bool) if start is None else start[2].numpy().astype(bool)
    rows, bias = torch.zeros(y.shape[1], H.shape[1]), torch.zeros(y.shape[1])
    if (~found).any():
        fit = LogisticBaseline(H.shape[1], int((~found).sum()), C=PROBE_C).fit(H, y[:, ~found], mask[:, ~found],
                                                                               seed=seed)
        rows[~found] = torch.from_numpy(fit.coef.astype(np.float32))
        bias[~found] = torch.from_numpy(fit.intercept.astype(np.float32))
    if found.any():
        w, b = fit_from_start(H, y[:, found], mask[:, found], start[0][found], start[1][found])
        rows[found], bias[found] = w, b
    return rows, bias


def fit_from_start(H: np.ndarray, y: np.ndarray, mask: np.ndarray, rows0: torch.Tensor, bias0: torch.Tensor,
                   C: float = PROBE_C, max_iter: int = PROBE_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regressions of each column of `y` on the states `H`, over its known samples (`mask`):
    minimise the sum of their log losses + |w - w0|^2 / (2 C) (the bias is not penalised), by L-BFGS started
    at (w0, b0). Labels are independent, so all are fit at once. Returns (rows [k, D], bias [k])."""
    X = torch.from_numpy(np.ascontiguousarray(H, dtype=np.float32))
    Y = torch.from_numpy((np.asarray(y) > 0.5).astype(np.float32))
    M = torch.from_numpy(np.asarray(mask, dtype=bool))
    w0 = rows0.detach().float().clone()
    w = w0.clone().requires_grad_(True)
    b = bias0.detach().float().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w.T + b, Y, reduction="none")
        value = torch.where(M, loss, 0.0).sum() + ((w - w0) ** 2).sum() / (2 * C)
        value.backward()
        return value

    if len(X):
        opt.step(objective)
    return w.detach(), b.detach()
