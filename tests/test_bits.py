"""Bit-packed label tables read back the dense entries, a block at a time, and count like dense sums."""

import hashlib

import numpy as np
import pytest
import torch

from ehrdx.data.bits import BitTable, column_sums, label_counts, label_tables
from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.train.checkpoint import data_fingerprint
from ehrdx.train.loop import label_pos_weight, masked_macro_score


def tables(seed=0, n=40, labels=21):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.3).astype(np.float32)
    mask = rng.random((n, labels)) < 0.8
    return y, mask


@pytest.mark.parametrize("key", [np.s_[:], np.s_[3:9], np.s_[:, 5:19], np.s_[[7, 0, 2], 8:9], np.s_[5, :],
                                 np.s_[np.arange(40) % 3 == 0, 16:21], np.s_[:, [20, 1]]])
def test_a_block_reads_the_dense_entries(key):
    _, mask = tables()
    t = BitTable.from_dense(mask)
    assert t.shape == (40, 21) and len(t) == 40
    assert np.array_equal(t[key], mask[key])


def test_from_entries_sets_exactly_the_listed_entries():
    rows, cols = np.array([0, 0, 3, 2, 2, 2]), np.array([0, 7, 8, 1, 2, 20])
    dense = np.zeros((4, 21), bool)
    dense[rows, cols] = True
    t = BitTable.from_entries(4, 21, rows, cols)
    assert np.array_equal(t.dense(), dense)
    assert np.array_equal(t.packed, BitTable.from_dense(dense).packed)  # padding bits clear, as packbits


def test_counts_equal_dense_sums_and_negation_keeps_padding_clear():
    y, mask = tables(1)
    ty, tm = BitTable.from_dense(y), BitTable.from_dense(mask)
    history = BitTable.from_dense(np.random.default_rng(2).random((40, 21)) < 0.5)
    for yy, mm in ((ty, tm), (y, mask)):
        pos, known = label_counts(yy, mm)
        assert np.array_equal(pos, ((y > 0.5) & mask).sum(0)) and np.array_equal(known, mask.sum(0))
    new = tm.and_not(history)
    assert np.array_equal(new.dense(), mask & ~history.dense())
    assert np.array_equal(column_sums(new), (mask & ~history.dense()).sum(0))


def test_training_reads_of_packed_tables_equal_the_dense_ones():
    y, mask = tables(3, n=60)
    mask[:, 4] = False  # a label never known
    ty, tm = BitTable.from_dense(y), BitTable.from_dense(mask)
    # float32 counts are whole numbers, so the weights are the same as from the dense float32 sums
    assert torch.equal(label_pos_weight(ty, tm), label_pos_weight(y, mask))
    scores = np.random.default_rng(4).random((60, 21))
    assert masked_macro_score(ty, tm, scores, "auroc") == masked_macro_score(y, mask, scores, "auroc")


class Packed:
    def __init__(self, y, mask):
        self.y_bits, self.mask_bits = BitTable.from_dense(y), BitTable.from_dense(mask)

    def __len__(self):
        return len(self.y_bits)


class Dense:
    def __init__(self, y, mask):
        self.y, self.y_mask = y, mask

    def __len__(self):
        return len(self.y)


def test_checkpoint_fingerprint_of_packed_targets_is_that_of_the_dense_arrays():
    y, mask = tables(5)
    assert label_tables(Packed(y, mask))[0].shape == y.shape
    assert data_fingerprint(Packed(y, mask), None) == data_fingerprint(Dense(y, mask), None)
    h = hashlib.sha256(y.tobytes() + mask.tobytes() + str((40, 40)).encode() + b"none").hexdigest()
    assert data_fingerprint(Dense(y, mask), None) == h


def test_samples_hold_bit_tables_and_a_subset_stays_packed():
    y, mask = tables(6)
    history = np.random.default_rng(7).random(y.shape) < 0.2
    z = np.zeros(40, np.int64)
    s = Samples(np.arange(40), z, z, z.astype(np.int32), z, BitTable.from_dense(y), mask, history)
    assert isinstance(s.train_mask_bits(True), BitTable)
    assert np.array_equal(s.train_mask_bits(True)[:, 2:9], (mask & ~history)[:, 2:9])
    sub = s.subset(np.arange(40) % 2 == 1)
    assert np.array_equal(sub.y_bits[:, 3:4], y[1::2, 3:4] > 0.5)


