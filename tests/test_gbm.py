"""The gradient-boosting model (models/gbm.py): masks, constants, save/load and added labels, and the
issue's test: on a cohort where only recency carries the signal, the GBM on history features beats the
logistic baseline on today's count features."""

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from ehrdx.data.counts import count_matrix, history_features
from ehrdx.data.history import HistoryFeaturizer
from ehrdx.data.meds import normalise_events
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import EventEncoder
from ehrdx.data.store import build_store
from ehrdx.errors import ModelError
from ehrdx.models.baselines import LogisticBaseline
from ehrdx.models.gbm import GBMModel, constant_logit

FAST = {"num_boost_round": 60, "early_stopping_rounds": 10}


def _data(n: int, seed: int):
    """Sparse features; label 0 from feature 0, label 1 from features 1 and 2, label 2 never positive."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, 30, density=0.3, format="csr", random_state=seed, dtype=np.float32)
    d = X.toarray()
    y = np.stack([(d[:, 0] + 0.2 * rng.random(n) > 0.3), (d[:, 1] - d[:, 2] + 0.2 * rng.random(n) > 0.1),
                  np.zeros(n, bool)], axis=1).astype(np.float32)
    return X, y, np.ones_like(y, dtype=bool)


@pytest.fixture(scope="module")
def fitted():
    X, y, m = _data(600, 0)
    Xv, yv, mv = _data(200, 1)
    return GBMModel(**FAST).fit(X, y, m, Xv, yv, mv, seed=0), (X, y, m, Xv, yv, mv)


def test_boosters_learn_their_labels_and_a_one_class_label_is_a_constant(fitted):
    model, _ = fitted
    Xt, yt, _ = _data(400, 2)
    logits = model.decision_function(Xt)
    assert logits.shape == (400, 3) and logits.dtype == np.float64
    assert roc_auc_score(yt[:, 0], logits[:, 0]) > 0.9 and roc_auc_score(yt[:, 1], logits[:, 1]) > 0.8
    assert [info["kind"] for info in model.labels_] == ["booster", "booster", "constant"]
    np.testing.assert_array_equal(logits[:, 2], constant_logit(np.zeros(600)))  # the clipped base rate, 1e-4
    assert np.isclose(1 / (1 + np.exp(-logits[0, 2])), 1e-4)
    imp = model.feature_importance()
    assert imp.shape == (3, 30) and imp[0].argmax() == 0 and not imp[2].any()
    for j in (0, 2):  # per-sample contributions add up to the logit (TreeSHAP; a constant is all bias), up
        contrib = model.contributions(Xt[:50], j)  # to LightGBM's float rounding along another summation path
        assert contrib.shape == (50, 31)
        np.testing.assert_allclose(contrib.sum(1), logits[:50, j], rtol=0, atol=1e-6)
    assert np.abs(model.contributions(Xt[:50], 0)[:, 0]).mean() > np.abs(model.contributions(Xt[:50], 0)[:, 5]).mean()


def test_each_label_learns_from_its_known_samples_only():
    X, y, m = _data(600, 0)
    Xv, yv, mv = _data(200, 1)
    flipped = y.copy()
    flipped[300:, 0] = 1 - flipped[300:, 0]  # contradicting labels, masked out
    m[300:, 0] = False
    mv[100:, 0] = False
    model = GBMModel(**FAST).fit(X, flipped, m, Xv, yv, mv)
    Xt, yt, _ = _data(400, 2)
    assert roc_auc_score(yt[:, 0], model.decision_function(Xt)[:, 0]) > 0.85
    assert model.labels_[0]["train_samples"] == 300 and model.labels_[0]["val_samples"] == 100


def test_labels_known_on_the_same_samples_share_a_dataset_and_get_the_trees_of_a_fit_alone():
    """Labels 0, 2 and 3 are known on every sample (one binned Dataset, its label set per booster), label 1 on
    half: each booster's text equals that of the label fitted on its own, in any order of the labels."""
    X, y, m = _data(600, 0)
    Xv, yv, mv = _data(200, 1)
    rng = np.random.default_rng(3)
    y = np.concatenate([y[:, :2], (rng.random((600, 1)) < 0.3) | (y[:, :1] > 0), y[:, 1:2]], 1).astype(np.float32)
    yv = np.concatenate([yv[:, :2], (rng.random((200, 1)) < 0.3) | (yv[:, :1] > 0), yv[:, 1:2]], 1).astype(np.float32)
    m, mv = np.ones_like(y, dtype=bool), np.ones_like(yv, dtype=bool)
    m[300:, 1] = False
    mv[::2, 1] = False
    together = GBMModel(**FAST).fit(X, y, m, Xv, yv, mv, seed=0)
    texts = [b.model_to_string() for b in together.boosters_]
    for j in range(4):
        alone = GBMModel(**FAST).fit(X, y[:, [j]], m[:, [j]], Xv, yv[:, [j]], mv[:, [j]], seed=0)
        assert alone.boosters_[0].model_to_string() == texts[j], j
    assert together.labels_[1]["train_samples"] == 300 and together.labels_[1]["val_samples"] == 100
    assert together.labels_[3]["rounds"] != together.labels_[0]["rounds"] or texts[3] != texts[0]


