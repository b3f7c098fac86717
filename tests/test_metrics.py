"""Metrics: agree with scikit-learn where there is no mask; masked elements never count."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, hamming_loss, roc_auc_score

from ehrdx.evaluate.metrics import (
    evaluate_predictions,
    expected_calibration_error,
    recall_at_k,
    tune_thresholds,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n, L = 400, 5
    proba = rng.random((n, L))
    y = (rng.random((n, L)) < proba * 0.6).astype(np.float32)
    return y, proba, [f"L{j}" for j in range(L)]


def test_matches_sklearn_without_mask(data):
    y, p, names = data
    r = evaluate_predictions(y, np.ones_like(y, bool), p, names)
    assert r["macro_auroc"] == pytest.approx(roc_auc_score(y, p, average="macro"))
    assert r["micro_auroc"] == pytest.approx(roc_auc_score(y, p, average="micro"))
    assert r["macro_auprc"] == pytest.approx(average_precision_score(y, p, average="macro"))
    assert r["micro_auprc"] == pytest.approx(average_precision_score(y, p, average="micro"))
    pred = p >= 0.5
    at = r["threshold_0.5"]
    assert at["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert at["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert at["f1_samples"] == pytest.approx(f1_score(y, pred, average="samples", zero_division=1.0))
    assert at["hamming_loss"] == pytest.approx(hamming_loss(y, pred))
    assert at["subset_accuracy"] == pytest.approx(np.mean((pred == (y > 0.5)).all(1)))
    assert r["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_masked_elements_change_nothing(data):
    y, p, names = data
    rng = np.random.default_rng(1)
    mask = rng.random(y.shape) < 0.7
    base = evaluate_predictions(y, mask, p, names, thresholds=np.full(5, 0.4))
    y2, p2 = y.copy(), p.copy()
    y2[~mask] = 1 - y2[~mask]  # arbitrary targets where masked
    p2[~mask] = rng.random((~mask).sum())
    again = evaluate_predictions(y2, mask, p2, names, thresholds=np.full(5, 0.4))
    assert base == again
    # and it really is computed on the known elements only
    j = 2
    m = mask[:, j]
    assert base["per_label"][j]["auroc"] == pytest.approx(roc_auc_score(y[m, j], p[m, j]))


def test_label_without_positives_is_reported_and_left_out_of_macro(data):
    y, p, names = data
    y = y.copy()
    y[:, 1] = 0
    r = evaluate_predictions(y, np.ones_like(y, bool), p, names)
    assert r["per_label"][1]["status"] == "no positives in this set"
    assert r["per_label"][1]["auroc"] is None
    assert r["labels_left_out_of_macro"] == ["L1"]
    others = [j for j in range(5) if j != 1]
    assert r["macro_auroc"] == pytest.approx(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in others]))
    assert not np.isnan(r["threshold_0.5"]["f1_macro"])


def test_recall_at_k_and_ece_by_hand():
    y = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=float)
    p = np.array([[0.9, 0.8, 0.1], [0.5, 0.5, 0.5], [0.2, 0.3, 0.1]])
    mask = np.ones_like(y, bool)
    # sample 1: top-1 is label 0 (1 of 2 positives), top-2 adds label 1 (negative), top-3 finds both;
    # sample 2 has no positives and is skipped; sample 3's only positive ranks first.
    assert recall_at_k(y, mask, p, 1) == pytest.approx((0.5 + 1.0) / 2)
    assert recall_at_k(y, mask, p, 2) == pytest.approx((0.5 + 1.0) / 2)
    assert recall_at_k(y, mask, p, 3) == pytest.approx(1.0)
    # masking sample 1's label 0 leaves label 2 as its only known positive, ranked last of two
    mask[0, 0] = False
    assert recall_at_k(y, mask, p, 1) == pytest.approx((0.0 + 1.0) / 2)
    # a perfectly calibrated bin has zero error; one bin of p=0.9 with 50% positives has 0.4
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([0.95, 0.95])) == pytest.approx(0.45)


def test_tuned_thresholds_find_the_separating_value():
    y = np.array([[0], [0], [1], [1]], dtype=float)
    p = np.array([[0.1], [0.3], [0.35], [0.9]])
    thr = tune_thresholds(y, np.ones_like(y, bool), p)
    assert 0.3 < thr[0] <= 0.35
