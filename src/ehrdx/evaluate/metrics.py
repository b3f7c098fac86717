"""Multi-label metrics that respect the label mask.

Only known (unmasked) elements count anywhere. A label with no positives (or no negatives) among its
known elements in the evaluated set has no AUROC/AUPRC/F1: it is reported as such and left out of
macro averages rather than turning them into NaN.
"""

from __future__ import annotations

import numpy as np

from ehrdx.data.samples import Samples
from ehrdx.evaluate.one_pass import evaluate_once
from ehrdx.evaluate.tallies import CalibrationTally, RecallTally, ThresholdTally
from ehrdx.ranking import (
    HeadScores,
    LabelRanking,
    block_elements,
    label_blocks,
    label_ranking,
    macro_of,
    pooled_ranking,
)

K_VALUES = (5, 10, 20)  # recall@k reported for event streams
VISIT_BINS = ((1, 1), (2, 2), (3, 4), (5, 9), (10, None))  # prior visits, inclusive; None: no upper end
HEADLINE = ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "f1_micro")
BOOTSTRAP_DRAWS = 200  # resamplings of the patients behind a per-label interval (the HTML report's)


def tune_thresholds(y: np.ndarray, mask: np.ndarray, proba: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-label threshold that maximises F1 on (validation) data; `default` where a label has no positives.
    The grid is 0.01, 0.02, ..., 0.99 (the first best on ties); all labels are counted at once, a block of
    labels at a time: each known score falls in one grid interval, and the counts above each grid point
    are cumulative sums of those interval counts."""
    grid = np.linspace(0.01, 0.99, 99)
    out = np.full(y.shape[1], default, dtype=np.float64)
    for b in label_blocks(len(y), y.shape[1], block_elements(proba)):
        p = np.asarray(proba[:, b], dtype=np.float64)
        known = np.asarray(mask[:, b], dtype=bool)
        pos = (np.asarray(y[:, b]) > 0.5) & known
        n = p.shape[1]
        # p >= grid[k] exactly when k < searchsorted(grid, p, "right"): interval 0..99 (nan: never above)
        interval = np.where(np.isnan(p), 0, np.searchsorted(grid, p, side="right")) + 100 * np.arange(n)
        above = [np.cumsum(np.bincount(interval[sel], minlength=100 * n).reshape(n, 100)[:, ::-1], axis=1)[:, ::-1]
                 for sel in (pos, known & ~pos)]
        tp, fp = above[0][:, 1:], above[1][:, 1:]  # [n, 99]: known positives / negatives >= grid[k]
        n_pos = above[0][:, 0]
        f1 = 2 * tp / np.maximum(2 * tp + fp + (n_pos[:, None] - tp), 1)
        out[b] = np.where(n_pos > 0, grid[np.argmax(f1, axis=1)], default)
    return out


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """ECE over the given (known) elements with equal-width probability bins."""
    if len(y) == 0:
        return float("nan")
    bins = np.minimum((proba * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=proba, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    nz = count > 0
    return float(np.sum(np.abs(sum_p[nz] - sum_y[nz])) / len(y))


def calibration_sums(y: np.ndarray, mask: np.ndarray, proba: np.ndarray, n_bins: int = 10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Over the known elements, per equal-width probability bin: count, sum of probabilities and sum of
    outcomes; and the sum of squared errors (Brier). A block of labels at a time (no pooled copies)."""
    tally = CalibrationTally(n_bins)
    for b in label_blocks(len(proba), np.shape(proba)[1], block_elements(proba)):
        tally.add_block(proba[:, b], y[:, b], np.asarray(mask[:, b], dtype=bool))
    return tally.sums()


def recall_at_ks(y: np.ndarray, mask: np.ndarray, proba: np.ndarray, ks, rows: int = 4096) -> dict[int, float | None]:
    """recall@k for several k from one ranking (`rows` samples at a time): the mean over samples with at
    least one known positive of |top-k known labels ∩ positives| / |positives|."""
    tally = RecallTally(ks)
    for r0 in range(0, len(y), rows):
        known = np.asarray(mask[r0:r0 + rows], dtype=bool)
        tally.add((np.asarray(y[r0:r0 + rows]) > 0.5) & known, known, np.asarray(proba[r0:r0 + rows]))
    return tally.result()


def recall_at_k(y: np.ndarray, mask: np.ndarray, proba: np.ndarray, k: int, rows: int = 4096) -> float | None:
    """Mean over samples with at least one known positive of |top-k known labels ∩ positives| / |positives|."""
    return recall_at_ks(y, mask, proba, [k], rows)[k]


def _threshold_metrics(y, mask, proba: np.ndarray, thr: np.ndarray, per_label_ok: np.ndarray) -> dict:
    """Metrics of the predictions proba >= thr, from integer counts gathered a block of labels at a time
    (tallies.ThresholdTally), so they equal the counts of the whole [S, L] tables exactly."""
    S, L = np.shape(proba)
    tally = ThresholdTally(S, thr)
    for b in label_blocks(S, L, block_elements(proba)):
        tally.add(b, np.asarray(proba[:, b]), np.asarray(y[:, b]) > 0.5, np.asarray(mask[:, b], dtype=bool))
    return tally.result(per_label_ok)


def patients_per_label(y, mask, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """label_patients of [S, L] tables (arrays or packed), a block of labels at a time."""
    L = np.shape(mask)[1]
    pos_patients, known_patients = np.zeros(L, np.int64), np.zeros(L, np.int64)
    for b in label_blocks(np.shape(mask)[0], L):
        m = np.asarray(mask[:, b], dtype=bool)
        pos_patients[b], known_patients[b] = label_patients((np.asarray(y[:, b]) > 0.5) & m, m, groups)
    return pos_patients, known_patients


def label_patients(pos: np.ndarray, known: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per label: patients (distinct `groups`) with a known positive, and with a known element."""
    if groups is None:
        return pos.sum(0), known.sum(0)
    groups = np.asarray(groups)
    if len(groups) == 0:
        return np.zeros(pos.shape[1], np.int64), np.zeros(pos.shape[1], np.int64)
    order = None if np.all(groups[1:] >= groups[:-1]) else np.argsort(groups, kind="stable")
    g = groups if order is None else groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    out = []
    for a in (pos, known):
        a = a if order is None else a[order]
        out.append(np.logical_or.reduceat(a, starts, axis=0).sum(0))
    return out[0], out[1]


def evaluate_predictions(
    y,
    mask,
    proba: np.ndarray,
    label_names: list[str],
    thresholds: np.ndarray | None = None,
    k_values: tuple[int, ...] = (1, 3, 5),
    groups: np.ndarray | None = None,
) -> dict:
    """All metrics for one set. `thresholds` are per-label tuned thresholds (e.g. from validation).
    `groups` gives each sample's patient (several prediction times per patient), so that each label
    also reports how many patients its positives come from (what small-cell suppression counts).
    Per-label AUROC/AUPRC are computed for all labels at once (ehrdx.ranking). `y` and `mask` are [S, L]
    arrays or tables read like them (data/bits.py BitTable): every metric reads a block of labels (or of
    samples) at a time, so no [S, L] copy is made beyond one block."""
    proba = proba if isinstance(proba, HeadScores) else np.asarray(proba)
    n_labels = np.shape(proba)[1]
    rank = label_ranking(y, mask, proba)
    sets = {"threshold_0.5": np.full(n_labels, 0.5)}
    if thresholds is not None:
        sets["tuned"] = np.asarray(thresholds, dtype=np.float64)
    return predictions_result(
        label_names, rank, pooled_ranking(y, mask, proba), calibration_sums(y, mask, proba),
        recall_at_ks(y, mask, proba, k_values),
        {name: _threshold_metrics(y, mask, proba, thr, rank.scored) for name, thr in sets.items()},
        sets, patients_per_label(y, mask, groups), np.shape(proba)[0])


def predictions_result(label_names: list[str], rank: LabelRanking, micro: tuple[float | None, float | None],
                       calibration: tuple, recall: dict[int, float | None], at_thresholds: dict[str, dict],
                       thresholds: dict[str, np.ndarray], patients: tuple[np.ndarray, np.ndarray],
                       n_samples: int) -> dict:
    """evaluate_predictions' result from its parts: the per-label ranking, the pooled (micro) AUROC and
    AUPRC, calibration_sums, recall@k, the threshold metrics (with their `_per_label` arrays) for each
    named set of `thresholds` ("threshold_0.5", and "tuned" when there are tuned ones) and
    patients_per_label."""
    n_labels = len(rank.known)
    ok = rank.scored
    pos_patients, known_patients = patients
    per_label = []
    for j, name in enumerate(label_names):
        n_pos, n_known = int(rank.positives[j]), int(rank.known[j])
        row = {"label": name, "known": n_known, "positives": n_pos, "positive_patients": int(pos_patients[j]),
               "known_patients": int(known_patients[j]), "auroc": None, "auprc": None}
        if n_pos == 0:
            row["status"] = "no positives in this set"
        elif n_pos == n_known:
            row["status"] = "no negatives in this set"
        else:
            row.update(status="ok", auroc=float(rank.auroc[j]), auprc=float(rank.auprc[j]))
        row["prevalence"] = n_pos / n_known if n_known else None
        per_label.append(row)

    micro_auroc, micro_auprc = micro  # the pooled scores in their own dtype
    count, sum_p, sum_y, squared = calibration
    n_known = int(count.sum())
    result = {
        "n_samples": int(n_samples),
        "n_known_elements": int(rank.known.sum()),
        "n_masked_elements": int(n_samples * n_labels - rank.known.sum()),
        "macro_auroc": float(np.mean(rank.auroc[ok])) if ok.any() else None,
        "micro_auroc": micro_auroc,
        "macro_auprc": float(np.mean(rank.auprc[ok])) if ok.any() else None,
        "micro_auprc": micro_auprc,
        "brier": squared / n_known if n_known else None,
        "ece": float(np.sum(np.abs(sum_p - sum_y)[count > 0]) / n_known) if n_known else None,
        "labels_in_macro": int(ok.sum()),
        "labels_left_out_of_macro": [r["label"] for r, o in zip(per_label, ok) if not o],
    }
    for k, value in recall.items():
        result[f"recall_at_{k}"] = value
    for name, thr in thresholds.items():
        tm = dict(at_thresholds[name])
        pl = tm.pop("_per_label")
        result[name] = tm
        for j, row in enumerate(per_label):
            row[name] = {
                "threshold": float(thr[j]),
                "precision": float(pl["precision"][j]),
                "recall": float(pl["recall"][j]),
                "f1": float(pl["f1"][j]) if ok[j] else None,
            }
    # The headline F1 is at the tuned thresholds when there are any, else at 0.5.
    result["f1_micro"] = result["tuned" if "tuned" in thresholds else "threshold_0.5"]["f1_micro"]
    result["per_label"] = per_label
    return result


def describe_rows(per_label: list[dict], descriptions: dict[str, str] | None) -> None:
    """Add each label's readable `description` (where known) to per-label metric rows, in place."""
    for row in per_label:
        text = (descriptions or {}).get(row["label"])
        if text:
            row["description"] = text


def _bin_name(lo: int, hi: int | None) -> str:
    return f"{lo}" if hi == lo else (f"{lo}+" if hi is None else f"{lo}-{hi}")


def evaluate_samples(samples: Samples, proba: np.ndarray, labels: list[str], thresholds: np.ndarray | None,
                     descriptions: dict[str, str] | None = None) -> dict:
    """`all` labels, `new_onset` (labels not yet recorded), and both by number of prior visits; per-label
    rows carry the label's `description` where `descriptions` has one. Every metric is gathered from one
    reading of the scores (evaluate/one_pass.py): the numbers of evaluate_predictions for each mask and of
    macro_scores for each bin of prior visits."""
    proba = proba if isinstance(proba, HeadScores) else np.asarray(proba)
    y, mask = samples.y_bits, samples.mask_bits  # packed: every metric reads a block at a time
    new_mask = samples.train_mask_bits(True)
    n_labels = np.shape(proba)[1]
    bins = []
    for lo, hi in VISIT_BINS:
        sel = (samples.n_visits >= lo) & (samples.n_visits <= (hi if hi is not None else np.iinfo(np.int32).max))
        if sel.any():
            bins.append((lo, hi, np.flatnonzero(sel)))
    sets = {"threshold_0.5": np.full(n_labels, 0.5)}
    if thresholds is not None:
        sets["tuned"] = np.asarray(thresholds, dtype=np.float64)
    once = evaluate_once(y, mask, new_mask, proba, [rows for _, _, rows in bins], sets, K_VALUES)
    parts = {}
    for key, m, counts in (("all", mask, once.masks[0]), ("new_onset", new_mask, once.masks[1])):
        parts[key] = predictions_result(labels, counts.rank, counts.micro, counts.calibration, counts.recall,
                                        counts.at_thresholds, sets, patients_per_label(y, m, samples.row),
                                        len(samples))
        describe_rows(parts[key]["per_label"], descriptions)
    out = {**parts, "by_prior_visits": [], "samples": len(samples), "patients": len(np.unique(samples.row)),
           "excluded": dict(samples.counts)}
    for g, (lo, hi, rows) in enumerate(bins):
        row = {"prior_visits": _bin_name(lo, hi), "samples": len(rows), "patients": len(np.unique(samples.row[rows]))}
        for name, part in (("all", once.groups[0][g]), ("new_onset", once.groups[1][g])):
            row[name] = macro_of(*part)
        out["by_prior_visits"].append(row)
    return out


def weighted_ranking(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of one label's known samples under each row of integer sample weights
    `w` [draws, samples] (a patient drawn twice weighs 2): one sort, then the weighted true and false
    positives at each distinct score. Tied scores are one threshold, as in ehrdx.ranking, so with unit
    weights both equal `label_ranking`'s. nan where a draw has no positive or no negative weight."""
    if len(score) == 0:  # no known sample: no ranking in any draw
        return np.full(len(w), np.nan), np.full(len(w), np.nan)
    order = np.argsort(-score, kind="mergesort")
    pos, w = positive[order], w[:, order]
    total = np.cumsum(w, axis=1, dtype=np.int64)  # integer sums: exact, whatever the order of addition
    tp = np.cumsum(np.where(pos, w, 0), axis=1, dtype=np.int64)
    distinct = np.flatnonzero(np.diff(score[order]))
    if len(distinct) < len(score) - 1:  # ties: one point per distinct score, its last sample
        ends = np.r_[distinct, len(score) - 1]
        tp, total = tp[:, ends], total[:, ends]
    fp = total - tp
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]
    ok = (n_pos[:, 0] > 0) & (n_neg[:, 0] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / n_pos, fp / n_neg
        auroc = np.sum(np.diff(fpr, axis=1, prepend=0) * (tpr + np.c_[np.zeros(len(w)), tpr[:, :-1]]) / 2, axis=1)
        auprc = np.sum(np.diff(tpr, axis=1, prepend=0) * np.where(total > 0, tp / np.maximum(total, 1), 0.0), axis=1)
    return np.where(ok, auroc, np.nan), np.where(ok, auprc, np.nan)


def bootstrap_label_intervals(y, mask, proba: np.ndarray, groups: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                              seed: int = 0, level: float = 0.95, chunk: int = 64) -> dict[str, np.ndarray]:
    """Per label, a `level` percentile interval of AUROC and of AUPRC over `draws` resamplings of the
    patients (`groups`: each sample's patient) with replacement, each drawn patient's samples weighing as
    often as the patient is drawn: {"auroc_low", "auroc_high", "auprc_low", "auprc_high"}, [L] each. The
    same draws for every label, from `seed` (the same intervals on every run). nan where fewer than half of
    the draws have both classes among the label's known samples; an interval is widened, where the draws
    are so skewed that it would not, to hold the point estimate (the unit-weight value). [S, L] inputs
    (arrays or tables read like them)."""
    patients, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_pat = len(patients)
    picks = np.random.default_rng(seed).integers(0, n_pat, (draws, n_pat))
    counts = np.bincount((np.arange(draws)[:, None] * n_pat + picks).ravel(), minlength=draws * n_pat)
    counts = np.concatenate([np.ones((1, n_pat), np.int32), counts.reshape(draws, n_pat).astype(np.int32)])
    n_labels = np.shape(proba)[1]
    values = {m: np.full((draws + 1, n_labels), np.nan) for m in ("auroc", "auprc")}
    for b in label_blocks(len(inverse), n_labels):
        known, yb = np.asarray(mask[:, b], dtype=bool), np.asarray(y[:, b]) > 0.5
        pb = np.asarray(proba[:, b], dtype=np.float64)
        for i, j in enumerate(range(b.start, b.stop)):
            k = known[:, i]
            if not k.any():  # no known sample of this label: no interval
                continue
            for d0 in range(0, draws + 1, chunk):
                values["auroc"][d0:d0 + chunk, j], values["auprc"][d0:d0 + chunk, j] = weighted_ranking(
                    yb[k, i], pb[k, i], counts[d0:d0 + chunk][:, inverse[k]])
    out, tail = {}, 100 * (1 - level) / 2
    for m, v in values.items():
        point, draw = v[0], v[1:]
        enough = np.sum(~np.isnan(draw), axis=0) >= max(draws / 2, 1)
        lo, hi = np.full(n_labels, np.nan), np.full(n_labels, np.nan)
        if enough.any():
            lo[enough], hi[enough] = np.nanpercentile(draw[:, enough], [tail, 100 - tail], axis=0)
        out[f"{m}_low"], out[f"{m}_high"] = np.where(enough, np.fmin(lo, point), np.nan), np.where(
            enough, np.fmax(hi, point), np.nan)
    return out
