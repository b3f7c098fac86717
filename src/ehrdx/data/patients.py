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
    """MEDS_BIRTH time (s) of each patient, NaN where there is none: the earliest one recorded before or at
    the time of the first visit. A birth on the first visit's day (a newborn's first encounter) sorts after
    that visit's events at the same time, so the facts before the first visit alone would miss it and leave
    the patient's age unknown; a birth recorded after the first visit starts stays unknown."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(len(rows), np.nan)
    if "MEDS_BIRTH" not in store.code_names or len(rows) == 0:
        return out
    uniq, inv = np.unique(rows, return_inverse=True)
    start, end = static_ranges(store, uniq)
    times = np.asarray(store.times)
    codes = np.asarray(store.codes)
    birth_code = store.code_names.index("MEDS_BIRTH")
    last = np.asarray(store.offsets)[uniq + 1]
    has_visit = end < last
    t0 = np.where(has_visit, times[np.minimum(end, len(times) - 1)] if len(times) else 0, 0)
    # walk on from the first visit start over the events at its time: the first visit's events, then the
    # birth/death rows that sort after them (a handful per patient)
    stop = end.copy()
    more = has_visit.copy()
    while more.any():
        stop[more] += 1
        more &= stop < last
        more[more] = times[stop[more]] == t0[more]
    pos = concat_ranges(start, stop)
    owner = np.repeat(np.arange(len(uniq)), stop - start)
    is_birth = codes[pos] == birth_code
    birth = np.full(len(uniq), np.inf)
    np.minimum.at(birth, owner[is_birth], times[pos[is_birth]].astype(np.float64))
    birth[np.isinf(birth)] = np.nan
    return birth[inv]
