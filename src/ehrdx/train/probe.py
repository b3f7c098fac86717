"""New label rows for a trained network without moving its body: the states its label head reads, and
logistic regressions on them (linear probing, the first half of LP-FT). Used by `ehrdx update` and by the
auto ensemble's sequence member.

A label may come with a starting row (a model that came from a pretrained encoder keeps the encoder's
next-visit output rows, and a label defined by pretrained codes starts from the mean of their rows): its
regression then starts from that row and its L2 penalty pulls towards it instead of towards zero (a prior
centred on what pretraining learned), which is what lets a few dozen positives move it only as far as they
support. Labels without a starting row are fit as before (scikit-learn, penalty towards zero).

How strong the penalty is matters most when a label has few positive patients: with 4 of them (a few
prediction times) in a state of 128 numbers, a weak penalty (C = 1) separates those few from every negative
along directions particular to them, and on the Eunomia few-shot benchmark the test AUROC fell below chance
(0.41 for E. coli UTI at k = 4, where C = 0.01 reached 0.67). Given validation samples (`probe_rows_on_path`),
each label's C is chosen from PROBE_PATH by its validation AUROC; the default PROBE_C stays unless another C
beats it there by more than PROBE_MARGIN (a few validation positives make that AUROC noisy: on the same
benchmark, the best validation AUROC alone lost 0.026 at k = 32 where the margin kept C = 1), and a label
whose validation samples lack a positive or a negative keeps PROBE_C.
"""

from __future__ import annotations

import numpy as np
import torch

from ehrdx.models.baselines import LogisticBaseline
from ehrdx.ranking import binary_ranking
from ehrdx.train.loop import predict_logits

PROBE_C = 1.0  # inverse L2 strength, as scikit-learn's C: sum of losses + |w - w0|^2 / (2 C)
PROBE_PATH = (1e-3, 1e-2, 1e-1, 1.0)  # the strengths chosen from on validation samples, strongest first
PROBE_MARGIN = 0.02  # validation AUROC by which another C must beat PROBE_C to be chosen (few positives: noise)
PROBE_ITERATIONS = 300

Start = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # rows [k, H], bias [k], found [k] bool


def sample_states(model, dataset) -> np.ndarray:
    """[S, H] the state the label head reads, for every sample (in sample order)."""
    if len(dataset) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return predict_logits(model, dataset, forward=model.states)


def probe_rows(model, dataset, y: np.ndarray, mask: np.ndarray, seed: int = 0, start: Start | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """New label rows fit by logistic regression on the frozen model's states (linear probing, the first
    half of LP-FT), with the penalty PROBE_C: the best a row can do before the body moves at all. `start`:
    the labels found start from their row and are pulled towards it (`fit_from_start`)."""
    return fit_rows(sample_states(model, dataset), y, mask, seed, start, PROBE_C)


def probe_rows_on_path(model, dataset, y: np.ndarray, mask: np.ndarray, val_dataset, val_y: np.ndarray,
                       val_mask: np.ndarray, seed: int = 0, start: Start | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """`probe_rows` with each label's penalty chosen on the validation samples (`choose_on_path`): (rows,
    bias, the C of each label)."""
    H, Hv = sample_states(model, dataset), sample_states(model, val_dataset)
    return choose_on_path(H, y, mask, Hv, val_y, val_mask, seed, start)


def probe_new_rows(model, dataset, y: np.ndarray, mask: np.ndarray, val=None, seed: int = 0,
                   start: Start | None = None) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """New label rows by linear probing, as `ehrdx update` adds them: with validation samples `val`
    ((dataset, y, mask), non-empty) each label's penalty chosen on them (`probe_rows_on_path`), without them
    PROBE_C for every label. (rows, bias, the C of each label)."""
    if val is not None and len(val[0]):
        return probe_rows_on_path(model, dataset, y, mask, *val, seed=seed, start=start)
    rows, bias = probe_rows(model, dataset, y, mask, seed=seed, start=start)
    return rows, bias, [PROBE_C] * np.shape(y)[1]


def choose_on_path(H: np.ndarray, y: np.ndarray, mask: np.ndarray, Hv: np.ndarray, val_y: np.ndarray,
                   val_mask: np.ndarray, seed: int = 0, start: Start | None = None,
                   path: tuple[float, ...] = PROBE_PATH) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Fit every label's row at each C of `path` on the states `H` and keep, per label, the one whose scores
    of the validation states `Hv` have the best AUROC over its known validation samples (ties: the smaller
    C, the stronger penalty) where it beats PROBE_C's by more than PROBE_MARGIN, else PROBE_C's; a label
    without a validation positive and negative gets PROBE_C."""
    path = tuple(sorted({*path, PROBE_C}))  # ascending: np.argmax keeps the first best, the stronger penalty
    fits = [fit_rows(H, y, mask, seed, start, C) for C in path]
    val_y, val_mask = np.asarray(val_y) > 0.5, np.asarray(val_mask, dtype=bool)
    Xv = torch.from_numpy(np.ascontiguousarray(Hv, dtype=np.float32))
    rows, bias, chosen = fits[0][0].clone(), fits[0][1].clone(), []
    for j in range(val_y.shape[1]):
        pos, neg = val_mask[:, j] & val_y[:, j], val_mask[:, j] & ~val_y[:, j]
        best = default = path.index(PROBE_C)
        if pos.any() and neg.any():
            scores = [(Xv @ w[j] + b[j]).numpy() for w, b in fits]
            aurocs = [binary_ranking(s[pos], s[neg])[0] for s in scores]
            if max(aurocs) > aurocs[default] + PROBE_MARGIN:
                best = int(np.argmax(aurocs))
        rows[j], bias[j] = fits[best][0][j], fits[best][1][j]
        chosen.append(float(path[best]))
    return rows, bias, chosen


def fit_rows(H: np.ndarray, y: np.ndarray, mask: np.ndarray, seed: int = 0, start: Start | None = None,
             C: float = PROBE_C) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regressions of each column of `y` on the states `H` over its known samples, with penalty C:
    towards zero (scikit-learn), or towards its starting row where `start` found one (`fit_from_start`)."""
    y, mask = np.asarray(y), np.asarray(mask, dtype=bool)
    found = np.zeros(y.shape[1], bool) if start is None else start[2].numpy().astype(bool)
    rows, bias = torch.zeros(y.shape[1], H.shape[1]), torch.zeros(y.shape[1])
    if (~found).any():
        fit = LogisticBaseline(H.shape[1], int((~found).sum()), C=C).fit(H, y[:, ~found], mask[:, ~found], seed=seed)
        rows[~found] = torch.from_numpy(fit.coef.astype(np.float32))
        bias[~found] = torch.from_numpy(fit.intercept.astype(np.float32))
    if found.any():
        w, b = fit_from_start(H, y[:, found], mask[:, found], start[0][found], start[1][found], C=C)
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
