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
