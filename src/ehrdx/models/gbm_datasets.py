"""The binned LightGBM Datasets of `GBMModel` (models/gbm.py): which columns a label's booster sees
(`screen_columns`, above MAX_FEATURES columns), and Datasets shared by the labels known on the same rows
(`LabelDatasets`)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp


def screen_columns(X: sp.csr_matrix, y: np.ndarray, max_features: int) -> np.ndarray | None:
    """The columns of `X` (a label's known training rows) that its booster sees: all of them (None) up to
    `max_features`; otherwise the `max_features` columns most correlated with the label `y` (squared Pearson
    correlation of sign(x) log(1 + |x|), zeros included, so that counts, days and values are on one footing;
    for a 0/1 column it is the 2 x 2 chi-square over the rows), ties in column order. Sorted indices.
    A NaN entry (a missing patient fact: no birth, no previous visit) counts as the column's mean over its
    other rows, so a column with some unknown rows is scored on the rows it knows (not dropped as NaN)."""
    n, F = X.shape
    if F <= max_features:
        return None
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)
    missing = np.isnan(X.data)
    X.data = np.where(missing, 0.0, np.sign(X.data) * np.log1p(np.abs(X.data)))
    yc = (np.asarray(y) > 0.5).astype(np.float64)
    yc -= yc.mean()
    # the NaN entries as a 0/1 table: per column, how many and the label's sum over them
    nan_at = sp.csr_matrix((missing.astype(np.float64), X.indices, X.indptr), shape=X.shape)
    n_missing = np.asarray(nan_at.sum(axis=0)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.asarray(X.sum(axis=0)).ravel() / (n - n_missing)  # over the known rows; NaN if none
    fill = np.where(n_missing > 0, mean, 0.0)  # what each NaN entry counts as
    var = (np.asarray(X.multiply(X).sum(axis=0)).ravel() + n_missing * fill ** 2) / n - mean ** 2
    cov = (X.T @ yc + fill * (nan_at.T @ yc)) / n  # yc sums to zero, so no mean term
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.nan_to_num(cov ** 2 / (var * float(np.mean(yc ** 2))), nan=0.0, posinf=0.0)
    return np.sort(np.argsort(-score, kind="stable")[:max_features])


class LabelDatasets:
    """The binned training (and tuning) Datasets of one `add_labels` call. Labels known on the same rows
    share them, their labels set per booster; a label with other rows, or with its own screened columns,
    gets Datasets of its own. Holds the last `KEEP` row sets."""

    KEEP = 2

    def __init__(self, data_params: dict, max_features: int) -> None:
        self.data_params = data_params
        self.max_features = max_features
        self.kept: list[tuple[np.ndarray, np.ndarray, lgb.Dataset, lgb.Dataset | None]] = []

    def get(self, X: sp.csr_matrix, rows: np.ndarray, y: np.ndarray, val: sp.csr_matrix | None,
            v_rows: np.ndarray, y_val: np.ndarray | None) -> tuple[lgb.Dataset, lgb.Dataset | None, np.ndarray | None]:
        """(train Dataset, tuning Dataset or None, the screened columns or None) for one label."""
        if X.shape[1] <= self.max_features:  # no screen: the columns do not depend on the label
            for k, (r, vr, sub, vsub) in enumerate(self.kept):
                if np.array_equal(r, rows) and np.array_equal(vr, v_rows):
                    sub.set_label(y)
                    if vsub is not None:
                        vsub.set_label(y_val)
                    self.kept.append(self.kept.pop(k))
                    return sub, vsub, None
        Xj = X[rows]
        cols = screen_columns(Xj, y, self.max_features)
        sub = lgb.Dataset(Xj if cols is None else Xj[:, cols], label=y, params=self.data_params, free_raw_data=True)
        vsub = None
        if len(v_rows):
            Vj = val[v_rows]
            vsub = lgb.Dataset(Vj if cols is None else Vj[:, cols], label=y_val, reference=sub,
                               params=self.data_params, free_raw_data=True)
        if cols is None:
            self.kept = [*self.kept[-(self.KEEP - 1):], (rows, v_rows, sub, vsub)]
        return sub, vsub, cols
