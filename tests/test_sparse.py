"""Sparse label tables (index lists, negatives implied) read back exactly the dense entries and combine
like the dense tables, whatever each row lists: set entries, clear ones, none or all."""

import numpy as np
import pytest

from ehrdx.data.bits import BitTable, column_sums, label_counts
from ehrdx.data.sparse import SparseTable


def dense_table(seed, n=40, labels=21, p=0.3):
    """A random table with an empty row, a full row, a mostly-set row and a mostly-clear row."""
    rng = np.random.default_rng(seed)
    t = rng.random((n, labels)) < p
    t[3] = False
    t[5] = True
    t[7] = rng.random(labels) < 0.9
    t[8] = rng.random(labels) < 0.1
    return t


KEYS = [np.s_[:], np.s_[3:9], np.s_[:, 5:19], np.s_[2:38, 5:19], np.s_[[7, 0, 2], 8:9], np.s_[5, :], np.s_[-1],
        np.s_[np.arange(40) % 3 == 0, 16:21], np.s_[:, [20, 1]], np.s_[::3], np.s_[:, 4], np.s_[[5, 5, 3]],
        np.s_[:, 0:0], np.s_[10:10], np.s_[3, -2], np.s_[[1, 5], 20], np.s_[2:9, 0], np.s_[:, 3:21:2], np.s_[30:, :6]]


@pytest.mark.parametrize("key", KEYS)
def test_every_read_pattern_gives_the_dense_entries(key):
    dense = dense_table(0)
    for t in (SparseTable.from_dense(dense), SparseTable.from_dense(dense).invert().invert()):
        assert t.shape == (40, 21) and len(t) == 40
        got = t[key]
        assert got.dtype == bool and np.array_equal(got, dense[key])


def test_rows_list_their_fewer_exceptions():
    dense = dense_table(1)
    t = SparseTable.from_dense(dense)
    assert np.array_equal(t.flip, dense.sum(1) * 2 > 21)
    assert t.flip[5] and t.flip[7] and not t.flip[3] and not t.flip[8]
    assert np.diff(t.indptr)[5] == 0 and np.diff(t.indptr)[3] == 0  # a full row and an empty row list nothing
    assert t.n_listed == np.minimum(dense.sum(1), 21 - dense.sum(1)).sum()
    assert t.cols.dtype == np.int16 and t.nbytes == 41 * 8 + 2 * t.n_listed + 40


def test_from_entries_lists_exactly_the_entries_in_either_polarity():
    rows, cols = np.array([0, 0, 3, 2, 2, 2, 2]), np.array([7, 0, 8, 1, 20, 2, 1])  # unsorted, one repeat
    dense = np.zeros((4, 21), bool)
    dense[rows, cols] = True
    assert np.array_equal(SparseTable.from_entries(4, 21, rows, cols).dense(), dense)
    flip = np.array([True, False, True, True])
    assert np.array_equal(SparseTable.from_entries(4, 21, rows, cols, flip).dense(), dense ^ flip[:, None])
    empty = SparseTable.from_entries(0, 21, np.zeros(0), np.zeros(0))
    assert empty.shape == (0, 21) and empty.dense().shape == (0, 21) and empty.column_sums().sum() == 0


@pytest.mark.parametrize("block", [1, 7, 1 << 24])
def test_combinations_equal_the_dense_logic(block, monkeypatch):
    from ehrdx.data import sparse

    monkeypatch.setattr(sparse, "MAX_BLOCK", block)  # rows combined a few entries at a time, or all at once
    for seed in range(4):
        a, b = dense_table(seed, p=0.2 + 0.2 * seed), dense_table(seed + 10, p=0.7 - 0.2 * seed)
        b[11] = True  # all unknown / all recorded
        ta, tb = SparseTable.from_dense(a), SparseTable.from_dense(b)
        for x, tx in ((a, ta), (~a, ta.invert())):
            for y, ty in ((b, tb), (~b, tb.invert())):
                assert np.array_equal(tx.both(ty).dense(), x & y)
                assert np.array_equal(tx.and_not(ty).dense(), x & ~y)
                assert np.array_equal(tx.and_not(ty).column_sums(), (x & ~y).sum(0))
                assert np.array_equal(tx.both(ty).rows_any(), (x & y).any(1))