def test_save_load_round_trip_and_the_same_fit_twice(fitted):
    model, (X, y, m, Xv, yv, mv) = fitted
    text = json.dumps(model.to_dict())
    loaded = GBMModel.from_dict(json.loads(text))
    np.testing.assert_allclose(loaded.decision_function(Xv), model.decision_function(Xv), rtol=0, atol=1e-9)
    assert loaded.config == model.config
    # seeded and deterministic (one thread): the same data give the same model text
    again = GBMModel(**FAST).fit(X, y, m, Xv, yv, mv, seed=0)
    assert json.dumps(again.to_dict()) == text


def test_added_labels_leave_the_old_boosters_unchanged(fitted):
    model, (X, y, _, Xv, yv, _) = fitted
    model = GBMModel.from_dict(model.to_dict())
    before = model.decision_function(Xv)
    new_y = np.stack([y[:, 1], 1 - y[:, 0]], axis=1)
    model.add_labels(X, new_y, np.ones_like(new_y, dtype=bool), Xv, np.stack([yv[:, 1], 1 - yv[:, 0]], axis=1),
                     np.ones((len(yv), 2), bool))
    after = model.decision_function(Xv)
    assert after.shape == (200, 5)
    # the old boosters are the same objects, never refit: their scores are identical
    np.testing.assert_array_equal(after[:, :3], before)
    assert roc_auc_score(yv[:, 0], -after[:, 4]) > 0.9
    loaded = GBMModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(loaded.decision_function(Xv), after, rtol=0, atol=1e-9)


def test_a_label_without_tuning_samples_trains_a_fixed_number_of_rounds_and_shapes_are_checked():
    X, y, m = _data(300, 0)
    seen = []
    model = GBMModel(rounds_without_validation=7).fit(X, y[:, :1], m[:, :1], on_label=lambda j, i: seen.append(j))
    assert model.labels_[0]["stopped"] == "no_validation" and model.labels_[0]["rounds"] == 7 and seen == [0]
    with pytest.raises(ModelError, match="30 features"):
        model.decision_function(X[:, :10])
    with pytest.raises(ModelError, match="not fitted"):
        GBMModel().decision_function(X)


# -- the test: a signal only recency features can see ----------------------------------------


def _recency_cohort(n: int, seed: int, tmp_path):
    """Every patient has four visits and the code SYMPTOM exactly twice; for a third of them the second
    SYMPTOM is at the last visit (seen within 30 days of the prediction time), for the rest it is a year
    and more earlier. The next-window label (one per patient) follows a recent SYMPTOM: P = 0.75 if recent,
    0.15 if not. Counts, the last values, age and visit counts are alike in both groups."""
    rng = np.random.default_rng(seed)
    start = datetime(2018, 1, 1)
    rows, times, y = [], [], []
    for p in range(n):
        recent = rng.random() < 1 / 3
        days = np.sort(rng.choice(np.arange(0, 900), 3, replace=False)).tolist() + [int(rng.integers(1000, 1100))]
        symptom_at = {2, 3} if recent else {0, 1}
        rows.append((p, None, "GENDER//" + "FM"[int(rng.integers(2))], None))
        rows.append((p, (start - timedelta(days=int(rng.integers(20, 80) * 365))).isoformat(), "MEDS_BIRTH", None))
        for k, d in enumerate(days):
            when = (start + timedelta(days=d)).isoformat()
            rows += [(p, when, "ENCOUNTER", None), (p, when, "LAB//X", float(rng.normal(5, 1)))]
            rows += [(p, when, c, None) for c in rng.choice(["NOISE//A", "NOISE//B", "NOISE//C"], 2)]
            if k in symptom_at:
                rows.append((p, when, "SYMPTOM", None))
        times.append(int((start + timedelta(days=days[-1] + 1) - datetime(1970, 1, 1)).total_seconds()))
        y.append(rng.random() < (0.75 if recent else 0.15))
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8,
                                       "numeric_value": pl.Float64}, orient="row")
    store = build_store([normalise_events(frame, "recency.csv")], tmp_path / "recency")
    off = np.asarray(store.offsets)
    rows_ = np.arange(n)
    vo = np.asarray(store.visit_offsets)
    yy = np.asarray(y, np.float32)[:, None]
    samples = Samples(rows_, np.asarray(times), off[1:], vo[1:] - vo[:-1], np.asarray(times) + 365 * 86400, yy,
                      np.ones_like(yy, dtype=bool), np.zeros_like(yy, dtype=bool))
    return store, samples


