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


def bin_edges(n_bins: int, dtype) -> np.ndarray:
    """The least value of `dtype` in each equal-width probability bin 1..n_bins-1, bins as CalibrationTally
    counts them (min(int(p * n_bins), n_bins - 1) in float64): p is in bin k or above exactly when
    p >= edge k, so a search of sorted probabilities finds the bins."""
    edges = []
    for k in range(1, n_bins):
        e = np.float64(k / n_bins)
        while int(np.nextafter(e, -np.inf) * n_bins) >= k:
            e = np.nextafter(e, -np.inf)
        while int(e * n_bins) < k:
            e = np.nextafter(e, np.inf)
        edges.append(e)
    edges = np.array(edges, np.float64)
    if np.dtype(dtype) == np.float32:  # the least float32 at or above each (at_least)
        e32 = edges.astype(np.float32)
        return np.where(e32.astype(np.float64) < edges, np.nextafter(e32, np.float32(np.inf)), e32)
    return edges


class CalibrationTally:
    """Over the known elements, per equal-width probability bin: count, sum of probabilities and sum of
    outcomes; and the sum of squared errors (Brier)."""

    def __init__(self, n_bins: int = 10) -> None:
        self.n_bins = n_bins
        self.count, self.sum_p, self.sum_y = np.zeros(n_bins, np.int64), np.zeros(n_bins), np.zeros(n_bins)
        self.squared = 0.0
        self._edges = None

    def add(self, p: np.ndarray, t: np.ndarray) -> None:
        """Known elements' probabilities and outcomes (1-D float64)."""
        bins = self._bins(p)
        self.sum_y += np.bincount(bins, weights=t, minlength=self.n_bins)
        self.squared += float(np.sum((p - t) ** 2))

    def _bins(self, p: np.ndarray) -> np.ndarray:
        bins = (p * self.n_bins).astype(np.int64)
        np.minimum(bins, self.n_bins - 1, out=bins)
        self.count += np.bincount(bins, minlength=self.n_bins)
        self.sum_p += np.bincount(bins, weights=p, minlength=self.n_bins)
        return bins

    def add_block(self, p: np.ndarray, y: np.ndarray, known: np.ndarray) -> None:
        """A block of scores, targets and the known elements (same shapes). Yes/no targets: the outcomes'
        sums count the positives (sums of ones: exact), and the squared errors are the same numbers
        (p - 1 where positive, p where not) summed in the same order as add's."""
        if y.dtype != bool:
            self.add(np.asarray(p, dtype=np.float64)[known], np.asarray(y, dtype=np.float64)[known])
            return
        d = np.asarray(p)[known].astype(np.float64)
        t = y[known]
        bins = self._bins(d)
        self.sum_y += np.bincount(bins[t], minlength=self.n_bins)
        d[t] -= 1.0
        d *= d
        self.squared += float(np.sum(d))

    def add_sorted(self, x: np.ndarray, outcome: float) -> None:
        """Known elements' probabilities, sorted, all with the same outcome (1 or 0): the bins are ranges
        found by a search for each bin's least probability (bin_edges), the sums over each range; the
        same counts as add's, the float sums in another order (within rounding: ~1e-16 relative)."""
        if not len(x):
            return
        if self._edges is None or self._edges.dtype != x.dtype:
            self._edges = bin_edges(self.n_bins, x.dtype)
        at = np.empty(self.n_bins + 1, np.int64)
        at[0], at[-1] = 0, len(x)
        at[1:-1] = np.searchsorted(x, self._edges, side="left")
        n = np.diff(at)
        self.count += n
        x = x.astype(np.float64, copy=False)
        full = n > 0
        self.sum_p[full] += np.add.reduceat(x, at[:-1][full])
        if outcome:
            self.sum_y += n * outcome
            x = x - outcome
        self.squared += float(np.dot(x, x))

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


NARROW = 16  # blocks of at most this many labels are summed a column at a time (numpy's reductions along
# a short axis cost several times more per entry)


def count_per_row(a: np.ndarray) -> np.ndarray:
    """True entries of each row of a 2-D bool array, int32."""
    u = a.view(np.uint8)
    if a.shape[1] > NARROW:
        return np.add.reduce(u, axis=1, dtype=np.int32)
    out = np.zeros(a.shape[0], np.int32)
    for j in range(a.shape[1]):
        out += u[:, j]
    return out


def count_per_column(a: np.ndarray) -> np.ndarray:
    """True entries of each column of a 2-D bool array, int64."""
    if a.shape[1] > NARROW:
        return np.add.reduce(a.view(np.uint8), axis=0, dtype=np.int64)
    return np.array([np.count_nonzero(a[:, j]) for j in range(a.shape[1])], np.int64)


