"""Which (sample, label) entries are positive and which are in the history, as index lists, for all labels
at once: the work grows with the label records and the entries found, not with samples x labels.

Samples and label records are keyed by (patient row, time) packed into one sorted int64 (tasks/task.py).
A record at key k of label j makes label j positive for the samples of its patient whose window (t, w]
holds it: t < k <= w, a contiguous run of samples because samples are sorted by key and windows end in
the same order. It puts label j in the history of every later sample of its patient (t >= k): only
the patient's first record of j is needed for that.
"""

from __future__ import annotations

import numpy as np

from ehrdx.data.store import concat_ranges


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
