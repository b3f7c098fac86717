"""evaluate_samples from one reading of the scores (evaluate/one_pass.py) gives the numbers the separate
metrics give: evaluate_predictions for each mask and macro_scores for each bin of prior visits, as
evaluate_samples computed them before, on small random tables with ties, packed targets, dense and
HeadScores scores, one block and many."""

import numpy as np
import pytest

from ehrdx import ranking
from ehrdx.data.samples import Samples
from ehrdx.evaluate import one_pass
from ehrdx.evaluate.metrics import (
    K_VALUES,
    VISIT_BINS,
    describe_rows,
    evaluate_predictions,
    evaluate_samples,
)
from ehrdx.ranking import HeadScores, macro_scores


def separate_passes(samples, proba, labels, thresholds, descriptions=None):
    """evaluate_samples as it was: every metric its own reading of the scores."""
    y, mask = samples.y_bits, samples.mask_bits
    new_mask = samples.train_mask_bits(True)
    out = {"all": evaluate_predictions(y, mask, proba, labels, thresholds, K_VALUES, samples.row),
           "new_onset": evaluate_predictions(y, new_mask, proba, labels, thresholds, K_VALUES, samples.row),
           "by_prior_visits": [], "samples": len(samples), "patients": len(np.unique(samples.row)),
           "excluded": dict(samples.counts)}
    for key in ("all", "new_onset"):
        describe_rows(out[key]["per_label"], descriptions)
    for lo, hi in VISIT_BINS:
        sel = (samples.n_visits >= lo) & (samples.n_visits <= (hi if hi is not None else np.iinfo(np.int32).max))
        if not sel.any():
            continue
        name = f"{lo}" if hi == lo else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        row = {"prior_visits": name, "samples": int(sel.sum()), "patients": len(np.unique(samples.row[sel]))}
        for part, m in (("all", mask), ("new_onset", new_mask)):
            r = macro_scores(y, m, proba, rows=np.flatnonzero(sel))
            row[part] = {k: r[k] for k in ("macro_auroc", "macro_auprc", "micro_auroc", "micro_auprc")}
        out["by_prior_visits"].append(row)
    return out


