"""Scores computed from patient states when read (ranking.HeadScores) equal the probability table, and an
evaluation that reads them gives the metrics of the table."""

import numpy as np
import pytest

from ehrdx.ranking import HeadScores


def head(seed=0, n=50, hidden=6, labels=9):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, hidden)).astype(np.float32), rng.normal(size=(labels, hidden)).astype(np.float32),
            rng.normal(size=labels).astype(np.float32))


@pytest.mark.parametrize("key", [np.s_[:, :], np.s_[3:9], np.s_[:, 2:7], np.s_[[7, 0, 2], 8:9], np.s_[5, :],
                                 np.s_[np.arange(50) % 3 == 0, 4:9], np.s_[:, 4]])
def test_a_read_equals_the_dense_table(key):
    states, rows, bias = head()
    dense = 1.0 / (1.0 + np.exp(-(states.astype(np.float64) @ rows.T.astype(np.float64) + bias)))
    s = HeadScores(states, rows, bias)
    assert s.shape == (50, 9) and len(s) == 50 and np.shape(s) == (50, 9)
    # float32 logits, then float64: within float32 rounding of the table computed in float64
    np.testing.assert_allclose(s[key], dense[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(s), dense, rtol=1e-5, atol=1e-6)


def test_shapes_that_disagree_are_refused():
    states, rows, bias = head()
    with pytest.raises(ValueError, match="do not agree"):
        HeadScores(states, rows[:, :3], bias)


def test_an_evaluation_from_states_equals_the_one_from_the_table(tmp_path, monkeypatch):
    import ehrdx.train.scores as scores_module
    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
    from ehrdx.estimator import EventClassifier
    from ehrdx.events_pipeline import open_store

    paths = write_longitudinal(generate_longitudinal(160, seed=4), tmp_path)
    store = open_store(meds=paths["meds"], store_dir=tmp_path / "store")
    rows = np.arange(len(store))
    clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}", max_epochs=2, seed=0, hidden=16)
    clf.fit(store, rows[:110], rows[110:130])
    test = clf.samples(store, rows[130:])
    dense = clf.predict_samples(store, test)
    monkeypatch.setattr(scores_module, "DENSE_LIMIT", 0)
    lazy = clf.scores(store, test)
    assert isinstance(lazy, HeadScores) and lazy.shape == dense.shape
    np.testing.assert_allclose(np.asarray(lazy), dense, rtol=1e-5, atol=1e-6)
    a, b = clf.evaluate(store, samples=test, proba=dense), clf.evaluate(store, samples=test)
    for part in ("all", "new_onset"):
        for key in ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "brier", "recall_at_5"):
            assert a[part][key] == pytest.approx(b[part][key], abs=1e-5), (part, key)
        for ra, rb in zip(a[part]["per_label"], b[part]["per_label"]):
            assert ra["positives"] == rb["positives"]
            if ra["auroc"] is not None:
                assert ra["auroc"] == pytest.approx(rb["auroc"], abs=1e-5)


def test_pairs_are_the_entries_of_the_table():
    states, rows, bias = head(3, n=40, labels=9)
    s = HeadScores(states, rows, bias)
    rng = np.random.default_rng(3)
    samples, labels = rng.integers(0, 40, 60), rng.integers(0, 9, 60)
    table = np.asarray(s)
    for blocks in (None, [slice(0, 4), slice(4, 9)], [slice(j, j + 1) for j in range(9)]):
        # the same float32 products, read for fewer samples: equal within float32 rounding (and in
        # practice exactly: the evaluation checks and counts again where not)
        np.testing.assert_allclose(s.pairs(samples, labels, blocks, min_rows=5), table[samples, labels],
                                   rtol=1e-6, atol=1e-7)
    assert len(s.pairs(np.zeros(0, int), np.zeros(0, int))) == 0