def at_least(p: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """p >= thr (thr float64, broadcast over p's rows), as numpy compares them (p's values as float64), but
    for float32 scores against float32 thresholds: the least float32 at or above each threshold, which no
    float32 score passes unless its float64 value does (a float32 comparison costs less than a float64
    one)."""
    if p.dtype == np.float32:
        t32 = thr.astype(np.float32)
        t32 = np.where(t32.astype(np.float64) < thr, np.nextafter(t32, np.float32(np.inf)), t32)
        return p >= t32
    return p >= thr


class ThresholdTally:
    """Integer counts of the predictions proba >= thr, a block of labels at a time: per label the true,
    predicted and true predicted known positives, per sample the same, so the metrics equal those of the
    whole [S, L] tables exactly. Only the predicted positives need a dense count; the true positives
    (few) are counted from their places, and the rest follows: tp, fp = predicted - tp, fn = true - tp;
    the known elements right are the known ones less fp and fn; a sample has all its known labels right
    when its predicted and true positives are all true predicted ones."""

    def __init__(self, n_samples: int, thresholds: np.ndarray) -> None:
        self.thr = np.asarray(thresholds, dtype=np.float64)
        L, S = len(self.thr), n_samples
        self.tp_l, self.pred_l, self.true_l = np.zeros(L, np.int64), np.zeros(L, np.int64), np.zeros(L, np.int64)
        self.tp_s, self.pred_s, self.true_s = np.zeros(S, np.int32), np.zeros(S, np.int32), np.zeros(S, np.int32)
        self.has_known, self.known = np.zeros(S, bool), 0

    def add(self, b: slice, p: np.ndarray, yb: np.ndarray, m: np.ndarray, pred: np.ndarray | None = None,
            pos_at: np.ndarray | None = None, rows_known: np.ndarray | None = None) -> None:
        """Labels `b` over all samples: scores, targets (bool) and known elements; `pred` (at_least(p,
        thresholds)), `pos_at` (flat places of the known positives, yb & m) and `rows_known` (whether each
        sample has a known label in the block) where the caller has them."""
        n_lab = p.shape[1]
        pred = at_least(p, self.thr[b]) if pred is None else pred
        pos_at = np.flatnonzero(yb & m) if pos_at is None else pos_at
        r, c = pos_at // n_lab, pos_at % n_lab
        hit = at_least(p[r, c][:, None], self.thr[b][c][:, None])[:, 0]
        self.true_l[b] += np.bincount(c, minlength=n_lab)
        self.tp_l[b] += np.bincount(c[hit], minlength=n_lab)
        np.add.at(self.true_s, r, 1)
        np.add.at(self.tp_s, r[hit], 1)
        pm = pred & m
        self.pred_l[b] += count_per_column(pm)
        self.pred_s += count_per_row(pm)
        self.has_known |= count_per_row(m) > 0 if rows_known is None else rows_known
        self.known += int(np.count_nonzero(m))

    def result(self, per_label_ok: np.ndarray) -> dict:
        """The metrics; f1_macro over the labels `per_label_ok` (those with both classes)."""
        tp_l = self.tp_l
        fp_l, fn_l = self.pred_l - tp_l, self.true_l - tp_l
        tp, fp, fn, known = int(tp_l.sum()), int(fp_l.sum()), int(fn_l.sum()), self.known
        correct = known - fp - fn
        prec_l = np.where(tp_l + fp_l > 0, tp_l / np.maximum(tp_l + fp_l, 1), 0.0)
        rec_l = np.where(tp_l + fn_l > 0, tp_l / np.maximum(tp_l + fn_l, 1), 0.0)
        f1_l = 2 * tp_l / np.maximum(2 * tp_l + fp_l + fn_l, 1)
        tp_s, pred_s, true_s = self.tp_s.astype(np.int64), self.pred_s.astype(np.int64), self.true_s.astype(np.int64)
        # Per-sample F1 over known labels; a sample with no true and no predicted positives scores 1.
        denom_s = pred_s + true_s
        f1_s = np.where(denom_s > 0, 2 * tp_s / np.maximum(denom_s, 1), 1.0)
        has_known = self.has_known
        subset = ((pred_s == tp_s) & (true_s == tp_s))[has_known]
        return {
            "element_accuracy": float(correct / known) if known else None,
            "hamming_loss": float(1 - correct / known) if known else None,
            "subset_accuracy": float(subset.mean()) if subset.size else None,
            # nothing known (no sample scored) is no evidence of zero precision: said as not computed
            "precision_micro": (float(tp / (tp + fp)) if tp + fp else 0.0) if known else None,
            "recall_micro": (float(tp / (tp + fn)) if tp + fn else 0.0) if known else None,
            "f1_micro": (float(2 * tp / (2 * tp + fp + fn)) if 2 * tp + fp + fn else 0.0) if known else None,
            "f1_macro": nanmean([float(f) for f, ok in zip(f1_l, per_label_ok) if ok]),
            "f1_samples": float(f1_s[has_known].mean()) if has_known.any() else None,
            "_per_label": {"precision": prec_l, "recall": rec_l, "f1": f1_l},
        }
