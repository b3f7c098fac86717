"""Samples built a run of patients at a time (tasks/task.py build_samples), so that the index lists of one
run, not of the whole cohort, are held at once.

Building a patient's samples holds its events, its label records and its label entries (positives and
history: one per (sample, label) recorded before or in the window) as int64 index lists; at hospital
scale the history entries alone are tens of millions. A run of patients is chosen so that its events,
samples and expected entries stay under a budget: a patient's cost is its events plus its samples, times
one plus the entries per unit of that cost seen so far (the first run guesses one), so runs adapt to how
many entries the cohort has. Samples of different runs never share a patient, and every step of the
build is per sample or per patient, so the concatenated runs equal one build of all patients.
"""

from __future__ import annotations

import numpy as np

from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.tasks.positives import INTRODUCTION_MASKED

CHUNK_ENTRIES = 8_000_000  # events + samples + label entries per run: about 0.5 GB of index lists
COUNT_ORDER = ("prediction_times_before_first_visit", INTRODUCTION_MASKED, "censored_samples",
               "samples_without_next_visit", "samples_without_known_labels_left_out")  # as one build adds them


def patient_runs(s_row: np.ndarray) -> np.ndarray:
    """Where each patient's samples start in `s_row` (sorted), and len(s_row) last: [patients + 1]."""
    starts = np.flatnonzero(np.diff(s_row)) + 1 if len(s_row) else np.zeros(0, np.int64)
    return np.concatenate([[0], starts, [len(s_row)]]).astype(np.int64) if len(s_row) else np.zeros(1, np.int64)


class EntryBudget:
    """Consecutive runs of patients (indices into `cost`) expected to hold at most `budget` events, samples
    and label entries; `built(entries)` after each run refines how many entries a unit of cost brings."""

    def __init__(self, cost: np.ndarray, budget: int = CHUNK_ENTRIES) -> None:
        self.cum = np.concatenate([[0], np.cumsum(np.asarray(cost, np.float64))])
        self.budget = max(int(budget), 1)
        self.entries, self.start = 0, 0

    def __iter__(self):
        n = len(self.cum) - 1
        while self.start < n:
            done = self.cum[self.start]
            per_unit = 1.0 + (self.entries / done if done > 0 else 1.0)
            stop = int(np.searchsorted(self.cum, done + self.budget / per_unit, side="right")) - 1
            stop = min(max(stop, self.start + 1), n)  # at least one patient
            yield self.start, stop
            self.start = stop

    def built(self, entries: int) -> None:
        self.entries += int(entries)


def merge_counts(parts: list[dict[str, int]]) -> dict[str, int]:
    """The counts of several runs added, keys in the order one build gives them."""
    total: dict[str, int] = {}
    for counts in parts:
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v

    def rank(k: str) -> tuple[int, str]:
        stem = k.split(":", 1)[0]
        return (COUNT_ORDER.index(stem) if stem in COUNT_ORDER else len(COUNT_ORDER), k)

    return {k: total[k] for k in sorted(total, key=rank)}


def concat_samples(parts: list[Samples]) -> Samples:
    """Samples of several runs of patients, one after the other (one run: itself)."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return Samples(cat("row"), cat("time"), cat("cutoff"), cat("n_visits"), cat("window_end"),
                   SparseTable.concat([p.y_bits for p in parts]), SparseTable.concat([p.mask_bits for p in parts]),
                   SparseTable.concat([p.history_bits for p in parts]), merge_counts([p.counts for p in parts]))
