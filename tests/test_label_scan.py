"""Scanning patients' events for label codes a run of patients at a time (tasks/scan.py) finds what one
pass over an int64 position per event found: each label's codes, its first record, the labels a
vocabulary lacks."""

import numpy as np
import pytest

from ehrdx.data.store import STATIC_TIME, concat_ranges
from ehrdx.tasks import scan
from ehrdx.tasks.labels import LabelVocab


def whole_pass(store, selector, rows):
    """The former implementation: every event's position at once."""
    offsets = np.asarray(store.offsets)
    pos = concat_ranges(offsets[rows], offsets[rows + 1])
    codes, times = np.asarray(store.codes)[pos], np.asarray(store.times)[pos]
    timed = times != STATIC_TIME
    first = np.full(len(store.code_names), np.iinfo(np.int64).max)
    np.minimum.at(first, codes[timed], times[timed])
    firsts, by_label = {}, {}
    for c in np.unique(codes):
        for lab in selector.labels_of(store.code_names[c]):
            t = int(first[c]) if first[c] != np.iinfo(np.int64).max else None
            if lab not in firsts or (t is not None and (firsts[lab] is None or t < firsts[lab])):
                firsts[lab] = t
            by_label.setdefault(lab, []).append(store.code_names[c])
    return firsts, by_label, set(np.unique(codes).tolist())


@pytest.mark.parametrize("max_events", [1, 37, 1 << 22])
def test_a_scan_in_runs_of_patients_finds_what_one_whole_pass_found(max_events, labelled_store, monkeypatch):
    _, _, store, clf = labelled_store(120, 3, "label_scan")
    monkeypatch.setattr(scan, "SCAN_EVENTS", max_events)
    rng = np.random.default_rng(0)
    for rows in (np.arange(len(store)), np.sort(rng.choice(len(store), 40, replace=False)),
                 rng.permutation(len(store))[:25], np.array([7])):
        firsts, by_label, present = whole_pass(store, clf.selector_, rows)
        assert len(by_label) > 3 or len(rows) == 1
        assert scan.label_first_times(store, rows, clf.selector_) == firsts
        assert scan.codes_of_labels(store, clf.selector_, rows) == by_label
        assert set(np.flatnonzero(scan.codes_present(store, rows)).tolist()) == present
        half = LabelVocab(sorted(by_label)[::2])
        assert scan.labels_missing_from(store, rows, clf.selector_, half) == sorted(set(by_label) - set(half.labels))
    assert scan.label_first_times(store, np.zeros(0, np.int64), clf.selector_) == {}
    assert not scan.codes_present(store, np.zeros(0, np.int64)).any()
    offsets = np.asarray(store.offsets)
    blocks = list(scan.event_blocks(store, np.arange(10)))
    assert np.array_equal(np.concatenate(blocks), np.arange(offsets[0], offsets[10]))
    if max_events == 37:  # runs of whole patients, each under the cap unless one patient is over it alone
        assert len(blocks) > 1 and all(len(b) <= 37 or np.searchsorted(offsets, b[-1], "right") - 1 ==
                                       np.searchsorted(offsets, b[0], "right") - 1 for b in blocks)
