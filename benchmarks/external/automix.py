"""`auto`'s ways of combining its members, side by side from one fit of the members (issue 14).

The first of these models run on a set fits `--model auto` once (members gbm, gru, gbm-counts; the tuning
probabilities and patients recorded as the ensemble passes them to its weight rule) and predicts each
member's held-out probabilities once; every variant is then a per-label weighting of the same members:

  auto            the library's rule (ehrdx.train.mixing.choose_weights): one weighting for all labels, the
                  equal mix unless a member or a mix on the 0.1 grid beats it on the macro tuning AUPRC in
                  >= 95% of 200 resamplings of the tuning patients
  auto-members    the same, candidates the members alone
  auto-label      per label instead: a label's equal mix replaced by a candidate that beats it on that
                  label's tuning AUPRC in >= 95% of the resamplings (-members: members alone; -90: at 90%)
  auto-shared-label  the shared weighting first, then per label against it
  auto-before     sessions 8-9's rule (best_on_tuning) on gbm + gru: what `auto` was
  auto3-before    best_on_tuning on the three members
  even3, even2    fixed equal weights of the three members; of gbm and gru
  even3-logit     the three members' log-odds averaged
  even3-rank      each member's score as its rank among its tuning scores of the label, averaged
  m-gbm, m-gru, m-gbm-counts   one member alone

    PYTHONPATH=src:benchmarks OMP_NUM_THREADS=1 python benchmarks/bench_external.py --data /tmp/ext/data \\
        --sets clinosim,eunomia --patients 2500 --seed 1 --model-seed 0 --bootstrap 50 \\
        --models auto,auto-label,auto-before,even3,m-gbm,m-gru,m-gbm-counts,lgbm-counts
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from external.protocol import Prepared

NAMES = ("gbm", "gru", "gbm-counts")
_FITS: dict[tuple[int, int], dict] = {}  # (id of the prepared set, model seed) -> the fit and its arrays


def _fit(p: Prepared, s) -> dict:
    key = (id(p), s.seed)
    if key in _FITS:
        return _FITS[key]
    _FITS.clear()  # one set at a time: free the last set's fit
    import ehrdx.train.ensemble as ens
    from ehrdx.estimator import EventClassifier

    recorded, rule = {}, ens.choose_weights

    def recording(p_val, y, mask, groups=None, seed=0):
        recorded.update(p=p_val, y=y, mask=mask, groups=groups, seed=seed)
        return rule(p_val, y, mask, groups=groups, seed=seed)

    ens.choose_weights = recording
    try:
        clf = EventClassifier(model="auto", task=p.task, labels=p.selector, max_epochs=s.max_epochs, seed=s.seed)
        t0 = time.perf_counter()
        clf.fit(p.store, p.rows["train"], p.rows["tuning"], targets=p.targets)
        fit = time.perf_counter() - t0
    finally:
        ens.choose_weights = rule
    m = clf.model_
    assert tuple(m.names) == NAMES, m.names
    held = m.member_probabilities(clf.dataset(p.store, p.samples["held_out"]))  # [M, N, L] labels_ order
    seconds = {n: round(h.seconds, 1) for n, h in m.member_histories.items() if getattr(h, "seconds", None)}
    save = os.environ.get("AUTOMIX_SAVE")  # the arrays behind every variant, to try more rules offline
    if save:
        h = p.samples["held_out"]
        Path(save).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(save) / f"{p.name}_seed{s.seed}.npz", p_val=recorded["p"], y=dense(recorded["y"]),
                            mask=dense(recorded["mask"]), groups=recorded["groups"], held=held,
                            cols=np.asarray([clf.labels_.index(lab) for lab in p.labels]), held_y=h.y,
                            held_mask=h.mask, held_history=h.history, held_row=h.row)
    _FITS[key] = {"clf": clf, "held": held, "cols": [clf.labels_.index(lab) for lab in p.labels], **recorded,
                  "info": {"fit_seconds": round(fit, 1), "member_seconds": seconds}}
    return _FITS[key]


def dense(t) -> np.ndarray:
    """A (possibly bit-packed) label table as a dense array."""
    from ehrdx.data.bits import as_table

    t = as_table(t)
    return np.stack([np.asarray(t[:, j]) for j in range(t.shape[1])], 1)


def _summary(w: np.ndarray) -> dict:
    rows, counts = np.unique(np.round(w, 2), axis=0, return_counts=True)
    return {"labels_not_equal": int(np.sum(np.ptp(w, axis=1) > 1e-9)), "labels": len(w),
            "most_common": {n: float(x) for n, x in zip(NAMES, rows[np.argmax(counts)]) if x > 0},
            "mean_weight": {n: round(float(x), 3) for n, x in zip(NAMES, w.mean(0))}}


def variant(weigh):
    """A model of the benchmark from `weigh(fit) -> [L, 3]` weights of the members (labels_ order)."""

    def run(p: Prepared, s) -> tuple[np.ndarray, dict]:
        f = _fit(p, s)
        w = weigh(f)
        proba = np.einsum("mnl,lm->nl", f["held"], w)[:, f["cols"]]
        return proba, {**f["info"], "choice": _summary(w)}

    return run


def _rule(**kw):
    from ehrdx.train.mixing import choose_weights

    return lambda f: choose_weights(f["p"], f["y"], f["mask"], groups=f["groups"], seed=f["seed"], **kw)[0]


def _before(members: tuple[int, ...]):
    def weigh(f):
        from ehrdx.train.mixing import best_on_tuning

        w = np.zeros((f["p"].shape[2], len(NAMES)))
        w[:, list(members)] = best_on_tuning(f["p"][list(members)], f["y"], f["mask"])[0]
        return w

    return weigh


def _fixed(row):
    return lambda f: np.tile(np.asarray(row, dtype=np.float64), (f["p"].shape[2], 1))


def combined(combine):
    """A model of the benchmark from `combine(fit) -> [N, L]` held-out probabilities (labels_ order): a rule
    that is not a weighted mean of the members' probabilities."""

    def run(p: Prepared, s) -> tuple[np.ndarray, dict]:
        f = _fit(p, s)
        return combine(f)[:, f["cols"]], f["info"]

    return run


