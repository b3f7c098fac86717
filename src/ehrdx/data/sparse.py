"""Yes/no tables of samples x labels stored as index lists: each row keeps only its few exceptions.

A bit per entry still grows with samples x labels (a 4.5M x 1,500 table is 840 MB packed). Targets and
histories have few set entries per row, and masks few clear ones (the unknown labels of a censored or
not-yet-introduced window), so a `SparseTable` keeps, per row, the sorted columns of the entries that
differ from the row's default: clear by default (`flip` False: the set entries are listed, e.g. the
positives) or set by default (`flip` True: the clear entries are listed, e.g. a mask's unknowns). Memory
grows with the listed entries (2 bytes each below 32,768 labels), not with samples x labels.

It reads like a BitTable (data/bits.py): `t[rows]`, `t[:, j0:j1]`, `t[rows, j0:j1]` return new dense bool
arrays, `take`, `and_not`, `both`, `column_sums`, `row_sums`, `rows_any`, `concat`; it is a BitTable
subclass so that code that asks `isinstance(t, BitTable)` keeps it as it is. Every read gives exactly the
booleans of the dense table (a yes/no table has no rounding). Column blocks over all rows (metrics read a
few labels at a time) use a column index built once per table.
"""

from __future__ import annotations

import numpy as np

from ehrdx.data.bits import MAX_BLOCK, BitTable, row_blocks
from ehrdx.data.store import concat_ranges


def _col_dtype(n_cols: int):
    return np.int16 if n_cols <= np.iinfo(np.int16).max else np.int32


