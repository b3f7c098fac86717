"""Samples: one (patient, prediction time) each, with its labels and masks, as the tasks build them.

A plain container in the data layer so that what turns samples into model inputs (sequences.py,
counts.py) does not depend on how the tasks choose prediction times and label windows (tasks/task.py).

Targets, masks and history are [S, L] yes/no tables kept as index lists (data/sparse.py SparseTable:
per sample, its positives, its unknown labels, its recorded ones; negatives and known entries implied),
so memory grows with those entries, not with samples x labels. Read them a block at a time (`y_bits`,
`mask_bits`, `history_bits`, `train_mask_bits`: tables read like BitTables; `targets_of`: a batch's dense
targets) or whole (`y`, `mask`, `history`: new read-only dense arrays, for small label sets; assign a
whole new array to change one). A BitTable given as such is kept as it is (e.g. pretraining's).
"""

from __future__ import annotations

import numpy as np

from ehrdx.data.bits import BitTable
from ehrdx.data.sparse import SparseTable


class Samples:
    """Samples in (row, time) order. Arrays are per sample; y/mask/history are [S, L] (kept sparse)."""

    def __init__(self, row: np.ndarray, time: np.ndarray, cutoff: np.ndarray, n_visits: np.ndarray,
                 window_end: np.ndarray, y: np.ndarray | BitTable, mask: np.ndarray | BitTable,
                 history: np.ndarray | BitTable, counts: dict[str, int] | None = None) -> None:
        self.row = row  # store row of the patient
        self.time = time  # prediction time, seconds since 1970
        self.cutoff = cutoff  # absolute event index one past the last feature event (all events <= time)
        self.n_visits = n_visits  # visits that started at or before the prediction time
        self.window_end = window_end  # end of each sample's label window (s)
        self.n_labels = int(np.shape(y)[1])
        self.y = y  # 1 where the label is recorded in the sample's label window (0/1 values)
        self.mask = mask  # True where the label is known (censoring, labels not yet introduced: tasks/task.py)
        self.history = history  # True where the label was recorded at or before the prediction time
        self.counts = {} if counts is None else counts  # what was left out or masked, by reason

    def __len__(self) -> int:
        return len(self.row)

    def _set(self, name: str, table: np.ndarray | BitTable) -> None:
        if np.shape(table) != (len(self.row), self.n_labels):
            raise ValueError(f"{name} must be [{len(self.row)}, {self.n_labels}], not {np.shape(table)}")
        if not isinstance(table, BitTable):
            table = SparseTable.from_dense(np.asarray(table) > 0.5 if name == "y" else table)
        setattr(self, f"{name}_bits", table)

    @staticmethod
    def _dense(table: BitTable) -> np.ndarray:
        out = table.dense()
        out.flags.writeable = False  # a change must be assigned whole (it would be lost on a copy)
        return out

    @property
    def y(self) -> np.ndarray:
        out = self.y_bits.dense().astype(np.float32)
        out.flags.writeable = False  # a change must be assigned whole (it would be lost on a copy)
        return out

    @y.setter
    def y(self, table: np.ndarray | BitTable) -> None:
        self._set("y", table)

    @property
    def mask(self) -> np.ndarray:
        return self._dense(self.mask_bits)

    @mask.setter
    def mask(self, table: np.ndarray | BitTable) -> None:
        self._set("mask", table)

    @property
    def history(self) -> np.ndarray:
        return self._dense(self.history_bits)

    @history.setter
    def history(self, table: np.ndarray | BitTable) -> None:
        self._set("history", table)

    @property
    def label_nbytes(self) -> int:
        """Bytes held by the three label tables."""
        return self.y_bits.nbytes + self.mask_bits.nbytes + self.history_bits.nbytes

    def subset(self, keep: np.ndarray) -> Samples:
        out = Samples.__new__(Samples)
        out.row, out.time, out.cutoff = self.row[keep], self.time[keep], self.cutoff[keep]
        out.n_visits, out.window_end, out.n_labels = self.n_visits[keep], self.window_end[keep], self.n_labels
        out.y_bits, out.mask_bits = self.y_bits.take(keep), self.mask_bits.take(keep)
        out.history_bits = self.history_bits.take(keep)
        out.counts = dict(self.counts)
        return out

    def train_mask_bits(self, new_onset: bool) -> BitTable:
        """What counts for training and new-onset metrics: known, and (new onset) not yet recorded."""
        return self.mask_bits.and_not(self.history_bits) if new_onset else self.mask_bits

    def train_mask(self, new_onset: bool) -> np.ndarray:
        return self._dense(self.train_mask_bits(new_onset))

    def targets_of(self, rows: np.ndarray, new_onset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Dense targets (float32) and training mask of the given samples (a batch)."""
        m = self.mask_bits[rows]
        if new_onset:
            m &= ~self.history_bits[rows]
        return self.y_bits[rows].astype(np.float32), m
