"""One-vs-rest logistic regression over count features (scikit-learn), masked per label.

Each label is fit on the samples where it is known only. A label whose known training samples are all
one class gets a constant at its (clipped) base rate. The fitted weights are plain arrays, saved in
safetensors like every other model.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from ehrdx.data.bits import BitTable, as_table, label_columns
from ehrdx.models.registry import EVENTS, MATRIX, TABLE, ModelKind, register_model


class LogisticBaseline:
    def __init__(self, n_features: int, n_labels: int, C: float = 1.0, max_iter: int = 300) -> None:
        self.C, self.max_iter = C, max_iter
        self.coef = np.zeros((n_labels, n_features), dtype=np.float64)
        self.intercept = np.zeros(n_labels, dtype=np.float64)
        self.config = {"kind": "logistic", "n_features": n_features, "n_labels": n_labels, "C": C,
                       "max_iter": max_iter}

    def fit(self, X: sp.csr_matrix, y: np.ndarray | BitTable, mask: np.ndarray | BitTable,
            seed: int = 0) -> LogisticBaseline:
        """One regression per column of `y` [N, L] over the rows where `mask` is True; packed tables
        (data/bits.py, data/sparse.py) are read a column at a time, never whole."""
        y, mask = as_table(y), as_table(mask, bool)
        for j in range(y.shape[1]):
            m = mask[:, j]
            yj = y[:, j][m] > 0.5
            if m.sum() == 0 or yj.all() or not yj.any():
                p = float(np.clip(yj.mean() if m.any() else 0.5, 1e-4, 1 - 1e-4))
                self.coef[j] = 0.0
                self.intercept[j] = np.log(p / (1 - p))
                continue
            clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X[np.flatnonzero(m)], yj)
            self.coef[j] = clf.coef_[0]
            self.intercept[j] = clf.intercept_[0]
        return self

    def fit_sets(self, train, val=None, seed: int = 0) -> LogisticBaseline:
        """Fit on a MatrixSet (`val` is not needed: no early stopping)."""
        return self.fit(train.X, train.y_bits, train.mask_bits, seed=seed)

    def add_labels(self, train, val=None, n_old: int = 0, seed: int = 0) -> LogisticBaseline:
        """Fit rows for the labels from column `n_old` on; the old labels' rows stay as they are."""
        extra = LogisticBaseline(self.coef.shape[1], train.y_bits.shape[1] - n_old, self.C, self.max_iter)
        extra.fit(train.X, label_columns(train.y_bits, n_old), label_columns(train.mask_bits, n_old), seed=seed)
        self.coef = np.vstack([self.coef, extra.coef])
        self.intercept = np.concatenate([self.intercept, extra.intercept])
        self.config["n_labels"] = len(self.intercept)
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        return self.decision_function(dataset.X)

    def decision_function(self, X: sp.csr_matrix) -> np.ndarray:
        return np.asarray(X @ self.coef.T) + self.intercept[None, :]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef.astype(np.float64), "intercept": self.intercept.astype(np.float64)}

    def load_state_dict(self, state: dict) -> None:
        self.coef = np.asarray(state["coef"], dtype=np.float64)
        self.intercept = np.asarray(state["intercept"], dtype=np.float64)


def _save(model: LogisticBaseline) -> tuple[dict, dict, dict]:
    import torch

    return dict(model.config), {k: torch.from_numpy(v) for k, v in model.state_dict().items()}, {}


def _load(config: dict, state: dict, files: dict) -> LogisticBaseline:
    model = LogisticBaseline(config["n_features"], config["n_labels"], config["C"], config["max_iter"])
    model.load_state_dict({k: v.numpy() for k, v in state.items()})
    return model


register_model(ModelKind(
    "logistic", MATRIX, (TABLE, EVENTS), "one-vs-rest logistic regression on code counts and last values",
    lambda train_set, n_labels, params: LogisticBaseline(train_set.X.shape[1], n_labels), _save, _load, epochs=False,
    per_label=True))
