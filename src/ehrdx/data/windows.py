"""A bounded context for sequence models: which visits a sample reads, and a summary of the ones before.

With context N, a patient's visits are cut into windows of up to 2N visits that start every N visits
(window k covers visits kN .. kN + 2N - 1). A sample at visit position p (0-based, its last visit before
the prediction time) is read in the window where p falls in the last N positions: k = max(p // N - 1, 0),
so it reads between N + 1 and 2N visits (fewer only when the patient has fewer), and the samples of one
window still share one sequence (the model reads it once). The window depends on p alone, never on
which other samples exist, so training, validation and prediction read the same visits for a sample.

What came before the window reaches the model as a summary (`PriorSummary`): the earlier visits' codes
as a bag weighted by log(1 + count) (normalised to sum 1, so long and short pasts have the same scale),
plus the number of earlier visits and events. The time features still measure from the patient's real
first visit (data/sequences.py), so the model knows how long the history is.

Why windows of 2N with stride N rather than each sample's own last N visits: per-sample sequences
would make the model read about N visits per sample (for a patient with V visits and a sample at each,
V x N visit reads instead of V); windows keep the reads at most 2V per patient whatever N is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ehrdx.data.store import EventStore, concat_ranges

N_PRIOR_FEATURES = 3  # earlier visits, earlier events (both log-scaled), whether there are any


def window_starts(position: np.ndarray, context: int | None) -> np.ndarray:
    """First visit (patient-relative) of the window each sample at visit `position` is read in; all 0
    without a context (the whole history)."""
    position = np.asarray(position, dtype=np.int64)
    if context is None:
        return np.zeros(len(position), dtype=np.int64)
    if context < 1:
        raise ValueError(f"context must be a positive number of visits, not {context}")
    return np.maximum(position // context - 1, 0) * context


@dataclass
class PriorSummary:
    """What came before each sequence's window: a weighted bag of codes per sequence and a few counts."""

    ids: np.ndarray  # [P] int64 model code ids, sequence after sequence (each code once per sequence)
    offsets: np.ndarray  # [B] int64 where each sequence's codes start in ids
    weights: np.ndarray  # [P] float32 log(1 + count) of the code, normalised to sum 1 per sequence
    features: np.ndarray  # [B, N_PRIOR_FEATURES] float32


def prior_summary(store: EventStore, code_map: np.ndarray, first_visit: np.ndarray, window_visit: np.ndarray,
                  n_codes: int) -> PriorSummary:
    """Summary of the visits [first_visit, window_visit) (store visit indices) of each sequence; an empty
    range (a window at the start of the history) gives an empty bag and zero features."""
    first_visit = np.asarray(first_visit, dtype=np.int64)
    window_visit = np.asarray(window_visit, dtype=np.int64)
    B = len(first_visit)
    n_visits = window_visit - first_visit
    v_starts = np.asarray(store.visit_starts)
    has = n_visits > 0
    lo = np.where(has, v_starts[np.minimum(first_visit, len(v_starts) - 1)] if len(v_starts) else 0, 0)
    hi = np.where(has, np.asarray(store.visit_ends)[np.maximum(window_visit - 1, 0)] if len(v_starts) else 0, 0)
    n_events = np.maximum(hi - lo, 0)
    codes = code_map[np.asarray(store.codes)[concat_ranges(lo, hi)]]
    owner = np.repeat(np.arange(B, dtype=np.int64), n_events)
    keys, counts = np.unique(owner * n_codes + codes, return_counts=True)  # sorted by sequence, then code
    seq, ids = keys // n_codes, keys % n_codes
    w = np.log1p(counts)
    total = np.bincount(seq, weights=w, minlength=B)
    offsets = np.zeros(B, dtype=np.int64)
    np.cumsum(np.bincount(seq, minlength=B)[:-1], out=offsets[1:])
    features = np.stack([np.log1p(n_visits) / 5.0, np.log1p(n_events) / 10.0, has.astype(np.float64)], axis=1)
    return PriorSummary(ids.astype(np.int64), offsets, (w / total[seq]).astype(np.float32),
                        features.astype(np.float32))


CONTEXT_BOUNDS_NOTHING = "context_bounds_no_history"


def context_note(context: int, sample_sets: list) -> dict:
    """{CONTEXT_BOUNDS_NOTHING: {"note": ...}} when no sample of `sample_sets` (Samples) has a history long
    enough for `context` to cut (one past 2 x context visits): the option changed nothing, and a user who
    set it to bound long histories should know; else {}."""
    longest = max((int(np.max(s.n_visits)) for s in sample_sets if len(s)), default=0)
    if longest == 0 or window_starts(np.array([longest - 1]), context)[0] > 0:
        return {}
    return {CONTEXT_BOUNDS_NOTHING: {"note": (
        f"the context of {context:,} visit(s) bounds no history: every training and validation history is at most "
        f"{longest:,} visit(s), and a sequence reads up to {2 * context:,} before summarising earlier ones, so the "
        "whole history is read (as without a context)")}}
