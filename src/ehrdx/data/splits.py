"""Patient-level splits: train/validation/test and grouped K-fold, approximately stratified.

Every patient goes to exactly one part. Stratification groups patients by their rarest label (rarest
in the whole cohort), then deals each group out in proportion, so a rare label lands in every part
whenever it has enough patients.
"""

from __future__ import annotations

import numpy as np

from ehrdx.errors import DataError


def rarest_label(n_patients: int, rows: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Stratum of each patient: index of its rarest label (the lowest index among equally rare ones), or -1 for
    a patient with no label, from the distinct (patient row, label) pairs: no [patients, labels] table, which at
    300,000 patients and 1,500 labels was 5 GB."""
    rows, labels = np.asarray(rows, np.int64), np.asarray(labels, np.int64)
    out = np.full(n_patients, -1, dtype=np.int64)
    if len(rows) == 0:
        return out
    freq = np.bincount(labels, minlength=n_labels)  # patients per label
    order = np.lexsort((labels, freq[labels], rows))  # each patient's pairs, rarest label first
    first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
    out[rows[first]] = labels[first]
    return out


def _strata(y: np.ndarray) -> np.ndarray:
    """rarest_label of a [patients, labels] table."""
    rows, labels = np.nonzero(np.asarray(y) > 0)
    return rarest_label(np.shape(y)[0], rows, labels, np.shape(y)[1])


def _deal(n: int, fractions: list[float]) -> np.ndarray:
    """Part index for n shuffled members so that part sizes follow fractions; small groups still
    reach every part before any part gets a second member. A part whose fraction is 0 gets no member."""
    f = np.asarray(fractions, dtype=np.float64)
    counts = np.floor(f * n).astype(int)
    if n >= len(fractions):
        counts = np.maximum(counts, 1)
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    remainder = n - counts.sum()
    order = np.argsort(-(f * n - counts))  # largest shortfall first
    for k in range(remainder):
        counts[order[k % len(order)]] += 1
    part = np.repeat(np.arange(len(fractions)), counts)
    # The places dealt to a part of fraction 0 (the one-each rule above gave it one) go to the largest
    # part instead of dealing again: every other part keeps exactly the places, and so after the same
    # shuffle the members, that it had before fractions of 0 were honoured (saved models recompute
    # their splits from the seed and fractions: a model trained with --val-fraction 0 keeps its test
    # patients, one trained with a test fraction of 0 its validation patients).
    empty = f[part] == 0
    if empty.any() and (f > 0).any():
        part[empty] = int(np.argmax(f))
    return part


# How the seeded split deals patients; saved with every model (config.json `split_rule`; models saved without it:
# 1), so that evaluate, report and update find the parts a model was trained with. Rule 1 dealt each stratum alone:
# one too small to reach every part (1 or 2 patients with the default shares) went wholly to the largest part, and
# with many labels, where most patients are alone in theirs, every patient did (train 200, validation 0, test 0).
# Rule 2 deals the strata of rule 1 as rule 1 did, and those too small to reach every part together, as one group
# that brings each part to its share of the whole cohort (the other strata keep every patient's part).
SPLIT_RULE = 2


def split_patients(
    y: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0,
    rule: int = SPLIT_RULE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, validation and test patients (one row per patient of `y` [patients, labels]), disjoint."""
    return split_strata(_strata(y), fractions, seed, rule)


def split_strata(strata: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0,
                 rule: int = SPLIT_RULE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """split_patients of patients given by their strata (rarest_label)."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError("split fractions must sum to 1")
    rng = np.random.default_rng(seed)
    part = np.full(len(strata), -1, dtype=np.int64)
    reach = max(int(np.count_nonzero(np.asarray(fractions) > 0)), 1)  # the parts a stratum should reach
    small = []
    for s in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == s))
        dealt = rng.permutation(_deal(len(members), list(fractions)))  # drawn for every stratum, as rule 1 did
        if rule >= 2 and len(members) < reach:
            small.append(members)
        else:
            part[members] = dealt
    if small:  # from a stream of their own (the strata above keep their draws), to the parts' shortfalls
        members = np.concatenate(small)
        want = np.bincount(_deal(len(strata), list(fractions)), minlength=3)
        need = np.maximum(want - np.bincount(part[part >= 0], minlength=3), 0)
        while need.sum() > len(members):  # a part already over its share takes none; the others shrink
            need[np.argmax(need)] -= 1
        part[members] = np.random.default_rng([seed, rule]).permutation(np.repeat(np.arange(3), need))
    return tuple(np.sort(np.flatnonzero(part == k)) for k in range(3))  # type: ignore[return-value]


def kfold_patients(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Fold index sets for grouped (by patient) K-fold, approximately stratified."""
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if k > len(y):
        raise ValueError(f"cannot make {k} folds from {len(y)} patients")
    rng = np.random.default_rng(seed)
    strata = _strata(y)
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for s in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == s))
        # Continue the round-robin across strata so fold sizes stay balanced.
        fold[members] = (np.arange(len(members)) + offset) % k
        offset = (offset + len(members)) % k
    return [np.sort(np.flatnonzero(fold == f)) for f in range(k)]


def check_rows(rows, n: int, what: str = "rows", file: str | None = None) -> np.ndarray:
    """`rows` as int64 row numbers of a source of `n` patients; anything else is a DataError. numpy would take
    a boolean mask for rows 0 and 1, cut 1.5 to 1 and count -1 from the end: other patients than meant."""
    arr = np.asarray(rows)
    fix = "give row numbers 0 to n - 1 of the data (ehrdx.patient_splits gives them for an event store)"
    if arr.dtype == bool:
        raise DataError(f"{what} is a boolean mask; row numbers are expected", file=file,
                        fix="give np.flatnonzero(mask)")
    if arr.ndim != 1:
        raise DataError(f"{what} must be one-dimensional row numbers, not an array of shape {arr.shape}",
                        file=file, fix=fix)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise DataError(f"{what} must be whole numbers (row numbers), not {arr.dtype}", file=file, fix=fix)
    out = arr.astype(np.int64)
    bad = int(((out < 0) | (out >= n)).sum())
    if bad:
        raise DataError(f"{bad} row number(s) of {what} outside 0 to {n - 1} (the data has {n} patients; rows are "
                        "positions, not patient ids)", file=file, fix=fix)
    return out
