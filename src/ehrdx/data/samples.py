"""Samples: one (patient, prediction time) each, with its labels and masks, as the tasks build them.

A plain container in the data layer so that what turns samples into model inputs (sequences.py,
counts.py) does not depend on how the tasks choose prediction times and label windows (tasks/task.py).

Targets, masks and history are [S, L] yes/no tables; they are kept bit-packed along the labels
(np.packbits: S x ceil(L / 8) bytes each, a 32nd of a float32 table), so a cohort with thousands of
labels holds them at one bit per entry. Read them whole (`y`, `mask`, `history`: new read-only dense
arrays; assign a whole new array to change one) or a batch of samples at a time (`targets_of`).
"""

from __future__ import annotations

import numpy as np


def pack(table: np.ndarray) -> np.ndarray:
    """[S, L] yes/no -> [S, ceil(L / 8)] uint8."""
    return np.packbits(np.asarray(table, dtype=bool), axis=1)


def unpack(packed: np.ndarray, n_labels: int) -> np.ndarray:
    """[S, ceil(L / 8)] uint8 -> [S, L] bool."""
    return np.unpackbits(packed, axis=1, count=n_labels).view(bool)


class Samples:
    """Samples in (row, time) order. Arrays are per sample; y/mask/history are [S, L] (kept bit-packed)."""

    def __init__(self, row: np.ndarray, time: np.ndarray, cutoff: np.ndarray, n_visits: np.ndarray,
                 window_end: np.ndarray, y: np.ndarray, mask: np.ndarray, history: np.ndarray,
                 counts: dict[str, int] | None = None) -> None:
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

    def _dense(self, name: str) -> np.ndarray:
        out = unpack(getattr(self, name), self.n_labels)
        out.flags.writeable = False  # a change must be assigned whole (it would be lost on a copy)
        return out

    def _set(self, name: str, table: np.ndarray) -> None:
        if np.shape(table) != (len(self.row), self.n_labels):
            raise ValueError(f"{name[1:]} must be [{len(self.row)}, {self.n_labels}], not {np.shape(table)}")
        setattr(self, name, pack(np.asarray(table) > 0.5 if name == "_y" else table))

    @property
    def y(self) -> np.ndarray:
        return self._dense("_y").astype(np.float32)

    @y.setter
    def y(self, table: np.ndarray) -> None:
        self._set("_y", table)

    @property
    def mask(self) -> np.ndarray:
        return self._dense("_mask")

    @mask.setter
    def mask(self, table: np.ndarray) -> None:
        self._set("_mask", table)

    @property
    def history(self) -> np.ndarray:
        return self._dense("_history")

    @history.setter
    def history(self, table: np.ndarray) -> None:
        self._set("_history", table)

    @property
    def label_nbytes(self) -> int:
        """Bytes held by the three packed tables."""
        return self._y.nbytes + self._mask.nbytes + self._history.nbytes

    def subset(self, keep: np.ndarray) -> Samples:
        out = Samples.__new__(Samples)
        out.row, out.time, out.cutoff = self.row[keep], self.time[keep], self.cutoff[keep]
        out.n_visits, out.window_end, out.n_labels = self.n_visits[keep], self.window_end[keep], self.n_labels
        out._y, out._mask, out._history = self._y[keep], self._mask[keep], self._history[keep]
        out.counts = dict(self.counts)
        return out

    def train_mask(self, new_onset: bool) -> np.ndarray:
        return unpack(self._mask & ~self._history if new_onset else self._mask, self.n_labels)

    def targets_of(self, rows: np.ndarray, new_onset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Dense targets (float32) and training mask of the given samples (a batch)."""
        m = self._mask[rows] & ~self._history[rows] if new_onset else self._mask[rows]
        return unpack(self._y[rows], self.n_labels).astype(np.float32), unpack(m, self.n_labels)