def test_gbm_on_history_features_beats_logistic_on_counts_when_only_recency_matters(tmp_path):
    store, s = _recency_cohort(1500, 0, tmp_path)
    tr, va, te = np.arange(900), np.arange(900, 1100), np.arange(1100, 1500)
    enc = EventEncoder.fit(store, tr)
    counts = count_matrix(history_features(store, s, enc), enc.n_codes)
    logistic = LogisticBaseline(counts.shape[1], 1).fit(counts[tr], s.y[tr], s.mask[tr], seed=0)
    auc_logistic = roc_auc_score(s.y[te, 0], logistic.decision_function(counts[te])[:, 0])

    feat = HistoryFeaturizer().fit(store, tr, enc)
    X = feat.transform(store, s)
    gbm = GBMModel().fit(X[tr], s.y[tr], s.mask[tr], X[va], s.y[va], s.mask[va], seed=0)
    auc_gbm = roc_auc_score(s.y[te, 0], gbm.decision_function(X[te])[:, 0])
    # the oracle (P by group) is about 0.80 here; counts are blind to the signal
    assert auc_gbm > 0.74, auc_gbm  # 0.773 with seed 0
    assert auc_logistic < 0.6, auc_logistic  # 0.509
    assert auc_gbm - auc_logistic > 0.15
    top = np.array(feat.feature_names_)[gbm.feature_importance()[0].argmax()]
    assert top in ("recency:SYMPTOM", "count_30d:SYMPTOM", "count_365d:SYMPTOM"), top


def test_above_max_features_each_label_sees_its_screened_columns_and_predicts_and_explains_as_before():
    """With more columns than max_features (a hospital vocabulary), each booster is fit on the dense columns
    and the ones whose presence goes with its label (screen_columns): the signal columns are kept, the
    choice is saved, and predictions, contributions and importances come back in all columns."""
    from ehrdx.models.gbm_datasets import screen_columns

    X, y, m = _data(600, 0)
    Xv, yv, mv = _data(200, 1)
    dense_col = sp.csr_matrix((np.random.default_rng(3).random((600, 1)) + 2 * X[:, [0]].toarray()).astype(np.float32))
    Xw = sp.hstack([X, dense_col]).tocsr()  # column 30: dense, and carries label 0
    Xvw = sp.hstack([Xv, sp.csr_matrix(np.full((200, 1), 0.5, np.float32))]).tocsr()
    cols = screen_columns(Xw, y[:, 0], 6)
    assert len(cols) == 6 and 0 in cols and 30 in cols and list(cols) == sorted(cols)
    assert screen_columns(Xw, y[:, 0], 31) is None  # not above the limit: every column
    model = GBMModel(**FAST, max_features=6).fit(Xw, y, m, Xvw, yv, mv, seed=0)
    assert [len(info.get("columns", [])) for info in model.labels_] == [6, 6, 0]
    assert {1, 2} <= set(model.labels_[1]["columns"])
    Xt, yt, _ = _data(400, 2)
    Xtw = sp.hstack([Xt, sp.csr_matrix(np.full((400, 1), 0.5, np.float32))]).tocsr()
    logits = model.decision_function(Xtw)
    assert roc_auc_score(yt[:, 0], logits[:, 0]) > 0.9 and roc_auc_score(yt[:, 1], logits[:, 1]) > 0.8
    loaded = GBMModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert loaded.max_features == 6
    np.testing.assert_array_equal(loaded.decision_function(Xtw), logits)  # the same boosters on the same columns
    contrib = model.contributions(Xtw[:50], 1)
    assert contrib.shape == (50, 32)
    np.testing.assert_allclose(contrib.sum(1), logits[:50, 1], rtol=0, atol=1e-6)
    unused = np.setdiff1d(np.arange(31), model.labels_[1]["columns"])
    assert not contrib[:, unused].any()
    imp = model.feature_importance()
    assert imp.shape == (3, 31) and not imp[0, np.setdiff1d(np.arange(31), model.labels_[0]["columns"])].any()


