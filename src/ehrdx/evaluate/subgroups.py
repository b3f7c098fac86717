"""The report's fairness view (evaluate/html.py): each sample's sex and age band, and the model's macro
metrics within each group, read from the whole tables a group's rows at a time (no [group, labels] copy
beyond one block)."""

from __future__ import annotations

import numpy as np

from ehrdx.ranking import macro_scores

AGE_BANDS = ((0, 40, "<40"), (40, 60, "40-59"), (60, 75, "60-74"), (75, 200, "75+"))
YEAR = 365.25 * 86400


def subgroup_rows(y, mask, proba, groups, new_onset_mask, group_of: np.ndarray, names: list[str],
                  min_cell: int) -> list[list]:
    """Macro metrics (all labels: `mask`; new onset: `new_onset_mask`) for each group; suppressed below
    `min_cell` patients. [S, L] arrays or tables read like them (data/bits.py BitTable)."""
    rows = []
    for g in names:
        sel = group_of == g
        patients = len(np.unique(groups[sel])) if sel.any() else 0
        if patients == 0:
            continue
        if patients < min_cell:
            rows.append([g, f"<{min_cell}", f"<{min_cell}", None, None, None, None])
            continue
        at = np.flatnonzero(sel)
        a = macro_scores(y, mask, proba, rows=at)
        n = macro_scores(y, new_onset_mask, proba, rows=at)
        rows.append([g, patients, int(sel.sum()), a["macro_auroc"], a["macro_auprc"], n["macro_auroc"],
                     n["macro_auprc"]])
    return rows


def sex_and_age(store, samples) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's sex (from a static GENDER// or SEX// code; 'unknown' without one) and age band at
    its prediction time ('unknown' without a birth)."""
    from ehrdx.data.sequences import birth_times, static_ranges
    from ehrdx.data.store import concat_ranges

    rows = np.unique(samples.row)
    start, end = static_ranges(store, rows)
    pos = concat_ranges(start, end)
    owner = np.repeat(np.arange(len(rows)), end - start)
    names = np.asarray(store.code_names, dtype=object)
    codes = names[np.asarray(store.codes)[pos]] if len(pos) else np.zeros(0, dtype=object)
    sex = np.full(len(rows), "unknown", dtype=object)
    for i, c in zip(owner, codes):
        upper = str(c).upper()
        if upper.startswith(("GENDER//", "SEX//")):
            sex[i] = str(c).split("//", 1)[1]
    at = np.searchsorted(rows, samples.row)
    birth = birth_times(store, samples.row)
    age = (samples.time - birth) / YEAR
    band = np.full(len(samples.row), "unknown", dtype=object)
    for lo, hi, name in AGE_BANDS:
        band[(age >= lo) & (age < hi)] = name
    return sex[at], band