def test_a_sequence_batch_reads_its_samples_targets_from_the_packed_tables(tmp_path):
    from ehrdx.data.sequences import EventEncoder, SequenceSet
    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
    from ehrdx.estimator import EventClassifier
    from ehrdx.events_pipeline import open_store
    from ehrdx.tasks.labels import LabelVocab
    from ehrdx.tasks.task import label_first_times

    paths = write_longitudinal(generate_longitudinal(60, seed=1), tmp_path)
    store = open_store(meds=paths["meds"], store_dir=tmp_path / "store")
    clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}")
    clf.resolve_settings("events")
    rows = np.arange(len(store))
    clf.label_vocab_ = LabelVocab(sorted(label_first_times(store, rows, clf.selector_)))
    samples = clf.samples(store, rows)
    ds = SequenceSet(store, samples, EventEncoder.fit(store, rows), new_onset=True)
    y, known = samples.y, samples.train_mask(True)
    assert known.any() and (~known).any()
    seen = 0
    for batch in ds.batches(16):
        idx = batch.sample_index.numpy()
        assert np.array_equal(batch.y.numpy(), y[idx]) and np.array_equal(batch.y_mask.numpy(), known[idx])
        seen += len(idx)
    assert seen == len(samples)
    assert np.array_equal(ds.y, y) and np.array_equal(ds.y_mask, known)  # dense on demand


def test_pooled_ranking_equals_the_ranking_of_the_pooled_known_scores():
    from ehrdx.ranking import micro_ranking, pooled_ranking

    y, mask = tables(8, n=300, labels=17)
    scores = np.round(np.random.default_rng(9).random((300, 17)), 2)  # many ties
    rows = np.flatnonzero(np.arange(300) % 4 != 1)
    for r in (None, rows):
        sel = np.arange(300) if r is None else r
        want = micro_ranking(y[sel][mask[sel]], scores[sel][mask[sel]])
        # the same integer counts in the same formula: equal, not just close
        assert pooled_ranking(BitTable.from_dense(y), BitTable.from_dense(mask), scores, r, max_elements=600) == want
    assert pooled_ranking(y, np.zeros_like(mask), scores) == (None, None)


def test_evaluation_of_packed_tables_equals_that_of_dense_arrays():
    from ehrdx.evaluate.metrics import evaluate_predictions

    y, mask = tables(10, n=200, labels=19)
    mask[:, 3] = False
    y[:, 5] = 0
    proba = np.random.default_rng(11).random((200, 19))
    thr = np.linspace(0.2, 0.8, 19)
    groups = np.repeat(np.arange(50), 4)
    dense = evaluate_predictions(y, mask, proba, [f"L{j}" for j in range(19)], thr, (1, 3), groups)
    packed = evaluate_predictions(BitTable.from_dense(y), BitTable.from_dense(mask), proba,
                                  [f"L{j}" for j in range(19)], thr, (1, 3), groups)
    # every figure comes from the same integer counts or the same blocks of scores
    assert packed == dense


def test_the_task_mask_is_built_from_index_lists_as_the_dense_rule_gives_it():
    from ehrdx.tasks.task import known_entries, mask_before_introduction

    rng = np.random.default_rng(12)
    n, L = 57, 13
    rows, cols = rng.integers(0, n, 80), rng.integers(0, L, 80)
    rows, cols = np.r_[rows, np.zeros(L - 1, int), np.ones(L, int)], np.r_[cols, np.arange(L - 1), np.arange(L)]
    y = BitTable.from_entries(n, L, rows, cols)  # rows 0 and 1 mostly / all positive: kept flipped when sparse
    whole = rng.random(n) < 0.6
    whole[:2] = False  # censored: they know their positives only
    window_end = rng.integers(0, 100, n)
    introduced = rng.integers(0, 120, L).astype(float)
    introduced[3] = np.nan  # no date: never masked
    rules = ["icd", None, "first_record"] * 4 + ["icd"]
    dense = whole[:, None] | y.dense()  # whole windows know every label; censored ones their positives
    want = mask_before_introduction(dense, window_end, introduced, rules)
    assert want  # the case has entries before introduction, of both rules
    assert SparseTable.from_dense(y.dense()).flip[:2].all()
    for table in (y, SparseTable.from_dense(y.dense())):
        mask, counts = known_entries(table, whole, window_end, introduced, rules)
        assert np.array_equal(mask.dense(), dense) and counts == want and list(counts) == list(want)
        assert np.array_equal(mask.flip, whole)  # a whole window lists its unknowns, a censored one its knowns
    mask, counts = known_entries(y, whole, window_end, None)
    assert np.array_equal(mask.dense(), whole[:, None] | y.dense()) and counts == {}


def test_index_arrays_for_rows_and_columns_at_once_are_refused():
    t = BitTable.from_dense(np.eye(4, dtype=bool))
    with pytest.raises(IndexError, match="not both"):
        t[np.array([0, 1]), np.array([0, 1])]  # numpy would pair them; refused rather than read another way
    assert t[np.array([0, 1]), 1:3].tolist() == [[False, False], [True, False]]
