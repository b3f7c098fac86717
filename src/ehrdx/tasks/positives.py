"""Which (sample, label) entries are positive and which are in the history, as index lists, for all labels
at once: the work grows with the label records and the entries found, not with samples x labels.

Samples and label records are keyed by (patient row, time) packed into one sorted int64 (tasks/task.py).
A record at key k of label j makes label j positive for the samples of its patient whose window (t, w]
holds it: t < k <= w, a contiguous run of samples because samples are sorted by key and windows end in
the same order. It puts label j in the history of every later sample of its patient (t >= k): only
the patient's first record of j is needed for that.

The mask lists, per sample, its unknown labels (a whole window) or its known ones (a censored window: its
positives), so the three tables are built from index lists without a samples x labels table (known_entries).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ehrdx.data.sparse import SparseTable
from ehrdx.data.store import concat_ranges

INTRODUCTION_MASKED = "label_entries_before_introduction_masked"


def label_entries(s_key: np.ndarray, w_key: np.ndarray, record_key: np.ndarray, record_label: np.ndarray,
                  time_bits: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((sample, label) positives, (sample, label) history entries), each entry once.

    s_key   [S] sorted keys (patient row << time_bits | time) of the samples
    w_key   [S] keys of the ends of their label windows (same patient; w < t: no window)
    record_key, record_label: the label records (any order)
    """
    order = np.lexsort((record_key, record_label))  # by label, then key
    lab, key = np.asarray(record_label, np.int64)[order], np.asarray(record_key, np.int64)[order]
    w_key = np.asarray(w_key, np.int64)
    # Windows end in sample order within a patient; a sample without a window may break that, and the
    # running maximum restores it (such samples are filtered out after). Keys of earlier patients are
    # all below this patient's, so a run never crosses into another patient.
    w_run = np.maximum.accumulate(w_key) if len(w_key) else w_key
    lo = np.searchsorted(w_run, key, side="left")  # first sample whose window reaches k
    hi = np.searchsorted(s_key, key, side="left")  # samples before k
    same_label = np.zeros(len(lab), bool)
    same_label[1:] = lab[1:] == lab[:-1]
    prev_hi = np.zeros(len(hi), np.int64)
    prev_hi[1:] = hi[:-1]
    lo = np.where(same_label, np.maximum(lo, prev_hi), lo)  # one label's ranges overlap: once each
    n = np.maximum(hi - lo, 0)
    sample = concat_ranges(lo, hi)
    record = np.repeat(np.arange(len(key)), n)
    real = w_key[sample] >= key[record]
    positives = (sample[real], lab[record[real]])
    # History: from the first record of each (patient, label) to the patient's last sample.
    row = key >> time_bits
    same_row = np.zeros(len(row), bool)
    same_row[1:] = row[1:] == row[:-1]
    first = ~(same_label & same_row)
    start = np.searchsorted(s_key, key[first], side="left")
    stop = np.searchsorted(s_key, (row[first] + 1) << time_bits, side="left")
    history = (concat_ranges(start, stop), np.repeat(lab[first], np.maximum(stop - start, 0)))
    return positives, history


def introduction_counts(per_label: np.ndarray, introduced_from: Sequence[str | None] | None) -> dict[str, int]:
    """The counts of mask_before_introduction from the entries masked per label: the total first, then by
    rule (only non-zero counts)."""
    counts: dict[str, int] = {}
    if per_label.sum():
        counts[INTRODUCTION_MASKED] = int(per_label.sum())
        if introduced_from is not None:
            for rule in sorted({r for r in introduced_from if r}):
                n = int(per_label[[r == rule for r in introduced_from]].sum())
                if n:
                    counts[f"{INTRODUCTION_MASKED}:{rule}"] = n
    return counts


def known_entries(y: SparseTable, whole: np.ndarray, window_end: np.ndarray, introduced: np.ndarray | None,
                  introduced_from: Sequence[str | None] | None = None) -> tuple[SparseTable, dict[str, int]]:
    """The mask, sparse: every label of the samples in `whole` (listed: their unknown labels), the
    positives (`y`) of the others (listed: those positives); with `introduced`, entries of labels whose
    window ends before their introduction masked and counted (mask_before_introduction). Built from index
    lists: the work grows with the listed entries, not with samples x labels."""
    y = SparseTable.from_bits(y)
    n, L = y.shape
    whole = np.asarray(whole, bool)
    if y.flip.any():  # rows listed by their clear entries (from_dense of mostly-set rows): list the set ones
        y = SparseTable.from_entries(n, L, *np.nonzero(y.dense()))
    y_row = np.repeat(np.arange(n, dtype=np.int64), np.diff(y.indptr))
    y_col = y.cols.astype(np.int64)
    partial = ~whole[y_row]
    y_row, y_col = y_row[partial], y_col[partial]  # a whole window's positives are among its known labels
    u_row, u_col = np.zeros(0, np.int64), np.zeros(0, np.int64)
    total: dict[str, int] = {}
    if introduced is not None and n:
        intro = np.asarray(introduced, np.float64)
        intro = np.where(np.isnan(intro), -np.inf, intro)  # no date: never masked (w < nan is False)
        w_end = np.asarray(window_end, np.float64)
        late = w_end[y_row] < intro[y_col]  # a censored window's positives of a label not yet introduced
        by_date = np.argsort(intro, kind="stable")
        rows = np.flatnonzero(whole)
        first = np.searchsorted(intro[by_date], w_end[rows], side="right")  # labels introduced after w
        u_row = np.repeat(rows, L - first)
        u_col = by_date[concat_ranges(first, np.full(len(rows), L))].astype(np.int64)
        per_label = np.bincount(u_col, minlength=L) + np.bincount(y_col[late], minlength=L)
        total = introduction_counts(per_label, introduced_from)
        y_row, y_col = y_row[~late], y_col[~late]
    mask = SparseTable.from_entries(n, L, np.concatenate([u_row, y_row]), np.concatenate([u_col, y_col]), whole)
    return mask, total