def random_samples(seed, n=300, labels=30):
    rng = np.random.default_rng(seed)
    y = rng.random((n, labels)) < rng.uniform(0.02, 0.3, labels)
    y[:, 0] = False  # a label without positives
    mask = rng.random((n, labels)) < 0.9
    mask[:, 1] = False  # and one never known
    history = rng.random((n, labels)) < 0.2
    row = np.sort(rng.integers(0, n // 3, n))  # patients with several prediction times
    n_visits = rng.integers(0, 14, n)  # some before the first bin, some in each
    samples = Samples(row, np.arange(n), np.arange(n), n_visits, np.arange(n), y.astype(np.float32), mask, history,
                      {"no history": 3})
    return samples, rng


def scores_of(kind, rng, n, labels):
    if kind == "head":  # float32 logits, float64 probabilities; a few states repeated: tied scores
        states = rng.normal(size=(n, 8)).astype(np.float32)
        states[::7] = states[1]
        return HeadScores(states, rng.normal(size=(labels, 8)).astype(np.float32), rng.normal(size=labels) - 1)
    proba = np.round(rng.random((n, labels)), 2)  # 2 decimals: many ties, some at 0.5 and the thresholds
    if kind == "beyond_two":  # scores that are not probabilities: merged by float sorts, not by bits
        return proba * 3
    return proba.astype(np.float32) if kind == "float32" else proba


def assert_same(new, old, where="result"):
    """Every number equal: counts exactly; floats exactly where both come from the same operations on
    the same values (the tallies), else within 1e-12."""
    assert type(new) is type(old) or {type(new), type(old)} <= {int, float}, (where, new, old)
    if isinstance(old, dict):
        assert list(new) == list(old), where
        for key in old:
            assert_same(new[key], old[key], f"{where}[{key!r}]")
    elif isinstance(old, list):
        assert len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(old, float):
        assert new == pytest.approx(old, abs=1e-12, rel=0), where
    else:
        assert new == old, where


@pytest.mark.parametrize("kind", ["float64", "float32", "head", "beyond_two"])
@pytest.mark.parametrize("max_elements", [None, 700])
def test_one_pass_equals_the_separate_metrics(kind, max_elements, monkeypatch):
    samples, rng = random_samples(len(kind))
    proba = scores_of(kind, rng, *samples.y_bits.shape)
    if max_elements:  # many blocks of labels, few samples per recall block, many pooled merges
        monkeypatch.setattr(ranking, "MAX_ELEMENTS", max_elements)
        monkeypatch.setattr(HeadScores, "block_elements", max_elements)
        monkeypatch.setattr(ranking, "MIN_BUFFER", 64)
        monkeypatch.setattr(one_pass, "RECALL_ROWS", 17)
    thresholds = np.round(rng.uniform(0.1, 0.9, samples.n_labels), 2)
    labels = [f"L{j}" for j in range(samples.n_labels)]
    descriptions = {"L3": "the third"}
    old = separate_passes(samples, proba, labels, thresholds, descriptions)
    new = evaluate_samples(samples, proba, labels, thresholds, descriptions)
    assert_same(new, old)
    assert old["all"]["labels_in_macro"] >= 20 and len(old["by_prior_visits"]) == 5
    assert old["all"]["micro_auroc"] is not None and old["new_onset"]["micro_auroc"] != old["all"]["micro_auroc"]
    assert new["by_prior_visits"][2]["new_onset"]["micro_auroc"] is not None
    assert new["all"]["per_label"][3]["description"] == "the third"


def test_without_tuned_thresholds_and_bins(monkeypatch):
    samples, rng = random_samples(9, n=40, labels=5)
    samples.n_visits[:] = 0  # no sample in any bin of prior visits
    proba = scores_of("float64", rng, 40, 5)
    labels = [f"L{j}" for j in range(5)]
    new, old = evaluate_samples(samples, proba, labels, None), separate_passes(samples, proba, labels, None)
    assert_same(new, old)
    assert new["by_prior_visits"] == [] and "tuned" not in new["all"]


def test_scores_that_differ_from_the_pairs_scored_are_counted_again(monkeypatch):
    """A computed read whose pair scores round differently from its block reads: the pooled counts fall
    back to counting from the tables, and the result is still the separate metrics'."""
    samples, rng = random_samples(4, n=120, labels=12)
    proba = scores_of("float64", rng, 120, 12)
    def pairs_rounded_otherwise(scores, r, c, blocks):
        out = np.asarray(scores)[r, c]
        out[::3] += 1e-9  # some of them
        return out

    monkeypatch.setattr(one_pass, "pair_scores", pairs_rounded_otherwise)
    labels = [f"L{j}" for j in range(12)]
    assert_same(evaluate_samples(samples, proba, labels, None), separate_passes(samples, proba, labels, None))


def dense_threshold_metrics(y, mask, proba, thr):
    """The threshold metrics counted on the whole dense tables (as _threshold_metrics counted them before
    the tallies): per label, per sample, and the known elements right."""
    pred, yb = proba >= thr[None], y > 0.5
    tp_l, fp_l, fn_l = (pred & yb & mask).sum(0), (pred & ~yb & mask).sum(0), (~pred & yb & mask).sum(0)
    tp_s, pred_s, true_s = (pred & yb & mask).sum(1), (pred & mask).sum(1), (yb & mask).sum(1)
    has = mask.any(1)
    f1_s = np.where(pred_s + true_s > 0, 2 * tp_s / np.maximum(pred_s + true_s, 1), 1.0)
    correct = int(((pred == yb) & mask).sum())
    return {"f1": 2 * tp_l / np.maximum(2 * tp_l + fp_l + fn_l, 1), "element_accuracy": correct / mask.sum(),
            "subset_accuracy": float(((pred == yb) | ~mask).all(1)[has].mean()), "f1_samples": float(f1_s[has].mean()),
            "f1_micro": 2 * tp_l.sum() / (2 * tp_l.sum() + fp_l.sum() + fn_l.sum())}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threshold_tally_equals_the_dense_counts(dtype):
    from ehrdx.evaluate.tallies import ThresholdTally

    rng = np.random.default_rng(2)
    n, labels = 200, 9
    proba = rng.random((n, labels)).astype(dtype)
    thr = rng.uniform(0.2, 0.8, labels)
    thr[:3] = proba[:3, :3].diagonal().astype(np.float64)  # thresholds equal to a score
    thr[3] = np.nextafter(proba[0, 3].astype(np.float64), 1)  # just above a float32 score
    thr[4] = np.nextafter(proba[0, 4].astype(np.float64), 0)  # just below one
    y = rng.random((n, labels)) < 0.3
    mask = rng.random((n, labels)) < 0.8
    mask[:5] = True  # samples with every label known, some all right
    tally = ThresholdTally(n, thr)
    for b in (slice(0, 4), slice(4, 9)):
        tally.add(b, proba[:, b], y[:, b], mask[:, b])
    got, want = tally.result(np.ones(labels, bool)), dense_threshold_metrics(y, mask, proba, thr)
    assert np.array_equal(got["_per_label"]["f1"], want["f1"])
    for key in ("element_accuracy", "subset_accuracy", "f1_samples", "f1_micro"):
        assert got[key] == pytest.approx(want[key], abs=1e-15), key


def test_calibration_of_yes_no_targets_equals_that_of_their_values():
    from ehrdx.evaluate.tallies import CalibrationTally

    rng = np.random.default_rng(5)
    p, y, known = rng.random((50, 7)).astype(np.float32), rng.random((50, 7)) < 0.3, rng.random((50, 7)) < 0.8
    bits, values = CalibrationTally(), CalibrationTally()
    bits.add_block(p, y, known)
    values.add_block(p, y.astype(np.float32), known)
    for a, b in zip(bits.sums(), values.sums()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_calibration_of_sorted_scores_counts_the_same_bins(dtype):
    """Scores at, just below and just above each bin's edge (0.3 * 10 is 3.0000000000000004 in floats)
    fall in the bins the elementwise count gives; the sums agree within rounding."""
    from ehrdx.evaluate.tallies import CalibrationTally

    around = np.array([k / 10 for k in range(11)], dtype)
    p = np.concatenate([around, np.nextafter(around, dtype(0)), np.nextafter(around, dtype(1)),
                        np.random.default_rng(0).random(300).astype(dtype)])
    p = np.sort(p[(p >= 0) & (p <= 1)])
    for outcome in (0.0, 1.0):
        sorted_, each = CalibrationTally(), CalibrationTally()
        sorted_.add_sorted(p, outcome)
        each.add(p.astype(np.float64), np.full(len(p), outcome))
        assert np.array_equal(sorted_.count, each.count) and np.array_equal(sorted_.sum_y, each.sum_y)
        np.testing.assert_allclose(sorted_.sum_p, each.sum_p, rtol=1e-14)
        assert sorted_.squared == pytest.approx(each.squared, rel=1e-14)


@pytest.mark.parametrize("shift", [0.0, -0.5, 1.5])  # probabilities; signed scores and scores of 2 or more
def test_pooled_pair_counts_the_whole_and_the_subset_as_two_counts(shift):
    from ehrdx.evaluate.pooled import PooledPair
    from ehrdx.ranking import micro_ranking

    rng = np.random.default_rng(8)
    scores = np.round(rng.random(3000), 2) + shift  # ties
    positive, in_subset = rng.random(3000) < 0.2, rng.random(3000) < 0.6
    pair = PooledPair(scores[positive], in_subset[positive], min_buffer=100)
    for part in np.array_split(np.flatnonzero(~positive), 9):
        pair.add(scores[part], in_subset[part])
    whole, subset = pair.results()
    assert whole == micro_ranking(positive, scores)
    assert subset == micro_ranking(positive[in_subset], scores[in_subset])
