"""Samples: one (patient, prediction time) each, with its labels and masks, as the tasks build them.

A plain container in the data layer so that what turns samples into model inputs (sequences.py,
counts.py) does not depend on how the tasks choose prediction times and label windows (tasks/task.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Samples:
    """Samples in (row, time) order. Arrays are per sample; y/mask/history are [S, L]."""

    row: np.ndarray  # store row of the patient
    time: np.ndarray  # prediction time, seconds since 1970
    cutoff: np.ndarray  # absolute event index one past the last feature event (all events <= time)
    n_visits: np.ndarray  # visits that started at or before the prediction time
    window_end: np.ndarray  # end of each sample's label window (s)
    y: np.ndarray  # [S, L] 1 where the label is recorded in the sample's label window
    mask: np.ndarray  # [S, L] True where the label is known (censoring, labels not yet introduced: tasks/task.py)
    history: np.ndarray  # [S, L] True where the label was recorded at or before the prediction time
    counts: dict[str, int] = field(default_factory=dict)  # what was left out or masked, by reason

    def __len__(self) -> int:
        return len(self.row)

    def subset(self, keep: np.ndarray) -> Samples:
        return Samples(self.row[keep], self.time[keep], self.cutoff[keep], self.n_visits[keep],
                       self.window_end[keep], self.y[keep], self.mask[keep], self.history[keep], dict(self.counts))

    def train_mask(self, new_onset: bool) -> np.ndarray:
        return self.mask & ~self.history if new_onset else self.mask

