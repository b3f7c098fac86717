"""Samples keep targets, masks and history as index lists; they read back exactly, whole or by batch."""

import numpy as np
import pytest

from ehrdx.data.samples import Samples


def samples(seed=0, n=50, labels=13):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.3).astype(np.float32)
    mask = rng.random((n, labels)) < 0.8
    history = rng.random((n, labels)) < 0.2
    z = np.zeros(n, np.int64)
    return Samples(np.arange(n), z, z, z.astype(np.int32), z, y, mask, history), y, mask, history


def test_tables_read_back_exactly_and_take_bytes_per_listed_entry():
    s, y, mask, history = samples()
    assert s.y.dtype == np.float32 and np.array_equal(s.y, y)  # exact: 0/1 values unpacked from bits
    assert np.array_equal(s.mask, mask) and np.array_equal(s.history, history)
    assert np.array_equal(s.train_mask(True), mask & ~history) and np.array_equal(s.train_mask(False), mask)
    # per table: row pointers (8 bytes), a default per row (1 byte), 2 bytes per listed exception
    listed = sum(np.minimum(t.sum(1), 13 - t.sum(1)).sum() for t in (y > 0.5, mask, history))
    assert s.label_nbytes == 3 * (51 * 8 + 50) + 2 * listed


def test_a_batch_and_a_subset_read_the_same_entries():
    s, y, mask, history = samples(1)
    rows = np.array([4, 0, 31])
    yb, mb = s.targets_of(rows, new_onset=True)
    assert np.array_equal(yb, y[rows]) and np.array_equal(mb, (mask & ~history)[rows])
    keep = np.arange(50) % 3 == 0
    sub = s.subset(keep)
    assert len(sub) == keep.sum() and np.array_equal(sub.y, y[keep]) and np.array_equal(sub.history, history[keep])  # exact: 0/1 values copied


def test_changes_are_assigned_whole_never_lost_in_a_copy():
    s, _, mask, _ = samples(2)
    with pytest.raises(ValueError, match="read-only"):
        s.mask[:, 0] = False
    new = mask.copy()
    new[:, 0] = False
    s.mask = new
    assert not s.mask[:, 0].any()
    with pytest.raises(ValueError, match="must be"):
        s.mask = new[:, 1:]


def test_dense_targets_are_read_only_so_a_write_is_never_lost():
    s, _, _, _ = samples(2)
    for dense in (s.y, s.train_mask(True), s.train_mask(False)):
        with pytest.raises(ValueError, match="read-only"):
            dense[0, 0] = 1
