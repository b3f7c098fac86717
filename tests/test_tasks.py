"""Prediction times, label windows, censoring and new-onset masks on a hand-built store."""

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from ehrdx.data.meds import normalise_events
from ehrdx.data.store import STATIC_TIME, build_store
from ehrdx.errors import DataError
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times


def _ts(*args) -> int:
    return int(datetime(*args).timestamp())


def hand_store(tmp_path):
    d = datetime
    frame = pl.DataFrame({
        "subject_id": [1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2],
        "time": [None, d(1970, 1, 1), d(2020, 1, 1), d(2020, 1, 1), d(2020, 6, 1), d(2020, 6, 1), d(2021, 1, 1),
                 d(2021, 3, 1), d(2020, 1, 1), d(2020, 1, 1), d(2022, 1, 1)],
        "code": ["GENDER//F", "MEDS_BIRTH", "DX//E11", "LAB//X", "DX//I10", "DX//E11", "NOISE", "MEDS_DEATH",
                 "LAB//Y", "DX//J44", "DX//E11"],
        "numeric_value": [None, None, None, 5.0, None, None, None, None, 1.0, None, None],
    }, schema_overrides={"time": pl.Datetime("us"), "numeric_value": pl.Float32})
    store = build_store([normalise_events(frame, "hand.parquet")], tmp_path / "store")
    selector = LabelSelector.parse("prefix:DX//")
    vocab = LabelVocab(sorted(label_first_times(store, np.arange(len(store)), selector)))
    return store, selector, vocab


def test_next_visit_labels_history_and_left_out_samples(tmp_path):
    store, selector, vocab = hand_store(tmp_path)
    assert vocab.labels == ["E11", "I10", "J44"]
    s = build_samples(store, np.arange(2), TaskSpec.parse("next-visit"), code_label_index(store, selector, vocab), 3)
    assert [store.subject_ids[r] for r in s.row] == [1, 1, 2]
    assert s.time.tolist() == [_ts(2020, 1, 1), _ts(2020, 6, 1), _ts(2020, 1, 1)]
    assert s.y.tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 0]]
    assert s.history.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    assert s.mask.all() and s.n_visits.tolist() == [1, 2, 1]
    assert s.counts == {"samples_without_next_visit": 2, "samples_without_known_labels_left_out": 2}
    # new onset: a label already recorded is unknown, not a negative
    assert s.train_mask(True).tolist() == [[False, True, True], [False, False, True], [True, True, False]]


def test_window_censoring_masks_labels_that_did_not_occur(tmp_path):
    store, selector, vocab = hand_store(tmp_path)
    idx = code_label_index(store, selector, vocab)
    s = build_samples(store, np.arange(2), TaskSpec.parse("window:365d"), idx, 3)
    # patient 1 at 2020-06-01: death on 2021-03-01 ends follow-up inside the window -> nothing known
    assert s.time.tolist() == [_ts(2020, 1, 1), _ts(2020, 1, 1)]
    assert s.y.tolist() == [[1, 1, 0], [0, 0, 0]]
    assert s.counts["censored_samples"] == 3
    kept = build_samples(store, np.arange(2), TaskSpec.parse("window:365d", censor=False), idx, 3)
    assert len(kept) == 5 and kept.mask.all()
    # a censored sample keeps its positives as known positives
    s2 = build_samples(store, np.arange(2), TaskSpec.parse("window:800d"), idx, 3, require_labels=False)
    assert len(s2) == 5 and s2.counts["censored_samples"] == 5
    assert s2.mask[3].tolist() == [True, False, False] and s2.y[3].tolist() == [1, 0, 0]


def test_user_prediction_times_cut_features_at_the_time(tmp_path):
    store, selector, vocab = hand_store(tmp_path)
    idx = code_label_index(store, selector, vocab)
    rows = np.array([0, 1, 0])
    times = np.array([_ts(2020, 3, 1), _ts(2019, 1, 1), _ts(2020, 6, 1)])
    s = build_samples(store, np.arange(2), TaskSpec.parse("next-visit"), idx, 3, times=(rows, times))
    assert s.counts["prediction_times_before_first_visit"] == 1
    assert s.time.tolist() == [_ts(2020, 3, 1), _ts(2020, 6, 1)]
    assert s.n_visits.tolist() == [1, 2]
    # features: static rows, birth and visit 1 (cutoff 5 = after LAB//Y); at 2020-06-01 visit 2 too
    assert (s.cutoff - store.offsets[s.row]).tolist() == [5, 7]
    assert s.y.tolist() == [[1, 1, 0], [0, 0, 0]]


