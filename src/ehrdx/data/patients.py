"""Per-patient facts read from an event store: the events before a patient's first visit (static rows,
birth) and the birth time. Used by the sequence collates (numpy and on the device), the count features and
the subgroup metrics alike."""

from __future__ import annotations

import numpy as np

from ehrdx.data.store import EventStore, concat_ranges


def static_ranges(store: EventStore, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event range of each patient's facts before its first visit (static rows, birth)."""
    offsets = np.asarray(store.offsets)
    vo = np.asarray(store.visit_offsets)
    has_visit = vo[rows + 1] > vo[rows]
    first_visit = np.where(has_visit, np.asarray(store.visit_starts)[np.minimum(vo[rows], len(store.visit_starts) - 1)]
                           if len(store.visit_starts) else offsets[rows], offsets[rows + 1])
    return offsets[rows], first_visit


def birth_times(store: EventStore, rows: np.ndarray) -> np.ndarray:
    """MEDS_BIRTH time (s) of each patient, NaN where there is none."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(len(rows), np.nan)
    if "MEDS_BIRTH" not in store.code_names or len(rows) == 0:
        return out
    uniq, inv = np.unique(rows, return_inverse=True)
    start, end = static_ranges(store, uniq)
    pos = concat_ranges(start, end)
    owner = np.repeat(np.arange(len(uniq)), end - start)
    is_birth = np.asarray(store.codes)[pos] == store.code_names.index("MEDS_BIRTH")
    birth = np.full(len(uniq), np.nan)
    birth[owner[is_birth]] = np.asarray(store.times)[pos[is_birth]]
    return birth[inv]