def test_a_mask_of_unknowns_stays_as_small_as_its_exceptions():
    """known = not unknown; the new-onset mask known and not history = not (unknown or history)."""
    rng = np.random.default_rng(5)
    n, L = 200, 1500
    unknown = SparseTable.from_entries(n, L, rng.integers(0, n, 50), rng.integers(0, L, 50))
    known = unknown.invert()
    history = SparseTable.from_entries(n, L, rng.integers(0, n, 400), rng.integers(0, L, 400))
    new = known.and_not(history)
    assert new.flip.all() and new.n_listed <= unknown.n_listed + history.n_listed
    assert np.array_equal(new.dense(), ~unknown.dense() & ~history.dense())
    assert new.nbytes < n * (L // 8) / 10  # well under a bit per entry


def test_counts_take_and_concat_equal_the_dense_ones():
    y, mask = dense_table(2, p=0.2), dense_table(3, p=0.8)
    ty, tm = SparseTable.from_dense(y), SparseTable.from_dense(mask)
    pos, known = label_counts(ty, tm)
    assert np.array_equal(pos, (y & mask).sum(0)) and np.array_equal(known, mask.sum(0))
    assert np.array_equal(column_sums(tm), mask.sum(0)) and np.array_equal(tm.rows_any(), mask.any(1))
    for rows in (np.array([9, 0, 5, 5, 3]), np.arange(40) % 4 == 1, np.zeros(0, np.int64)):
        assert np.array_equal(tm.take(rows).dense(), mask[rows])
    both = BitTable.concat([tm, BitTable.from_dense(y), ty.take(np.arange(3))])
    assert isinstance(both, SparseTable) and np.array_equal(both.dense(), np.concatenate([mask, y, y[:3]]))
    empty_first = SparseTable.concat([ty.take(np.zeros(0, np.int64)), tm, ty.take(np.zeros(0, np.int64)), ty])
    assert np.array_equal(empty_first.dense(), np.concatenate([mask, y]))
    with pytest.raises(ValueError, match="different widths"):
        SparseTable.concat([ty, SparseTable.from_dense(y[:, :3])])


def test_packed_and_sparse_tables_combine_either_way():
    a, b = dense_table(4), dense_table(6, p=0.6)
    pa, sb = BitTable.from_dense(a), SparseTable.from_dense(b)
    assert np.array_equal(pa.and_not(sb).dense(), a & ~b) and np.array_equal(sb.and_not(pa).dense(), b & ~a)
    assert np.array_equal(pa.both(sb).dense(), a & b) and isinstance(pa.both(sb), SparseTable)


def test_index_arrays_for_rows_and_columns_together_are_refused():
    t = SparseTable.from_dense(dense_table(0))
    with pytest.raises(IndexError, match="not both"):
        t[[1, 2], [3, 4]]
    with pytest.raises(IndexError, match="out of range"):
        t[40]


def test_code_written_for_packed_bytes_reads_the_same_bytes():
    """BitTable.packed readers (a popcount of some rows' bytes, a whole table copied to a device) get the
    bytes a BitTable of the same entries holds."""
    dense = dense_table(7)
    t, bits = SparseTable.from_dense(dense), BitTable.from_dense(dense)
    rows = np.array([8, 0, 5, 3])
    assert np.array_equal(t.packed[rows], bits.packed[rows]) and t.packed.shape == bits.packed.shape
    assert int(np.bitwise_count(t.packed[rows]).sum()) == dense[rows].sum()
    assert np.array_equal(np.ascontiguousarray(t.packed), bits.packed)
    assert np.array_equal(t.packed[2:9, 1:], bits.packed[2:9, 1:]) and np.array_equal(t.packed[4], bits.packed[4])


@pytest.mark.parametrize("rows", [None, np.array([5, 3, 7, 7, 8, 0]), np.arange(40) % 4 == 1, slice(2, 30)])
def test_row_sums_and_a_batchs_known_entries_count_from_the_row_lengths(rows):
    from ehrdx.data.sequences import known_entries

    dense = dense_table(4)
    t = SparseTable.from_dense(dense)
    want = dense.sum(1) if rows is None else dense[rows].sum(1)
    assert t.row_sums(rows).dtype == np.int64 and np.array_equal(t.row_sums(rows), want)
    if rows is not None:
        for table in (t, BitTable.from_dense(dense), dense):
            assert known_entries(table, rows) == want.sum()
