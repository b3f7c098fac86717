"""History features (data/history.py) on a store a reader can check by hand, and the leakage guard."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ehrdx.data.history import DAY, HistoryFeaturizer, segmented_cumsum
from ehrdx.data.meds import normalise_events
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import YEAR, EventEncoder
from ehrdx.data.store import build_store
from ehrdx.errors import ModelError

ROWS = [  # patient 1: born 1970, a woman; A twice, B once, lab X three times
    (1, None, "GENDER//F", None), (1, "1970-01-01", "MEDS_BIRTH", None),
    (1, "2020-01-01", "A", None), (1, "2020-01-01", "LAB//X", 10.0),
    (1, "2020-03-01", "A", None), (1, "2020-03-01", "B", None), (1, "2020-03-01", "LAB//X", 12.0),
    (1, "2020-12-01", "LAB//X", 16.0),
    # patient 2: no birth, one visit, a code only it has (rare: the unknown bucket with min_count=2)
    (2, "2020-06-01", "A", None), (2, "2020-06-01", "RARE", None),
]


def _store(rows, path):
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8,
                                       "numeric_value": pl.Float64}, orient="row")
    return build_store([normalise_events(frame, "hand.csv")], path)


def _samples(store, rows, times) -> Samples:
    """Samples at the given (row, time) pairs; cutoff and visits counted from the store like tasks do."""
    rows, times = np.asarray(rows, np.int64), np.asarray(times, np.int64)
    off, ev_t = np.asarray(store.offsets), np.asarray(store.times)
    cutoff = np.array([off[r] + np.searchsorted(ev_t[off[r]:off[r + 1]], t, side="right") for r, t in zip(rows, times)])
    vs, vo = np.asarray(store.visit_starts), np.asarray(store.visit_offsets)
    n_visits = np.array([(vs[vo[r]:vo[r + 1]] < c).sum() for r, c in zip(rows, cutoff)])
    n = len(rows)
    return Samples(rows, times, cutoff, n_visits, times, np.zeros((n, 1), np.float32), np.ones((n, 1), bool),
                   np.zeros((n, 1), bool))


def _t(day: str) -> int:
    return int((datetime.fromisoformat(day) - datetime(1970, 1, 1)).total_seconds())


def _same(a, b) -> bool:
    """The same entries, NaN (unknown patient facts) equal to NaN."""
    a, b = a.tocsr(), b.tocsr()
    a.sort_indices()
    b.sort_indices()
    return (np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data, equal_nan=True))


@pytest.fixture
def hand(tmp_path):
    store = _store(ROWS, tmp_path / "s")
    enc = EventEncoder.fit(store, np.arange(len(store)), min_count=2)
    feat = HistoryFeaturizer().fit(store, np.arange(len(store)), enc)
    return store, feat


def test_hand_built_history_features(hand):
    store, feat = hand
    t = _t("2020-12-15")
    counts: dict[str, int] = {}
    X = feat.transform(store, _samples(store, [0, 0, 1], [_t("2020-03-01"), t, t]), counts).toarray()
    f = {name: X[:, j] for j, name in enumerate(feat.feature_names_)}
    assert feat.codes_ == ["A", "LAB//X"]  # GENDER//F, MEDS_BIRTH, B, RARE: once each, under min_count=2
    assert X.shape == (3, feat.n_features) and len(feat.feature_names_) == feat.n_features
    # counts over the whole history and in the windows (t - w, t]; small integers, exact in float32
    np.testing.assert_array_equal(f["count:A"], [2, 2, 1])
    np.testing.assert_array_equal(f["count_30d:A"], [1, 0, 0])  # on 2020-03-01 the visit of that day
    np.testing.assert_array_equal(f["count_365d:A"], [2, 2, 1])
    np.testing.assert_array_equal(f["count:LAB//X"], [2, 3, 0])
    np.testing.assert_array_equal(f["count_30d:LAB//X"], [1, 1, 0])
    # the unknown code: GENDER//F (static: counted, in no window), MEDS_BIRTH and B for patient 1; RARE
    np.testing.assert_array_equal(f["count:<unknown>"], [3, 3, 1])
    np.testing.assert_array_equal(f["count_365d:<unknown>"], [1, 1, 1])
    assert counts == {"codes:unseen": 7}
    # recency: 1 / (1 + days since last seen), 0 for never
    np.testing.assert_allclose(f["recency:A"], [1.0, 1 / (1 + 289), 1 / (1 + 197)], rtol=1e-6)
    np.testing.assert_allclose(f["recency:LAB//X"], [1.0, 1 / (1 + 14), 0.0], rtol=1e-6)
    # numeric: last, last minus previous, least-squares slope per year, number of values
    np.testing.assert_allclose(f["last:LAB//X"], [12, 16, 0])
    np.testing.assert_allclose(f["delta:LAB//X"], [2, 4, 0])
    np.testing.assert_allclose(f["n_values:LAB//X"], [2, 3, 0])
    x = (np.array([_t("2020-01-01"), _t("2020-03-01"), _t("2020-12-01")]) - _t("2020-01-01")) / YEAR
    np.testing.assert_allclose(f["slope_per_year:LAB//X"], [2 / x[1], np.polyfit(x, [10, 12, 16], 1)[0], 0],
                               rtol=1e-5)
    # patient facts: NaN where unknown (no birth; no visit before the last)
    np.testing.assert_allclose(f["age_years"][:2], [(_t("2020-03-01") - 0) / YEAR, t / YEAR], rtol=1e-6)
    assert np.isnan(f["age_years"][2])
    np.testing.assert_array_equal(f["n_visits"], [2, 3, 1])
    np.testing.assert_array_equal(f["n_events"], [7, 8, 2])
    np.testing.assert_allclose(f["days_since_last_visit"], [0, 14, 197])
    np.testing.assert_allclose(f["days_since_previous_visit"][:2], [60, 289])
    assert np.isnan(f["days_since_previous_visit"][2])
    np.testing.assert_allclose(f["days_since_first_visit"], [60, 349, 197])
    np.testing.assert_array_equal(f["visits_30d"], [1, 1, 0])
    np.testing.assert_array_equal(f["visits_365d"], [2, 3, 1])


def test_sample_order_does_not_matter_and_the_featuriser_round_trips_through_json(hand):
    import json

    store, feat = hand
    s = _samples(store, [1, 0, 0], [_t("2020-12-15"), _t("2020-12-15"), _t("2020-02-01")])
    X = feat.transform(store, s)
    again = HistoryFeaturizer.from_dict(json.loads(json.dumps(feat.to_dict())))
    rev = np.array([2, 1, 0])
    # the same arithmetic on the same events whatever the order or the copy: exact by construction
    assert _same(again.transform(store, s.subset(rev)), X[rev]) and again.feature_names_ == feat.feature_names_
    assert _same(feat.transform(store, s, chunk=1), X)  # one sample at a time
    empty = feat.transform(store, s.subset(np.zeros(3, bool)))
    assert empty.shape == (0, feat.n_features)


def test_max_codes_keeps_the_most_frequent_codes_and_the_rest_count_as_unknown(hand):
    store, _ = hand
    enc = EventEncoder.fit(store, np.arange(len(store)))
    feat = HistoryFeaturizer(max_codes=2).fit(store, np.arange(len(store)), enc)
    assert feat.codes_ == ["A", "LAB//X"] and feat.numeric_codes_ == ["LAB//X"]  # 3 events each, the rest 1
    X = feat.transform(store, _samples(store, [0, 1], [_t("2020-12-15")] * 2)).toarray()
    np.testing.assert_array_equal(X[:, feat.feature_names_.index("count:<unknown>")], [3, 1])
    with pytest.raises(ModelError, match="not fitted"):
        HistoryFeaturizer().transform(store, _samples(store, [0], [_t("2020-12-15")]))


def test_events_after_the_prediction_time_change_no_feature(tmp_path):
    """Events after each sample's prediction time (the rest of the history, and new codes, values and known
    codes appended) change no feature of that sample: features at a date from a store cut at that date
    equal those from the full store."""
    rng = np.random.default_rng(0)
    day0 = datetime(2019, 1, 1)
    rows = []
    for p in range(40):
        rows += [(p, None, "GENDER//" + "FM"[p % 2], None), (p, "1960-05-05", "MEDS_BIRTH", None)]
        for _ in range(int(rng.integers(3, 12))):
            when = (day0 + timedelta(days=int(rng.integers(0, 1500)))).isoformat()
            rows += [(p, when, c, None) for c in rng.choice(["A", "B", "C", "D"], int(rng.integers(1, 4)))]
            rows.append((p, when, "LAB//X", float(rng.normal(5, 2))))
    extra = [(p, "2023-01-01", c, v) for p in range(0, 40, 3) for c, v in (("LAB//NEW", 1e6), ("A", None),
                                                                          ("LAB//X", -1e6))]
    full = _store(rows + extra, tmp_path / "full")
    for k, cut in enumerate(("2019-06-01", "2020-01-15", "2020-06-30")):
        short = _store([r for r in rows if r[1] is None or r[1] <= cut], tmp_path / f"short{k}")
        feat = HistoryFeaturizer().fit(short, np.arange(30), EventEncoder.fit(short, np.arange(30)))
        r, t = np.arange(40), np.full(40, _t(cut))
        a = feat.transform(short, _samples(short, r, t))
        # in the full store, each patient also has a later sample, so its later events are read too
        b = feat.transform(full, _samples(full, np.tile(r, 2), np.concatenate([t, np.full(40, _t("2023-06-01"))])))
        assert a.nnz > 40 * 8
        # the same events before each cutoff, the same arithmetic: exact by construction
        assert _same(a, b[:40]), cut


def test_segmented_cumsum_sums_within_runs_only():
    rank = np.array([0, 1, 2, 0, 0, 1, 2, 3, 4])
    x = np.arange(1.0, 10.0)[:, None]
    np.testing.assert_array_equal(segmented_cumsum(x, rank)[:, 0], [1, 3, 6, 4, 5, 11, 18, 26, 35])


def test_window_counts_exclude_the_window_start_and_include_the_prediction_time(tmp_path):
    store = _store([(1, "2020-01-01", "A", None), (1, "2020-01-31", "A", None), (1, "2020-03-01", "A", None)],
                   tmp_path / "w")
    feat = HistoryFeaturizer(windows=(30 * DAY,)).fit(store, np.arange(1), EventEncoder.fit(store, np.arange(1)))
    X = feat.transform(store, _samples(store, [0, 0], [_t("2020-01-31"), _t("2020-03-01")])).toarray()
    j = feat.feature_names_.index("count_30d:A")
    np.testing.assert_array_equal(X[:, j], [1, 1])  # 2020-01-01 is exactly 30 days before 01-31: outside
