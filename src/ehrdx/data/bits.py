"""Yes/no tables of samples x labels at one bit per entry, read a block at a time.

Targets, masks and histories of thousands of labels at a million prediction times would take gigabytes as
dense arrays; a `BitTable` keeps them bit-packed along the labels (np.packbits: S x ceil(L / 8) bytes) and
gives dense blocks on demand: a batch of rows for a loss, a block of labels for a metric. Indexing reads like
an array's (`t[rows]`, `t[:, j0:j1]`, `t[rows, j0:j1]`) and returns a new dense bool array, so code written
for [S, L] arrays (ranking.label_ranking, the evaluation metrics) reads either. `label_counts` gives the
per-label counts training needs (positives and known entries) from either without a dense [S, L] copy;
`t[:, j]` (`column`) reads one label's column, for models fit a label at a time (gbm, logistic), and
`columns(c0, c1)` the table of some labels (those an update adds), still packed.
Samples keep their tables as index lists (data/sparse.py SparseTable, a BitTable subclass with the same
reading interface); a BitTable combines with one (and_not, both, concat) as with another BitTable.
"""

from __future__ import annotations

import numpy as np

MAX_BLOCK = 1 << 24  # entries unpacked at once when a whole table is scanned (16 MB of bools)


class BitTable:
    """An [S, L] yes/no table, bit-packed along L."""

    def __init__(self, packed: np.ndarray, n_cols: int) -> None:
        self.packed = packed  # [S, ceil(L / 8)] uint8, padding bits 0
        self.n_cols = int(n_cols)

    @classmethod
    def from_dense(cls, table: np.ndarray) -> BitTable:
        """From an [S, L] array: True / nonzero entries are set."""
        table = np.asarray(table)
        return cls(np.packbits(table.astype(bool, copy=False), axis=1), table.shape[1])

    @classmethod
    def from_entries(cls, n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray) -> BitTable:
        """The table with the (row, col) entries set and every other entry clear (no dense table in between)."""
        width = (n_cols + 7) // 8
        packed = np.zeros((n_rows, width), dtype=np.uint8)
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        np.bitwise_or.at(packed.reshape(-1), rows * width + (cols >> 3), np.uint8(128) >> (cols & 7).astype(np.uint8))
        return cls(packed, n_cols)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.packed.shape[0], self.n_cols)

    def __len__(self) -> int:
        return self.packed.shape[0]

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes

    def __getitem__(self, key) -> np.ndarray:
        """Dense bool entries: `t[rows]`, `t[rows, cols]` (rows: a slice, indices or a bool selection)."""
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(cols, (slice, int, np.integer)) and not isinstance(rows, (slice, int, np.integer)):
            raise IndexError("a BitTable takes index arrays for rows or for columns, not both (numpy would pair "
                             "them element by element)")
        if isinstance(cols, slice) and cols.step in (None, 1):
            c0, c1, _ = cols.indices(self.n_cols)
            c1 = max(c0, c1)
            b0 = c0 // 8
            block = self.packed[rows, b0:(c1 + 7) // 8]
            return np.unpackbits(block, axis=-1, count=c1 - 8 * b0).view(bool)[..., c0 - 8 * b0:]
        if isinstance(cols, (int, np.integer)):  # one column: its byte of each row, not the whole rows
            c = int(cols) + self.n_cols if int(cols) < 0 else int(cols)
            if not 0 <= c < self.n_cols:
                raise IndexError(f"column {cols} is out of range for {self.n_cols} columns")
            return ((self.packed[rows, c >> 3] >> (7 - (c & 7))) & 1).astype(bool)
        return np.unpackbits(self.packed[rows], axis=-1, count=self.n_cols).view(bool)[..., cols]

    def dense(self) -> np.ndarray:
        """The whole table, [S, L] bool."""
        return self[:]

    def column(self, j: int) -> np.ndarray:
        """Column j over all rows, [S] bool: one label's entries (e.g. where it is known, to fit a model of
        that label alone), read without a dense [S, L] copy."""
        return self[:, j]

    def columns(self, c0: int, c1: int | None = None) -> BitTable:
        """The table of columns c0:c1 (to the last by default), of the same kind, still packed."""
        c0, c1, _ = slice(c0, c1).indices(self.n_cols)
        c1 = max(c0, c1)
        parts = [np.packbits(self[r, c0:c1], axis=1) for r in row_blocks(len(self), self.n_cols)]
        packed = np.concatenate(parts) if parts else np.zeros((0, (c1 - c0 + 7) // 8), np.uint8)
        return BitTable(packed, c1 - c0)

    def take(self, rows: np.ndarray) -> BitTable:
        """The table of the given rows (indices or a bool selection), still packed."""
        return BitTable(self.packed[rows], self.n_cols)

    def and_not(self, other: BitTable) -> BitTable:
        """Entries set here and clear in `other` (padding bits stay 0)."""
        if type(other) is not BitTable:  # a table of another kind (data/sparse.py) combines the two
            return other.invert().both(self)
        return BitTable(self.packed & ~other.packed, self.n_cols)

    def both(self, other: BitTable) -> BitTable:
        """Entries set here and in `other`."""
        if type(other) is not BitTable:
            return other.both(self)
        return BitTable(self.packed & other.packed, self.n_cols)

    def rows_any(self) -> np.ndarray:
        """Whether each row has a set entry, [S] bool."""
        return self.packed.any(1)

    def column_sums(self) -> np.ndarray:
        """Set entries per column, [L] int64."""
        return _block_column_sums(self)

    @staticmethod
    def concat(tables: list[BitTable]) -> BitTable:
        """Rows of several tables of the same width, one after the other (of the kind of the first table
        of another kind than BitTable, if any: data/sparse.py)."""
        for t in tables:
            if type(t) is not BitTable:
                return type(t).concat(tables)
        return BitTable(np.concatenate([t.packed for t in tables]), tables[0].n_cols)


def row_blocks(n_rows: int, n_cols: int, max_entries: int = MAX_BLOCK):
    """Consecutive row slices of at most `max_entries` entries each (at least one row)."""
    step = max(1, max_entries // max(n_cols, 1))
    for r0 in range(0, n_rows, step):
        yield slice(r0, min(r0 + step, n_rows))


def column_sums(table) -> np.ndarray:
    """Set (nonzero) entries per column of an [S, L] array or BitTable, [L] int64, a block of rows at a time."""
    if isinstance(table, BitTable):
        return table.column_sums()
    return _block_column_sums(table)


def _block_column_sums(table) -> np.ndarray:
    n_rows, n_cols = np.shape(table)
    out = np.zeros(n_cols, np.int64)
    for r in row_blocks(n_rows, n_cols):
        out += np.count_nonzero(np.asarray(table[r]), axis=0)
    return out


def label_counts(y, mask) -> tuple[np.ndarray, np.ndarray]:
    """Per label: known positives (y > 0.5 where mask) and known entries, from [S, L] arrays or BitTables."""
    if isinstance(y, BitTable) and isinstance(mask, BitTable):
        return y.both(mask).column_sums(), mask.column_sums()
    pos, known = np.zeros(np.shape(y)[1], np.int64), np.zeros(np.shape(y)[1], np.int64)
    for r in row_blocks(len(y), np.shape(y)[1]):
        m = np.asarray(mask[r], dtype=bool)
        pos += np.count_nonzero((np.asarray(y[r]) > 0.5) & m, axis=0)
        known += np.count_nonzero(m, axis=0)
    return pos, known


def label_columns(table, c0: int, c1: int | None = None):
    """Columns c0:c1 of an [S, L] array (a view) or BitTable (a table of the same kind, still packed)."""
    return table.columns(c0, c1) if isinstance(table, BitTable) else np.asarray(table)[:, c0:c1]


def as_table(table, dtype=None):
    """A BitTable as it is (read a block or a column at a time: `t[:, j]`), anything else as an array."""
    return table if isinstance(table, BitTable) else np.asarray(table, dtype=dtype)


def label_tables(dataset) -> tuple:
    """A sample set's targets and training mask as [N, L] tables to read a block at a time: its BitTables
    where it keeps them packed (every sample set of data/ does), else its dense arrays."""
    if hasattr(dataset, "y_bits"):
        return dataset.y_bits, dataset.mask_bits
    return dataset.y, dataset.y_mask


def read_only(a: np.ndarray) -> np.ndarray:
    """`a`, marked read-only: a dense copy of a packed table, whose writes would be lost."""
    a.flags.writeable = False
    return a


class PackedTargets:
    """For a set that keeps its targets and training mask packed (`y_bits`, `mask_bits`): the dense
    [N, L] tables on demand, read-only (for small label sets; training and evaluation read the bits)."""

    y_bits: BitTable
    mask_bits: BitTable

    @property
    def y(self) -> np.ndarray:
        return read_only(self.y_bits.dense().astype(np.float32))

    @property
    def y_mask(self) -> np.ndarray:
        return read_only(self.mask_bits.dense())
