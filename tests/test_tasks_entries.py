"""Targets and history built for all labels at once equal a per-sample, per-label reading of the events."""

from pathlib import Path

import numpy as np
import pytest

from ehrdx.data.store import STATIC_TIME
from ehrdx.events_pipeline import open_store
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(meds=GOLDEN / "meds", store_dir=tmp_path_factory.mktemp("entries") / "store")


def reference(store, s, index, n_labels):
    """y and history by looking at each sample's patient's events one by one."""
    times, codes, offsets = np.asarray(store.times), np.asarray(store.codes), np.asarray(store.offsets)
    y = np.zeros((len(s), n_labels), np.float32)
    history = np.zeros((len(s), n_labels), bool)
    for i, (r, t, w) in enumerate(zip(s.row, s.time, s.window_end)):
        for e in range(offsets[r], offsets[r + 1]):
            for j in index.labels[index.ptr[codes[e]]:index.ptr[codes[e] + 1]]:
                if times[e] == STATIC_TIME or times[e] <= t:
                    history[i, j] = True
                elif times[e] <= w:
                    y[i, j] = 1
    return y, history


@pytest.mark.parametrize("task", ["next-visit", "window:180d", "window:730d"])
@pytest.mark.parametrize("spec", ["prefix:DX//", "prefix:DX//:1", "regex:^(?!GENDER|MEDS_BIRTH)(.+)"])
def test_targets_and_history_match_the_events(store, task, spec):
    selector = LabelSelector.parse(spec)
    rows = np.arange(len(store))
    vocab = LabelVocab(sorted(label_first_times(store, rows, selector)))
    index = code_label_index(store, selector, vocab)
    s = build_samples(store, rows, TaskSpec.parse(task, censor=False), index, len(vocab), require_labels=False)
    y, history = reference(store, s, index, len(vocab))
    known = s.mask.any(1)  # next-visit: samples without a next visit have no window and no positives
    assert s.y.sum() > 0 and history.sum() > 0
    assert np.array_equal(s.y, y * known[:, None])
    assert np.array_equal(s.history, history)


def test_no_label_records_give_no_entries(store):
    selector = LabelSelector.parse("prefix:NOT_A_CODE//")
    index = code_label_index(store, selector, LabelVocab(["A"]))
    s = build_samples(store, np.arange(len(store)), TaskSpec.parse("next-visit"), index, 1, require_labels=False)
    assert len(s) > 0 and not s.y.any() and not s.history.any()


@pytest.mark.parametrize("task", ["next-visit", "window:180d", "window:730d"])
def test_the_mask_lists_unknowns_of_whole_windows_and_positives_of_censored_ones(store, task):
    selector = LabelSelector.parse("prefix:DX//")
    rows = np.arange(len(store))
    vocab = LabelVocab(sorted(label_first_times(store, rows, selector)))
    index = code_label_index(store, selector, vocab)
    s = build_samples(store, rows, TaskSpec.parse(task), index, len(vocab), require_labels=False)
    last = np.asarray(store.times)[np.asarray(store.offsets)[s.row + 1] - 1]
    has_window = s.window_end > s.time  # next-visit: a next visit
    whole = has_window & (last >= s.window_end) if task != "next-visit" else has_window
    assert whole.any() and (~whole).any()
    assert np.array_equal(s.mask, whole[:, None] | (s.y > 0.5))  # censored windows know their positives
    assert np.array_equal(s.mask_bits.flip, whole) and s.mask_bits.n_listed == (s.y[~whole] > 0.5).sum()
    assert np.array_equal(s.train_mask(True), s.mask & ~s.history)
