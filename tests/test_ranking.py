"""Vectorised per-label metrics (ehrdx.ranking, tune_thresholds, evaluate_predictions) equal the per-label
scikit-learn loops they replaced, within 1e-9, on random data with masks, ties and one-class labels."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ehrdx import ranking
from ehrdx.evaluate.html import roc_pr_points
from ehrdx.evaluate.metrics import (
    evaluate_predictions,
    expected_calibration_error,
    recall_at_k,
    recall_at_ks,
    tune_thresholds,
)
from ehrdx.ranking import (
    PooledCounts,
    label_curves,
    label_ranking,
    macro_scores,
    micro_ranking,
    pooled_ranking,
)
from ehrdx.train.loop import masked_macro_score

TOL = 1e-9


def reference_thresholds(y, mask, proba, default=0.5):
    """The per-label loop tune_thresholds was before it was vectorised."""
    grid = np.linspace(0.01, 0.99, 99)
    out = np.full(y.shape[1], default, dtype=np.float64)
    for j in range(y.shape[1]):
        m = mask[:, j]
        yj, pj = y[m, j] > 0.5, proba[m, j]
        if yj.sum() == 0:
            continue
        pred = pj[:, None] >= grid[None, :]
        tp = (pred & yj[:, None]).sum(0)
        fp = (pred & ~yj[:, None]).sum(0)
        f1 = 2 * tp / np.maximum(2 * tp + fp + yj.sum() - tp, 1)
        out[j] = grid[int(np.argmax(f1))]
    return out


def reference_labels(y, mask, proba, groups):
    """Per label (positives, positive patients, known patients, AUROC, AUPRC) as the per-label loop did."""
    rows = []
    for j in range(y.shape[1]):
        m = mask[:, j]
        yj, pj = y[m, j], proba[m, j]
        both = 0 < yj.sum() < len(yj)
        rows.append((int(yj.sum()), len(np.unique(groups[m][yj > 0.5])), len(np.unique(groups[m])),
                     roc_auc_score(yj, pj) if both else None, average_precision_score(yj, pj) if both else None))
    return rows


def random_set(seed, n=None, labels=None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(2, 400))
    labels = labels or int(rng.integers(1, 25))
    proba = np.round(rng.random((n, labels)), int(rng.integers(1, 4)))  # 1-3 decimals: many ties
    y = (rng.random((n, labels)) < rng.random(labels) * 0.6).astype(np.float32)
    y[:, 0] = 0  # a label with no positives
    if labels > 1:
        y[:, 1] = 1  # and one with no negatives
    mask = rng.random((n, labels)) < rng.uniform(0.3, 1.0)
    groups = rng.integers(0, max(2, n // 3), n)  # patients, not in order
    return y, mask, proba, groups


@pytest.mark.parametrize("seed", range(12))
def test_label_metrics_equal_the_per_label_loop(seed):
    y, mask, proba, groups = random_set(seed)
    names = [f"L{j}" for j in range(y.shape[1])]
    result = evaluate_predictions(y, mask, proba, names, thresholds=np.full(y.shape[1], 0.3), groups=groups)
    ref = reference_labels(y, mask, proba, groups)
    for row, (pos, pos_pat, known_pat, auroc, auprc) in zip(result["per_label"], ref):
        assert (row["positives"], row["positive_patients"], row["known_patients"]) == (pos, pos_pat, known_pat)
        assert (row["auroc"] is None) == (auroc is None)
        if auroc is not None:
            assert abs(row["auroc"] - auroc) < TOL and abs(row["auprc"] - auprc) < TOL
    flat_y, flat_p = y[mask], proba[mask]
    assert abs(result["micro_auroc"] - roc_auc_score(flat_y, flat_p)) < TOL
    assert abs(result["micro_auprc"] - average_precision_score(flat_y, flat_p)) < TOL
    scored = [r[3] for r in ref if r[3] is not None]
    assert abs(result["macro_auroc"] - np.mean(scored)) < TOL
    assert result["labels_in_macro"] == len(scored)
    assert result["per_label"][0]["status"] == "no positives in this set"


@pytest.mark.parametrize("seed", range(12))
def test_thresholds_equal_the_per_label_loop(seed):
    y, mask, proba, _ = random_set(seed)
    proba = np.clip(proba + 0.004, 0, 1)  # scores on and beside the grid points
    assert np.array_equal(tune_thresholds(y, mask, proba), reference_thresholds(y, mask, proba))


def test_blocks_do_not_change_the_result():
    y, mask, proba, _ = random_set(3, n=300, labels=20)
    whole, blocks = label_ranking(y, mask, proba), label_ranking(y, mask, proba, max_elements=700)
    assert np.array_equal(whole.positives, blocks.positives)
    np.testing.assert_allclose(blocks.auroc, whole.auroc, atol=TOL, equal_nan=True)
    np.testing.assert_allclose(blocks.auprc, whole.auprc, atol=TOL, equal_nan=True)


def test_curves_are_scikit_learns_points():
    y, mask, proba, _ = random_set(5, n=200, labels=6)
    for j, tp, fp in label_curves(y, mask, proba, np.arange(2, 6)):
        m = mask[:, j]
        fpr, tpr, rec, prec = roc_pr_points(tp, fp)
        ref_fpr, ref_tpr, _ = roc_curve(y[m, j], proba[m, j], drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr, atol=TOL)
        np.testing.assert_allclose(tpr, ref_tpr, atol=TOL)
        ref_prec, ref_rec, _ = precision_recall_curve(y[m, j], proba[m, j])
        np.testing.assert_allclose(rec, ref_rec[::-1], atol=TOL)
        np.testing.assert_allclose(prec, ref_prec[::-1], atol=TOL)


def test_macro_scores_without_both_classes_are_none():
    y = np.zeros((4, 2), np.float32)
    out = macro_scores(y, np.ones((4, 2), bool), np.full((4, 2), 0.5))
    assert out == {"macro_auroc": None, "macro_auprc": None, "micro_auroc": None, "micro_auprc": None}


@pytest.mark.parametrize("metric", ["auroc", "auprc"])
def test_monitor_equals_the_per_label_loop(metric):
    y, mask, proba, _ = random_set(7, n=300, labels=10)
    fn = roc_auc_score if metric == "auroc" else average_precision_score
    ref = np.mean([fn(y[mask[:, j], j], proba[mask[:, j], j]) for j in range(y.shape[1])
                   if 0 < y[mask[:, j], j].sum() < mask[:, j].sum()])
    assert abs(masked_macro_score(y, mask, proba, metric) - ref) < TOL


def test_brier_ece_and_recall_at_k_equal_the_pooled_formulas():
    y, mask, _, _ = random_set(9, n=300, labels=12)
    proba = np.random.default_rng(9).random(y.shape)  # no ties: the top label of each sample is unique
    r = evaluate_predictions(y, mask, proba, [f"L{j}" for j in range(12)], k_values=(1, 3))
    flat_y, flat_p = y[mask].astype(np.float64), proba[mask]
    assert abs(r["brier"] - np.mean((flat_p - flat_y) ** 2)) < TOL
    assert abs(r["ece"] - expected_calibration_error(flat_y, flat_p)) < TOL
    pos = (y > 0.5) & mask
    has = pos.sum(1) > 0
    scores = np.where(mask, proba, -np.inf)
    top1 = np.argmax(scores, axis=1)
    ref = np.mean(pos[np.arange(len(y)), top1][has] / pos.sum(1)[has])
    assert abs(recall_at_k(y, mask, proba, 1, rows=7) - ref) < TOL and abs(r["recall_at_1"] - ref) < TOL


def test_recall_at_several_k_equals_each_k_alone():
    y, mask, _, _ = random_set(11, n=200, labels=15)
    proba = np.random.default_rng(11).random(y.shape)
    together = recall_at_ks(y, mask, proba, [1, 3, 5, 20], rows=13)
    for k in (1, 3, 5, 20):
        top = np.argsort(-np.where(mask, proba, -np.inf), axis=1)[:, :k]
        pos = (y > 0.5) & mask
        has = pos.sum(1) > 0
        ref = np.mean(np.take_along_axis(pos, top, axis=1).sum(1)[has] / pos.sum(1)[has])
        assert abs(together[k] - ref) < TOL


@pytest.mark.parametrize("case", ["ties", "float32", "signed", "continuous"])
def test_pooled_ranking_equals_scikit_learn_over_many_blocks_and_merges(case, monkeypatch):
    """More positives than a block of scores holds, several merges of buffered negatives (a small
    buffer), rows chosen: the pooled counts are those of the flat known entries."""
    monkeypatch.setattr(ranking, "MIN_BUFFER", 97)
    monkeypatch.setattr(ranking, "BUFFER_PER_POSITIVE", 0)
    rng = np.random.default_rng(len(case))
    n, labels = 500, 24
    proba = rng.random((n, labels))
    if case == "ties":
        proba = np.round(proba, 1)  # 11 distinct scores: nearly every negative ties with positives
    elif case == "float32":
        proba = np.round(proba, 3).astype(np.float32)
    elif case == "signed":
        proba = np.round(proba - 0.5, 2)  # negative scores and -0.0: the float sort instead of the bits
        proba[proba == 0] = -0.0
    y = rng.random((n, labels)) < 0.3
    mask = rng.random((n, labels)) < 0.8
    rows = np.sort(rng.choice(n, 400, replace=False))
    auroc, auprc = pooled_ranking(y, mask, proba, rows=rows, max_elements=300)
    assert (y[rows] & mask[rows]).sum() > 300  # more positives than a block
    flat_y, flat_p = y[rows][mask[rows]], proba[rows][mask[rows]]
    assert abs(auroc - roc_auc_score(flat_y, flat_p)) < TOL
    assert abs(auprc - average_precision_score(flat_y, flat_p)) < TOL
    assert (auroc, auprc) == micro_ranking(flat_y, flat_p)  # the same integer counts, the same formula


def test_pooled_counts_of_negatives_alone_equal_those_of_every_score_less_the_positives():
    rng = np.random.default_rng(3)
    ps, ns = np.round(rng.random(300), 2), np.round(rng.random(5000), 2)
    alone, every = PooledCounts(ps, min_buffer=64), PooledCounts(ps, min_buffer=64)
    for part in np.array_split(ns, 7):
        alone.add(part)
    every.add(np.concatenate([ns[:2000], ps, ns[2000:]]))
    every.discount_positives()
    alone.flush()
    assert np.array_equal(alone.below, every.below) and alone.tied == every.tied > 0
    assert alone.result() == every.result() == micro_ranking(np.r_[np.ones(300), np.zeros(5000)], np.r_[ps, ns])
    assert PooledCounts(ps).result() == (None, None)  # no negatives


@pytest.mark.parametrize("min_buffer", [50, 5000, 10**6])  # ties found by runs of a merge, or by searches
def test_pooled_counts_of_many_tied_scores(min_buffer):
    rng = np.random.default_rng(4)
    ps, ns = np.round(rng.random(2000), 3), np.round(rng.random(20000), 3)  # 1,001 scores: ties everywhere
    counts = PooledCounts(ps, min_buffer=min_buffer)
    for part in np.array_split(ns, 13):
        counts.add(part)
    assert counts.result() == micro_ranking(np.r_[np.ones(2000), np.zeros(20000)], np.r_[ps, ns])
