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


@pytest.fixture(scope="module")
def cohort_store(tmp_path_factory):
    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal

    out = tmp_path_factory.mktemp("chunks")
    paths = write_longitudinal(generate_longitudinal(150, seed=7), out / "c")
    return open_store(meds=paths["meds"], store_dir=out / "store")


def same_samples(a, b) -> None:
    for name in ("row", "time", "cutoff", "n_visits", "window_end"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("y_bits", "mask_bits", "history_bits"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert ta.shape == tb.shape, name
        for part in ("indptr", "cols", "flip"):
            assert np.array_equal(getattr(ta, part), getattr(tb, part)), (name, part)
    assert list(a.counts.items()) == list(b.counts.items())  # the same counts, in the same order


@pytest.mark.parametrize("task", ["next-visit", "window:365d", "window:90d:uncensored"])
@pytest.mark.parametrize("require_labels", [True, False])
def test_samples_built_a_few_patients_at_a_time_equal_one_build(cohort_store, task, require_labels):
    from ehrdx.train.checkpoint import data_fingerprint

    store = cohort_store
    selector = LabelSelector.parse("prefix:DX//:3")
    rows = np.arange(len(store))
    # Introduced at each label's first record: windows that end earlier do not know the label (masked, counted).
    vocab = LabelVocab.from_first_times(label_first_times(store, rows[:100], selector), infer_introduced=True)
    index = code_label_index(store, selector, vocab)
    spec = TaskSpec.parse(task.removesuffix(":uncensored"), new_onset=True, censor=not task.endswith("uncensored"))

    def build(chunk_entries: int):
        return build_samples(store, rows, spec, index, len(vocab), require_labels=require_labels,
                             introduced=vocab.introduced_seconds(), introduced_from=vocab.introduced_from(),
                             chunk_entries=chunk_entries)

    whole = build(10**12)  # one run of every patient
    assert len(whole) > 500 and whole.history_bits.n_listed > 0 and whole.y_bits.n_listed > 0
    assert whole.counts["label_entries_before_introduction_masked"] > 0
    assert (task == "next-visit") == ("samples_without_next_visit" in whole.counts)
    assert task.startswith("window") == ("censored_samples" in whole.counts)  # counted, masked or not
    for chunk_entries in (1, 3_000):  # one patient a run; a few patients a run
        part = build(chunk_entries)
        same_samples(part, whole)
        new_onset = part.train_mask_bits(True)
        assert np.array_equal(new_onset.dense(), whole.train_mask_bits(True).dense())
        assert data_fingerprint(part, None) == data_fingerprint(whole, None)


def test_runs_of_patients_stay_within_the_entry_budget():
    from ehrdx.tasks.chunks import EntryBudget

    budget = EntryBudget(np.array([5, 5, 5, 30, 5, 5]), 20)
    runs = []
    for p0, p1 in budget:
        runs.append((p0, p1))
        budget.built(0)  # no entries: a unit of cost costs 1
    assert runs == [(0, 1), (1, 3), (3, 4), (4, 6)]  # first a sixteenth of the budget; a patient over it alone
    budget = EntryBudget(np.array([5] * 6), 40)
    runs = []
    for p0, p1 in budget:
        runs.append((p0, p1))
        budget.built(15 * (p1 - p0))  # 3 entries per unit of cost: 4 per unit in all, 10 units a run
    assert runs == [(0, 1), (1, 3), (3, 5), (5, 6)]