def test_gbm_counts_reads_only_counts_and_age_and_is_blind_to_recency(tmp_path):
    """`gbm-counts` (a registry model and an `auto` member): the same boosters on each code's count and age
    (sex is a code) only; on the recency cohort it cannot see what gbm sees. Saved and loaded, it predicts the
    same, and `ehrdx update`'s path adds boosters on the same columns."""
    from ehrdx.data.history import HistorySet
    from ehrdx.models.registry import get_model

    store, s = _recency_cohort(1500, 0, tmp_path)
    enc = EventEncoder.fit(store, np.arange(900))

    def part(rows, y=None):
        sub = s.subset(rows)
        y = sub.y if y is None else y
        return HistorySet(store, sub, enc, y, np.ones_like(y, dtype=bool))

    tr, va, te = part(np.arange(900)), part(np.arange(900, 1100)), part(np.arange(1100, 1500))
    aucs = {}
    for name in ("gbm", "gbm-counts"):
        spec = get_model(name)
        model = spec.build(tr, 1, {}).fit_sets(tr, va, seed=0)
        aucs[name] = roc_auc_score(te.samples.y[:, 0], model.predict_logits(te)[:, 0])
        back = spec.load(*spec.save(model))
        np.testing.assert_array_equal(back.predict_logits(te), model.predict_logits(te))  # same trees, same rows
    assert back.features == "counts" and spec.save(model)[0]["features"] == "counts"
    names = model.feature_names
    assert "age_years" in names and "count:GENDER//F" in names and "count:SYMPTOM" in names
    assert all(n == "age_years" or n.startswith("count:") for n in names), names
    assert model.gbm.n_features_ == len(names) == 1 + model.featurizer.n_code_columns
    assert aucs["gbm"] > 0.74 and aucs["gbm-counts"] < 0.6, aucs  # 0.773 and about chance
    # a second label (as `ehrdx update` adds): the recency target again; the first label's logits stay
    before = model.predict_logits(te)
    two = [part(r, np.hstack([s.subset(r).y, s.subset(r).y])) for r in (np.arange(900), np.arange(900, 1100))]
    model.add_labels(two[0], two[1], n_old=1, seed=0)
    after = model.predict_logits(te)
    assert after.shape == (400, 2) and model.n_labels == 2
    np.testing.assert_array_equal(after[:, :1], before)  # the old booster, untouched
    np.testing.assert_allclose(after[:, 1], before[:, 0], atol=1e-9)  # same data and seed: the same trees
    from ehrdx.search import space_of

    assert space_of("gbm-counts") == space_of("gbm")  # --search: gbm's settings (auto: gbm's search sets both)


def test_a_gbm_saved_before_feature_sets_loads_as_all_features(tmp_path):
    from ehrdx.models.registry import get_model

    store, s = _recency_cohort(300, 1, tmp_path)
    enc = EventEncoder.fit(store, np.arange(200))
    from ehrdx.data.history import HistorySet

    ds = HistorySet(store, s, enc, s.y, s.mask)
    spec = get_model("gbm")
    model = spec.build(ds, 1, {"gbm_params": None}).fit_sets(ds, None, seed=0)
    config, state, files = spec.save(model)
    assert config.pop("features") == "all"  # what older versions wrote: no "features"
    back = spec.load(config, state, files)
    assert back.features == "all" and len(back.feature_names) == model.featurizer.n_features
    np.testing.assert_array_equal(back.predict_logits(ds), model.predict_logits(ds))


def test_the_screen_scores_a_column_with_missing_rows_on_the_rows_it_knows():
    """days_since_previous_visit is NaN at every patient's first visit, and age_years where a birth is missing:
    such a column is scored on its known rows, not dropped for its NaN entries."""
    from ehrdx.models.gbm_datasets import screen_columns

    rng = np.random.default_rng(0)
    n = 400
    y = rng.random(n) < 0.3
    X = rng.random((n, 8)) * 0.1  # noise columns
    X[:, 2] = y * 5.0 + rng.random(n)  # carries the label
    X[:5, 2] = np.nan  # unknown for a few rows
    X[:, 5] = np.nan  # unknown everywhere: nothing to score
    cols = screen_columns(sp.csr_matrix(X), y, 2)
    assert 2 in cols and 5 not in cols
    # without NaN the column scores as before (NaN rows set to the known rows' mean change nothing else)
    known = ~np.isnan(X[:, 2])
    assert 2 in screen_columns(sp.csr_matrix(np.nan_to_num(X[known])), y[known], 1)
