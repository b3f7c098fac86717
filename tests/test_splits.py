import hashlib

import numpy as np

from ehrdx.data.splits import kfold_patients, split_patients


def cohort(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    prev = np.array([0.3, 0.1, 0.02, 0.006])
    return (rng.random((n, 4)) < prev).astype(np.float32)


def test_parts_are_disjoint_cover_everyone_and_are_seeded():
    y = cohort()
    tr, va, te = split_patients(y, seed=3)
    assert len(set(tr) | set(va) | set(te)) == len(y) == len(tr) + len(va) + len(te)
    assert abs(len(tr) - 700) <= 10 and abs(len(te) - 150) <= 10
    again = split_patients(y, seed=3)
    assert all((a == b).all() for a, b in zip((tr, va, te), again))
    other = split_patients(y, seed=4)
    assert not (other[0] == tr).all() if len(other[0]) == len(tr) else True


def test_rare_labels_reach_every_part():
    y = cohort()
    assert y[:, 3].sum() >= 3
    for part in split_patients(y, seed=0):
        assert y[part, 3].sum() >= 1


def test_kfold_covers_each_patient_once():
    y = cohort()
    folds = kfold_patients(y, 5, seed=0)
    allrows = np.concatenate(folds)
    assert sorted(allrows) == list(range(len(y)))
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 2
    for f in folds:
        assert y[f, 2].sum() >= 1  # 2% label in every fold


def digest(rows) -> str:
    """A short fingerprint of a part's sorted row indices."""
    return hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]


# Computed with the code before fractions of 0 were honoured (session 11): a saved model's splits are
# recomputed from its seed and fractions (ehrdx evaluate, update, report), so they must not move.
BEFORE_40 = {  # cohort(40, seed=2), seed 0: (train, validation, test)
    (0.7, 0.15, 0.15): ([0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 13, 15, 18, 19, 21, 22, 23, 24, 25, 26, 27, 29, 30, 31, 33,
                         34, 36, 38], [5, 10, 12, 14, 16, 17, 20], [28, 32, 35, 37, 39]),
    (0.8, 0.1, 0.1): ([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25, 26, 27,
                       29, 30, 31, 33, 34, 36, 38], [5, 12, 20, 28], [32, 35, 37, 39]),
}
BEFORE_1000 = {  # cohort(1000): digests of (train, validation, test)
    ((0.7, 0.15, 0.15), 0): ("5a5f6c75191b3f16", "90f80ec42b144d3c", "2b4a330b72b7483d"),
    ((0.7, 0.15, 0.15), 3): ("b7712802e480dee4", "b3bf9f137070ad92", "c12f15e7066712f4"),
    ((0.8, 0.1, 0.1), 0): ("4897f03405134c22", "545f52013f7c3ac6", "759a6b994848dea5"),
    ((0.8, 0.1, 0.1), 3): ("011400c08c38bfcd", "6cfc6914b3fa3ec3", "16de338783e0a782"),
    ((0.6, 0.2, 0.2), 0): ("bfd942fc73ffdf60", "4383353bb8a96ac1", "52e7eceae809433d"),
    ((0.6, 0.2, 0.2), 3): ("449128618fe26237", "ad95cf49b15f697e", "90a1a227b1d1207f"),
}


def test_splits_with_every_part_above_zero_are_as_before():
    # cohort(40) has a label group of one patient: rule 2 deals it otherwise; a model saved with rule 1 keeps these
    for fractions, parts in BEFORE_40.items():
        got = split_patients(cohort(40, seed=2), fractions, seed=0, rule=1)
        assert [p.tolist() for p in got] == [list(p) for p in parts], fractions
    y = cohort()
    for (fractions, seed), digests in BEFORE_1000.items():
        assert tuple(digest(p) for p in split_patients(y, fractions, seed=seed)) == digests, (fractions, seed)


def test_a_part_of_fraction_zero_gets_no_patient_and_rare_labels_still_reach_the_others():
    for n, seed in ((1000, 0), (40, 2), (7, 1)):
        y = cohort(n, seed=seed)
        for fractions in ((0.85, 0.0, 0.15), (0.85, 0.15, 0.0), (0.7, 0.0, 0.3)):
            parts = split_patients(y, fractions, seed=0)
            zero = fractions.index(0.0)
            assert len(parts[zero]) == 0, (n, fractions)
            assert sorted(np.concatenate(parts).tolist()) == list(range(n))
            if n == 1000:
                for k in {0, 1, 2} - {zero}:
                    assert y[parts[k], 3].sum() >= 1  # the 0.6% label still reaches both other parts


def test_with_a_part_of_fraction_zero_the_other_small_part_keeps_its_patients():
    """The patients the code before gave the empty part (one per label group) now train; the other small
    part is exactly what it was, so a model trained with --val-fraction 0 keeps its test patients and one
    with a test fraction of 0 (EHRClassifier.fit without rows, cross-validation) its validation patients."""
    y = cohort(40, seed=2)
    tr, va, te = split_patients(y, (0.85, 0.0, 0.15), seed=0, rule=1)
    assert te.tolist() == [28, 32, 35, 37, 39] and va.tolist() == []  # before: validation [5, 12, 20]
    assert tr.tolist() == sorted([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24,
                                  25, 26, 27, 29, 30, 31, 33, 34, 36, 38, 5, 12, 20])
    tr, va, te = split_patients(y, (0.85, 0.15, 0.0), seed=0, rule=1)
    assert va.tolist() == [5, 12, 20, 28, 39] and te.tolist() == []  # before: test [32, 35, 37]
    assert set(tr.tolist()) == set(range(40)) - {5, 12, 20, 28, 39}
    y = cohort()
    before = {  # digests of (the kept part, train and the part the code before gave the empty part's patients)
        ((0.85, 0.0, 0.15), 3): ("e3550574b8de63e1", "2ac180cbce5fcd5a"),
        ((0.85, 0.15, 0.0), 3): ("89c4bf8c11f6e8cc", "29fb549c5eca4c9f"),
        ((0.7, 0.0, 0.3), 0): ("e1c6498ff20658cb", "927b1558b5e595d9"),
    }
    for (fractions, seed), (kept, train) in before.items():
        parts = split_patients(y, fractions, seed=seed)
        assert digest(parts[2 if fractions[1] == 0 else 1]) == kept and digest(parts[0]) == train
