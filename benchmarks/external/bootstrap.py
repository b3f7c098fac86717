"""Macro and micro AUROC / AUPRC, all labels and new onset, with bootstrap intervals over patients.

The metrics are weighted (a patient drawn k times weighs k), computed for all draws at once from one
sort per label: AUROC as the area under the weighted ROC curve (trapezoids; ties share one point) and
AUPRC as average precision, sum of (R_k - R_k-1) * P_k over distinct scores, as scikit-learn does.
With unit weights both equal scikit-learn's roc_auc_score and average_precision_score.
"""

from __future__ import annotations

import warnings

import numpy as np

from ehrdx.data.samples import Samples


def curves(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true and false positives at each distinct score, highest first: two [draws, points]."""
    order = np.argsort(-score, kind="mergesort")
    y, score, w = y[order].astype(bool), score[order], w[:, order]
    ends = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tp = np.cumsum(w * y, axis=1)[:, ends]
    fp = np.cumsum(w * ~y, axis=1)[:, ends]
    return tp, fp


def auroc_auprc(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[draws] AUROC and AUPRC; NaN where a draw has no positive or no negative weight."""
    if len(y) == 0:
        return np.full(len(w), np.nan), np.full(len(w), np.nan)
    tp, fp = curves(y, score, w)
    P, N = tp[:, -1:], fp[:, -1:]
    ok = (P[:, 0] > 0) & (N[:, 0] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([np.zeros_like(P), tp / P], axis=1)
        fpr = np.concatenate([np.zeros_like(N), fp / N], axis=1)
        auroc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        recall = np.concatenate([np.zeros_like(P), tp / P], axis=1)
        auprc = np.sum(np.diff(recall, axis=1) * precision, axis=1)
    return np.where(ok, auroc, np.nan), np.where(ok, auprc, np.nan)


def metric_draws(y: np.ndarray, mask: np.ndarray, proba: np.ndarray, w: np.ndarray, chunk: int = 25) -> dict:
    """[draws] macro/micro AUROC/AUPRC; `w` [draws, samples]."""
    per_label = [auroc_auprc(y[mask[:, j], j] > 0.5, proba[mask[:, j], j], w[:, mask[:, j]])
                 for j in range(y.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw where no label is defined: NaN
        out = {"macro_auroc": np.nanmean(np.stack([a for a, _ in per_label], 1), axis=1),
               "macro_auprc": np.nanmean(np.stack([b for _, b in per_label], 1), axis=1)}
    flat_y, flat_p = y[mask] > 0.5, proba[mask]
    sample_of = np.nonzero(mask)[0]
    parts = [auroc_auprc(flat_y, flat_p, w[i:i + chunk][:, sample_of]) for i in range(0, len(w), chunk)]
    out["micro_auroc"] = np.concatenate([a for a, _ in parts])
    out["micro_auprc"] = np.concatenate([b for _, b in parts])
    return out


def patient_weights(rows: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """[1 + draws, samples]: unit weights, then `draws` resamplings of the patients with replacement."""
    patients, inverse = np.unique(rows, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients))
                       for _ in range(draws)]) if draws else np.zeros((0, len(patients)))
    return np.concatenate([np.ones((1, len(rows))), counts[:, inverse]]).astype(np.float64)


def evaluate(samples: Samples, proba: np.ndarray, weights: np.ndarray) -> tuple[dict, dict]:
    """({all, new_onset} -> metric -> {value, ci_low, ci_high}: a 95% percentile interval over the draws,
    and the raw draws, [1 + draws] per metric, for paired differences between models (`difference`)."""
    out, draws = {}, {}
    for name, mask in (("all", samples.mask), ("new_onset", samples.mask & ~samples.history)):
        d = metric_draws(samples.y, mask, proba, weights)
        out[name] = {k: summarise(v) for k, v in d.items()}
        out[name]["known"] = int(mask.sum())
        out[name]["positives"] = int(((samples.y > 0.5) & mask).sum())
        draws[name] = d
    return out, draws


def summarise(v: np.ndarray) -> dict:
    """The point value (first entry, unit weights) and the 2.5 and 97.5 percentiles of the draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric undefined in every draw
        lo, hi = (np.nanpercentile(v[1:], 2.5), np.nanpercentile(v[1:], 97.5)) if len(v) > 1 else (None, None)
    return {"value": _r(v[0]), "ci_low": _r(lo), "ci_high": _r(hi)}


def difference(a: dict, b: dict) -> dict:
    """Model a minus model b on the same draws (paired): {all, new_onset} -> metric -> value and interval."""
    return {name: {k: summarise(a[name][k] - b[name][k]) for k in a[name]} for name in a}


def _r(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)
