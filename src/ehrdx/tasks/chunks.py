"""Samples built a run of patients at a time (tasks/task.py build_samples), so that the index lists of one
run, not of the whole cohort, are held at once.

Building a patient's samples holds its events, its label records and its label entries (positives and
history: one per (sample, label) recorded before or in the window) as int64 index lists; at hospital
scale the history entries alone are tens of millions. A run of patients is chosen so that its events,
samples and expected entries stay under a budget: a patient's cost is its events plus its samples, times
one plus the entries per unit of that cost seen so far, so runs adapt to how many entries the cohort has
(the first run, before any is seen, takes a sixteenth of the budget: on the hospital shape a unit of cost
brings about 2.7 entries). Samples of different runs never share a patient, and every step of the
build is per sample or per patient, so the concatenated runs equal one build of all patients.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.tasks.positives import INTRODUCTION_MASKED

CHUNK_ENTRIES = 8_000_000  # events + samples + label entries per run: about 0.5 GB of index lists
COUNT_ORDER = ("prediction_times_before_first_visit", "prediction_times_of_patients_without_visits", INTRODUCTION_MASKED,
               "censored_samples", "samples_without_next_visit",
               "samples_without_known_labels_left_out", "patients_left_without_any_sample")  # as one build adds them
PATIENTS_WITHOUT_SAMPLES = COUNT_ORDER[-1]  # counted once for the whole build, not per run


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
            # events + samples the budget allows: what a unit has cost so far; a first run, a sixteenth
            allowed = self.budget / (1.0 + self.entries / done) if done > 0 else self.budget / 16
            stop = int(np.searchsorted(self.cum, done + allowed, side="right")) - 1
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


def release_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc's malloc_trim; elsewhere nothing). A run's arrays
    are small enough (under glibc's mmap threshold, up to 32 MB) to live in the heap, where freeing them
    keeps them resident: without this, the concatenated samples would sit beside the parts they came from."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass


def concat_samples(parts: list[Samples]) -> Samples:
    """Samples of several runs of patients, one after the other (one run: itself). Each field is freed from
    the parts once concatenated, so the copy held beside the parts is one field at a time, not all."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str, join=np.concatenate):
        out = join([getattr(p, name) for p in parts])
        for p in parts:
            setattr(p, name, None)
        release_freed_memory()
        return out

    fields = [cat(name) for name in ("row", "time", "cutoff", "n_visits", "window_end")]
    tables = [cat(name, SparseTable.concat) for name in ("y_bits", "mask_bits", "history_bits")]
    return Samples(*fields, *tables, merge_counts([p.counts for p in parts]))