def _isin_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each of `a` is in the sorted array `b`."""
    if not len(b):
        return np.zeros(len(a), bool)
    at = np.minimum(np.searchsorted(b, a), len(b) - 1)
    return b[at] == a


class SparseTable(BitTable):
    """An [S, L] yes/no table: per row, the sorted columns whose entry differs from the row's default."""

    def __init__(self, indptr: np.ndarray, cols: np.ndarray, n_cols: int, flip: np.ndarray | None = None) -> None:
        self.indptr = np.asarray(indptr, np.int64)  # [S + 1]: row r lists cols[indptr[r]:indptr[r + 1]]
        self.n_cols = int(n_cols)
        self.cols = np.asarray(cols, _col_dtype(self.n_cols))  # sorted and unique within each row
        n = len(self.indptr) - 1
        self.flip = np.zeros(n, bool) if flip is None else np.asarray(flip, bool)  # True: listed entries are clear
        self._by_col = None  # (rows of the entries in column order, column pointers), built on demand

    # -- building -------------------------------------------------------------------------------------
    @classmethod
    def from_entries(cls, n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray,
                     flip: np.ndarray | None = None) -> SparseTable:
        """The table whose rows list the (row, col) entries (any order, repeats once): set entries, or
        clear ones in the rows where `flip` is True."""
        keys = np.asarray(rows, np.int64) * n_cols
        keys += np.asarray(cols, np.int64)
        keys.sort()  # in place: a table's worth of int64 keys at a time, no more
        if len(keys) > 1:
            repeat = keys[1:] == keys[:-1]
            if repeat.any():  # (np.unique hashes first: several times slower than a sort)
                keys = keys[np.concatenate([[True], ~repeat])]
        return cls._from_keys(keys, n_rows, n_cols, flip)

    @classmethod
    def _from_keys(cls, keys: np.ndarray, n_rows: int, n_cols: int, flip: np.ndarray | None) -> SparseTable:
        """From sorted unique keys row * n_cols + col."""
        indptr = np.searchsorted(keys, np.arange(n_rows + 1, dtype=np.int64) * n_cols, side="left")
        return cls(indptr, keys % max(n_cols, 1), n_cols, flip)

    @classmethod
    def from_dense(cls, table) -> SparseTable:
        """From an [S, L] array or BitTable (True / nonzero entries are set), a block of rows at a time;
        a row with more set than clear entries lists its clear ones."""
        n, L = np.shape(table)
        keys, flips = [], []
        for r in row_blocks(n, L):
            block = np.asarray(table[r]).astype(bool, copy=False)
            flip = block.sum(1) * 2 > L
            block = block ^ flip[:, None]
            i, j = np.nonzero(block)
            keys.append((i + r.start).astype(np.int64) * L + j)
            flips.append(flip)
        flip = np.concatenate(flips) if flips else np.zeros(0, bool)
        return cls._from_keys(np.concatenate(keys) if keys else np.zeros(0, np.int64), n, L, flip)

    @classmethod
    def from_bits(cls, table) -> SparseTable:
        return table if isinstance(table, SparseTable) else cls.from_dense(table)

    # -- shape ----------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.indptr) - 1, self.n_cols)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.cols.nbytes + self.flip.nbytes

    @property
    def n_listed(self) -> int:
        """Entries listed (the exceptions to the rows' defaults)."""
        return len(self.cols)

    @property
    def packed(self) -> PackedRows:
        """The rows bit-packed as a BitTable keeps them, packed on demand (`packed[rows]`, or whole with
        np.asarray), for code written for BitTable.packed."""
        return PackedRows(self)

    # -- reading --------------------------------------------------------------------------------------
    def __getitem__(self, key) -> np.ndarray:
        """Dense bool entries: `t[rows]`, `t[rows, cols]` (rows: a slice, indices or a bool selection)."""
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(cols, (slice, int, np.integer)) and not isinstance(rows, (slice, int, np.integer)):
            raise IndexError("a SparseTable takes index arrays for rows or for columns, not both (numpy would "
                             "pair them element by element)")
        n = len(self)
        one_row = isinstance(rows, (int, np.integer))
        if one_row:
            r = int(rows) + n if int(rows) < 0 else int(rows)
            if not 0 <= r < n:
                raise IndexError(f"row {rows} is out of range for {n} rows")
            rows = slice(r, r + 1)
        if isinstance(cols, slice) and cols.step in (None, 1):
            c0, c1, _ = cols.indices(self.n_cols)
            out = self._block(rows, c0, max(c0, c1))
        elif isinstance(cols, (int, np.integer)):  # one column: read as a block of one, not whole rows
            c = int(cols) + self.n_cols if int(cols) < 0 else int(cols)
            if not 0 <= c < self.n_cols:
                raise IndexError(f"column {cols} is out of range for {self.n_cols} columns")
            out = self._block(rows, c, c + 1)[:, 0]
        else:
            out = self._block(rows, 0, self.n_cols)[:, cols]
        return out[0] if one_row else out

    def _block(self, rows, c0: int, c1: int) -> np.ndarray:
        """Rows (slice / indices / bool selection) x columns c0:c1, dense [n, c1 - c0] bool."""
        n = len(self)
        if isinstance(rows, slice) and rows.step in (None, 1):
            r0, r1, _ = rows.indices(n)
            r1 = max(r0, r1)
            if c1 - c0 < self.n_cols and 2 * (r1 - r0) >= n:
                return self._column_block(r0, r1, c0, c1)
            at = np.arange(self.indptr[r0], self.indptr[r1])
            which = np.repeat(np.arange(r1 - r0), np.diff(self.indptr[r0:r1 + 1]))
            flip = self.flip[r0:r1]
        else:
            idx = np.arange(n)[rows] if isinstance(rows, slice) else np.asarray(rows)
            if idx.dtype == bool:
                if len(idx) != n:
                    raise IndexError(f"a bool selection of {len(idx)} rows for a table of {n}")
                idx = np.flatnonzero(idx)
            idx = idx.astype(np.int64, copy=False)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"row indices out of range for {n} rows")
            idx = np.where(idx < 0, idx + n, idx)
            starts, ends = self.indptr[idx], self.indptr[idx + 1]
            at = concat_ranges(starts, ends)
            which = np.repeat(np.arange(len(idx)), ends - starts)
            flip = self.flip[idx]
        col = self.cols[at].astype(np.int64)
        if c0 > 0 or c1 < self.n_cols:
            inside = (col >= c0) & (col < c1)
            which, col = which[inside], col[inside]
        out = np.zeros((len(flip), c1 - c0), bool)
        out[which, col - c0] = True
        if flip.any():
            out ^= flip[:, None]
        return out

    def _column_index(self):
        if self._by_col is None:
            order = np.argsort(self.cols, kind="stable")  # stable: rows stay in order within a column
            rows = np.repeat(np.arange(len(self), dtype=np.int32 if len(self) < 2**31 else np.int64),
                             np.diff(self.indptr))[order]
            self._by_col = (rows, np.searchsorted(self.cols[order], np.arange(self.n_cols + 1), side="left"))
        return self._by_col

    def _column_block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        rows, colptr = self._column_index()
        out = np.zeros((r1 - r0, c1 - c0), bool)
        for j in range(c0, c1):
            r = rows[colptr[j]:colptr[j + 1]]
            if r0 > 0 or r1 < len(self):
                r = r[(r >= r0) & (r < r1)]
            out[r - r0, j - c0] = True
        flip = self.flip[r0:r1]
        if flip.any():
            out ^= flip[:, None]
        return out

    def dense(self) -> np.ndarray:
        return self[:]

    # -- tables from tables ---------------------------------------------------------------------------
    def take(self, rows: np.ndarray) -> SparseTable:
        """The table of the given rows (indices or a bool selection), still sparse."""
        idx = np.arange(len(self))[rows]
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        indptr = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(ends - starts, out=indptr[1:])
        return SparseTable(indptr, self.cols[concat_ranges(starts, ends)], self.n_cols, self.flip[idx])

    def columns(self, c0: int, c1: int | None = None) -> SparseTable:
        """The table of columns c0:c1 (to the last by default): each row's listed entries in that range,
        shifted, and the row's default kept."""
        c0, c1, _ = slice(c0, c1).indices(self.n_cols)
        c1 = max(c0, c1)
        inside = (self.cols >= c0) & (self.cols < c1)
        listed = np.zeros(len(inside) + 1, np.int64)
        np.cumsum(inside, out=listed[1:])
        return SparseTable(listed[self.indptr], self.cols[inside].astype(np.int64) - c0, c1 - c0, self.flip.copy())

    def invert(self) -> SparseTable:
        """Every entry negated: the same lists, each row's default flipped."""
        return SparseTable(self.indptr, self.cols, self.n_cols, ~self.flip)

    def both(self, other) -> SparseTable:
        """Entries set here and in `other`, a block of rows at a time."""
        other = SparseTable.from_bits(other)
        if other.shape != self.shape:
            raise ValueError(f"tables of shapes {self.shape} and {other.shape}")
        n, L = self.shape
        parts, flips = [], []
        for r0, r1 in self._entry_blocks(other):
            ka, kb = self._keys(r0, r1), other._keys(r0, r1)
            fa, fb = self.flip[r0:r1], other.flip[r0:r1]
            ra, rb = ka // L - r0, kb // L - r0
            a_in_b, b_in_a = _isin_sorted(ka, kb), _isin_sorted(kb, ka)
            # Per row, by defaults (a, b): (clear, clear) A's listed in B; (clear, set) A's not in B;
            # (set, clear) B's not in A; (set, set) the union of clear entries.
            keep_a = np.where(fa[ra], fb[ra], a_in_b != fb[ra])
            keep_b = fa[rb] & ~b_in_a
            parts.append(np.sort(np.concatenate([ka[keep_a], kb[keep_b]])))
            flips.append(fa & fb)
        keys = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return SparseTable._from_keys(keys, n, L, np.concatenate(flips) if flips else np.zeros(0, bool))

    def and_not(self, other) -> SparseTable:
        """Entries set here and clear in `other` (e.g. the new-onset mask: known and not yet recorded)."""
        return self.both(SparseTable.from_bits(other).invert())

    def _keys(self, r0: int, r1: int) -> np.ndarray:
        a, b = self.indptr[r0], self.indptr[r1]
        rows = np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(self.indptr[r0:r1 + 1]))
        return rows * self.n_cols + self.cols[a:b]

    def _entry_blocks(self, other: SparseTable):
        """Consecutive row ranges of at most MAX_BLOCK listed entries of both tables (at least one row)."""
        n, max_entries = len(self), MAX_BLOCK
        listed = self.indptr + other.indptr
        r0 = 0
        while r0 < n:
            r1 = int(np.searchsorted(listed, listed[r0] + max_entries, side="right")) - 1
            r1 = min(max(r1, r0 + 1), n)
            yield r0, r1
            r0 = r1
        if n == 0:
            yield 0, 0

    def rows_any(self) -> np.ndarray:
        """Whether each row has a set entry, [S] bool."""
        listed = np.diff(self.indptr)
        return np.where(self.flip, listed < self.n_cols, listed > 0)

    def row_sums(self, rows=None) -> np.ndarray:
        """Set entries per row (of the given rows: indices, a bool selection or a slice), [n] int64, from
        the row lengths alone."""
        rows = slice(None) if rows is None else rows
        listed = (self.indptr[1:] - self.indptr[:-1])[rows]
        return np.where(self.flip[rows], self.n_cols - listed, listed)

    def column_sums(self) -> np.ndarray:
        """Set entries per column, [L] int64."""
        listed_flip = np.repeat(self.flip, np.diff(self.indptr))
        plain = np.bincount(self.cols[~listed_flip].astype(np.int64), minlength=self.n_cols)
        clear = np.bincount(self.cols[listed_flip].astype(np.int64), minlength=self.n_cols)
        return plain + int(self.flip.sum()) - clear

    @staticmethod
    def concat(tables: list) -> SparseTable:
        """Rows of several tables of the same width, one after the other."""
        tables = [SparseTable.from_bits(t) for t in tables]
        if len({t.n_cols for t in tables}) > 1:
            raise ValueError(f"tables of different widths {[t.n_cols for t in tables]} cannot be concatenated")
        indptr, offset = [np.zeros(1, np.int64)], 0
        for t in tables:
            indptr.append(t.indptr[1:] + offset)
            offset += int(t.indptr[-1])
        return SparseTable(np.concatenate(indptr), np.concatenate([t.cols for t in tables]), tables[0].n_cols,
                           np.concatenate([t.flip for t in tables]))


class PackedRows:
    """A SparseTable's rows bit-packed along the labels (np.packbits, padding bits 0), packed when read:
    `p[rows]` packs those rows; np.asarray(p) packs the whole table, a block of rows at a time."""

    def __init__(self, table: SparseTable) -> None:
        self.table = table
        self.shape = (len(table), (table.n_cols + 7) // 8)
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        return np.packbits(self.table[rows, :], axis=-1)[..., cols]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, np.uint8)
        for r in row_blocks(*self.table.shape):
            out[r] = np.packbits(self.table[r], axis=1)
        return out if dtype is None else out.astype(dtype)
