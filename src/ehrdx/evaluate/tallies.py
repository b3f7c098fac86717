"""Counts behind the evaluation's metrics, gathered a block of scores at a time.

Each tally takes blocks of an [S, L] table (a block of labels over all samples, or a block of samples over
all labels for recall@k) and keeps only sums and counts, so one reading of the scores can feed several of
them (evaluate/one_pass.py) and a metric computed on its own (evaluate/metrics.py: calibration_sums,
recall_at_ks, threshold metrics) gives the same numbers from the same operations.
"""

from __future__ import annotations

import numpy as np


def nanmean(values: list[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


class CalibrationTally:
    """Over the known elements, per equal-width probability bin: count, sum of probabilities and sum of
    outcomes; and the sum of squared errors (Brier)."""

    def __init__(self, n_bins: int = 10) -> None:
        self.n_bins = n_bins
        self.count, self.sum_p, self.sum_y = np.zeros(n_bins, np.int64), np.zeros(n_bins), np.zeros(n_bins)
        self.squared = 0.0

    def add(self, p: np.ndarray, t: np.ndarray) -> None:
        """Known elements' probabilities and outcomes (1-D float64)."""
        bins = np.minimum((p * self.n_bins).astype(np.int64), self.n_bins - 1)
        self.count += np.bincount(bins, minlength=self.n_bins)
        self.sum_p += np.bincount(bins, weights=p, minlength=self.n_bins)
        self.sum_y += np.bincount(bins, weights=t, minlength=self.n_bins)
        self.squared += float(np.sum((p - t) ** 2))

    def add_block(self, p: np.ndarray, y: np.ndarray, known: np.ndarray) -> None:
        """A block of scores, targets and the known elements (same shapes)."""
        self.add(np.asarray(p, dtype=np.float64)[known], np.asarray(y, dtype=np.float64)[known])

    def sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        return self.count, self.sum_p, self.sum_y, self.squared


class RecallTally:
    """recall@k for several k from one ranking of each sample's known labels, a block of samples at a
    time: the mean over samples with at least one known positive of |top-k known labels ∩ positives| /
    |positives|."""

    def __init__(self, ks) -> None:
        self.ks = list(ks)
        self.totals, self.samples = dict.fromkeys(self.ks, 0.0), 0

    def add(self, pos: np.ndarray, known: np.ndarray, proba: np.ndarray) -> None:
        """A block of samples: known positives, known elements and scores ([n, L] each)."""
        n_pos = pos.sum(1)
        keep = n_pos > 0
        if not keep.any() or not self.ks:
            return
        scores = np.where(known, proba, -np.inf)[keep]
        k_max = min(max(self.ks), scores.shape[1])
        top = np.argpartition(-scores, k_max - 1, axis=1)[:, :k_max]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        hits = np.cumsum(np.take_along_axis(pos[keep], top, axis=1), axis=1)  # hits within the top 1, 2, ...
        for k in self.ks:
            self.totals[k] += float(np.sum(hits[:, min(k, k_max) - 1] / n_pos[keep]))
        self.samples += int(keep.sum())

    def result(self) -> dict[int, float | None]:
        return {k: self.totals[k] / self.samples if self.samples else None for k in self.ks}


class ThresholdTally:
    """Integer counts of the predictions proba >= thr (per label: tp, fp, fn; per sample: tp, predicted
    and true known positives, all known labels right), a block of labels at a time, so the metrics equal
    those of the whole [S, L] tables exactly."""

    def __init__(self, n_samples: int, thresholds: np.ndarray) -> None:
        self.thr = thresholds
        L = len(thresholds)
        self.tp_l, self.fp_l, self.fn_l = np.zeros(L, np.int64), np.zeros(L, np.int64), np.zeros(L, np.int64)
        S = n_samples
        self.tp_s, self.pred_s, self.true_s = np.zeros(S, np.int64), np.zeros(S, np.int64), np.zeros(S, np.int64)
        self.has_known, self.all_right, self.known, self.correct = np.zeros(S, bool), np.ones(S, bool), 0, 0

    def add(self, b: slice, p: np.ndarray, yb: np.ndarray, m: np.ndarray) -> None:
        """Labels `b` over all samples: scores, targets (bool) and known elements."""
        pred = p >= self.thr[None, b]
        hit = pred == yb
        self.known += int(m.sum())
        self.correct += int((hit & m).sum())
        self.tp_l[b], self.fp_l[b], self.fn_l[b] = (pred & yb & m).sum(0), (pred & ~yb & m).sum(0), (~pred & yb & m).sum(0)
        self.tp_s += (pred & yb & m).sum(1)
        self.pred_s += (pred & m).sum(1)
        self.true_s += (yb & m).sum(1)
        self.has_known |= m.any(1)
        self.all_right &= (hit | ~m).all(1)

    def result(self, per_label_ok: np.ndarray) -> dict:
        """The metrics; f1_macro over the labels `per_label_ok` (those with both classes)."""
        tp_l, fp_l, fn_l, known, correct = self.tp_l, self.fp_l, self.fn_l, self.known, self.correct
        tp, fp, fn = tp_l.sum(), fp_l.sum(), fn_l.sum()
        prec_l = np.where(tp_l + fp_l > 0, tp_l / np.maximum(tp_l + fp_l, 1), 0.0)
        rec_l = np.where(tp_l + fn_l > 0, tp_l / np.maximum(tp_l + fn_l, 1), 0.0)
        f1_l = 2 * tp_l / np.maximum(2 * tp_l + fp_l + fn_l, 1)
        # Per-sample F1 over known labels; a sample with no true and no predicted positives scores 1.
        denom_s = self.pred_s + self.true_s
        f1_s = np.where(denom_s > 0, 2 * self.tp_s / np.maximum(denom_s, 1), 1.0)
        has_known = self.has_known
        subset = self.all_right[has_known]
        return {
            "element_accuracy": float(correct / known) if known else None,
            "hamming_loss": float(1 - correct / known) if known else None,
            "subset_accuracy": float(subset.mean()) if subset.size else None,
            "precision_micro": float(tp / (tp + fp)) if tp + fp else 0.0,
            "recall_micro": float(tp / (tp + fn)) if tp + fn else 0.0,
            "f1_micro": float(2 * tp / (2 * tp + fp + fn)) if 2 * tp + fp + fn else 0.0,
            "f1_macro": nanmean([float(f) for f, ok in zip(f1_l, per_label_ok) if ok]),
            "f1_samples": float(f1_s[has_known].mean()) if has_known.any() else None,
            "_per_label": {"precision": prec_l, "recall": rec_l, "f1": f1_l},
        }