def test_features_never_reach_past_the_prediction_time(tmp_path):
    from ehrdx.data.meds import normalise_events as norm
    from ehrdx.data.synth_visits import generate_longitudinal

    cohort = generate_longitudinal(300, seed=3)
    store = build_store([norm(cohort.events, "synth")], tmp_path / "s")
    selector = LabelSelector.parse("map:" + str(_write_map(tmp_path, cohort)))
    vocab = LabelVocab(sorted(label_first_times(store, np.arange(len(store)), selector)))
    idx = code_label_index(store, selector, vocab)
    for task in ("next-visit", "window:180d"):
        s = build_samples(store, np.arange(len(store)), TaskSpec.parse(task), idx, len(vocab), require_labels=False)
        t = np.asarray(store.times)
        assert (t[s.cutoff - 1] <= s.time).all()
        ends = np.asarray(store.offsets)[s.row + 1]
        after = s.cutoff < ends
        assert (t[s.cutoff[after]] > s.time[after]).all()
    # the next-visit labels agree with the generator's own record of what was coded
    s = build_samples(store, np.arange(len(store)), TaskSpec.parse("next-visit"), idx, len(vocab))
    assert len(s) == cohort.oracle.height - len(store)  # every visit but each patient's last
    assert set(vocab.labels) == set(cohort.label_map["label"])


def _write_map(tmp_path, cohort):
    path = tmp_path / "label_map.csv"
    cohort.label_map.write_csv(path)
    return path


def test_label_selectors(tmp_path):
    assert LabelSelector.parse("prefix:ICD10//:3").labels_of("ICD10//E11.9") == ["E11"]
    assert LabelSelector.parse("prefix:ICD10//").labels_of("LAB//X") == []
    assert LabelSelector.parse("regex:^ICD10//(I[0-9]{2})").labels_of("ICD10//I10.1") == ["I10"]
    assert LabelSelector.parse("regex:^ICD10//E").labels_of("ICD10//E11") == ["ICD10//E"]
    (tmp_path / "m.yaml").write_text("diabetes: [ICD10//E10*, ICD10//E11*]\nICD10//I10: hypertension\n")
    sel = LabelSelector.parse(f"map:{tmp_path / 'm.yaml'}")
    assert sel.labels_of("ICD10//E11.9") == ["diabetes"] and sel.labels_of("ICD10//I10") == ["hypertension"]
    assert sel.labels_of("ICD10//E12") == []
    # a code may record several labels: a category and its finer code
    (tmp_path / "h.csv").write_text("code,label\nA*,A\nA.1,A.1\nA.1,A.1\n")
    assert LabelSelector.parse(f"map:{tmp_path / 'h.csv'}").labels_of("A.1") == ["A.1", "A"]
    with pytest.raises(DataError, match="unknown label spec"):
        LabelSelector.parse("icd:3")
    with pytest.raises(DataError, match="unknown task"):
        TaskSpec.parse("window:1 year")
    assert TaskSpec.parse("window:365d").name == "window:365d" and TaskSpec.parse("window:12h").horizon_seconds == 43200


def test_static_time_sorts_first():
    assert STATIC_TIME < _ts(1900, 1, 1)


def test_targets_round_trip_as_long_table_and_meds_task_directories(tmp_path):
    from ehrdx.tasks.targets import read_targets, targets_from_samples, write_long, write_meds_tasks

    store, selector, vocab = hand_store(tmp_path)
    idx = code_label_index(store, selector, vocab)
    s = build_samples(store, np.arange(2), TaskSpec.parse("window:800d", new_onset=True), idx, 3,
                      require_labels=False)
    t = targets_from_samples(store, s, vocab.labels, new_onset=True)
    assert not t.mask.all() and t.y.any()
    for path in (tmp_path / "t.parquet", tmp_path / "t.csv"):
        back = read_targets(write_long(t, path))
        assert back.labels == t.labels
        np.testing.assert_array_equal(back.subject_id, t.subject_id)
        np.testing.assert_array_equal(back.time, t.time)
        np.testing.assert_array_equal(back.mask, t.mask)
        np.testing.assert_array_equal(back.y * back.mask, t.y * t.mask)
    back = read_targets(write_meds_tasks(t, tmp_path / "tasks"))
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == ["E11", "I10", "J44"]
    known = t.mask.any(1)  # a time where every label is unknown appears in no task file
    np.testing.assert_array_equal(back.time, t.time[known])
    np.testing.assert_array_equal(back.mask, t.mask[known])
    np.testing.assert_array_equal(back.y * back.mask, (t.y * t.mask)[known])