def _logit_mean(f) -> np.ndarray:
    """The members' log-odds averaged (a geometric mean of the odds)."""
    q = np.clip(f["held"], 1e-6, 1 - 1e-6)
    return 1 / (1 + np.exp(-np.log(q / (1 - q)).mean(0)))


def _rank_mean(f) -> np.ndarray:
    """Each member's score as its place among its own tuning scores of the label (known samples), averaged: a
    mix that no member's scale dominates. Ties broken by the plain mean."""
    mask = dense(f["mask"]).astype(bool)
    out = np.zeros(f["held"].shape[1:])
    for m in range(len(NAMES)):
        for j in range(out.shape[1]):
            ref = np.sort(f["p"][m][mask[:, j], j])
            out[:, j] += np.searchsorted(ref, f["held"][m][:, j], side="right") / max(len(ref), 1)
    return out / len(NAMES) + 1e-6 * f["held"].mean(0)


VARIANTS = {
    "even3-logit": combined(_logit_mean),
    "even3-rank": combined(_rank_mean),
    "auto": variant(_rule()),
    "auto-members": variant(_rule(grid=False)),
    "auto-label": variant(_rule(shared=False, per_label=True)),
    "auto-label-members": variant(_rule(shared=False, per_label=True, grid=False)),
    "auto-label-90": variant(_rule(shared=False, per_label=True, confidence=0.9)),
    "auto-shared-label": variant(_rule(per_label=True)),
    "auto-before": variant(_before((0, 1))),
    "auto3-before": variant(_before((0, 1, 2))),
    "even3": variant(_fixed([1 / 3] * 3)),
    "even2": variant(_fixed([0.5, 0.5, 0])),
    "m-gbm": variant(_fixed([1, 0, 0])),
    "m-gru": variant(_fixed([0, 1, 0])),
    "m-gbm-counts": variant(_fixed([0, 0, 1])),
}
