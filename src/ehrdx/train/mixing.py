"""How the `auto` ensemble combines its members, from their probabilities on the tuning samples.

`choose_weights` (the rule auto uses): one weighting for all labels, the equal-weight average of the members
unless the tuning patients say clearly that something else is better: a member alone or a mix of members
(candidates in 1/GRID_STEPS steps) replaces it only if it beats the equal mix on the macro tuning AUPRC in
at least CONFIDENCE of DRAWS bootstrap resamplings of the tuning patients (patients drawn with replacement,
a patient's samples together); of the candidates that pass, the best on the whole tuning set.

Why (BENCHMARKS.md, issue 14; clinosim and Eunomia, 2,500 patients, model seeds 0-3, new-onset macro AUROC /
AUPRC, mean of both sets): on ~700 tuning samples the weighting with the best tuning AUPRC is mostly noise.
The rule before (`best_on_tuning`: the best member or mix, then a label's own; 0.6650 / 0.1093) and the
same test made label by label (0.6647 / 0.1127; members alone 0.6676 / 0.1143) lost to the plain equal mix
of gbm, gru and gbm-counts (0.6699 / 0.1136), which was as good as the best member on each set without
knowing which member that is. One shared test (0.6710 / 0.1135) keeps the equal mix where the members are
alike (4 of the 8 runs) and, on the built-in cohort, where gbm-counts is blind to the recency and trends the
simulator put there (0.7881 new-onset AUROC vs gbm's 0.8503), chooses gbm alone (0.8503 / 0.2700; the equal
mix: 0.8435 / 0.2600).

`best_on_tuning` (the rule before, kept for the benchmark's comparison): one shared choice (the best
member, or a mix if its macro tuning AUPRC beats that member's by MIN_GAIN), then weights of its own for a
label with at least MIN_POSITIVES tuning positives where they beat the shared choice by MIN_GAIN.

AUPRC is average precision as scikit-learn computes it (sum over distinct scores of recall step times
precision), weighted by how often each sample was drawn; with unit weights it equals
`average_precision_score`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from ehrdx.data.bits import as_table

GRID_STEPS = 10  # candidate weights in tenths
DRAWS = 200  # bootstrap resamplings of the tuning patients
CONFIDENCE = 0.95  # share of the resamplings a candidate must win to replace the equal mix of a label
# Tuning patients the test needs: with one patient every resampling is that patient, so any candidate better
# on the whole set wins all of them; with a handful, one better on each patient does. Below, the equal mix.
MIN_PATIENTS = 10
# How auto's weights are chosen, in words (metrics.json's ensemble.chosen_on)
RULE = ("the tuning (validation) patients: one weighting for all labels, the equal mix of the members unless a member "
        f"or another mix on the 0.1 grid beats it on the macro tuning AUPRC in {CONFIDENCE:.0%} of {DRAWS} resamplings "
        f"of the tuning patients (the equal mix with fewer than {MIN_PATIENTS} tuning patients, or none)")
MIN_GAIN = 0.005  # best_on_tuning: tuning AUPRC a mix (or a label's own weights) must add to be kept
MIN_POSITIVES = 50  # best_on_tuning: known tuning positives a label needs for weights of its own


def mixes(M: int, steps: int = GRID_STEPS) -> list[np.ndarray]:
    """Every weighting of M members in 1/steps steps with at least two members weighted (for two members:
    the first's weight 0.1 ... 0.9), ordered by the first member's weight, then the next's."""
    if M < 2:
        return []
    grid = np.stack(np.meshgrid(*[np.arange(steps + 1)] * (M - 1), indexing="ij"), -1).reshape(-1, M - 1)
    grid = grid[grid.sum(1) <= steps]
    full = np.concatenate([grid, steps - grid.sum(1, keepdims=True)], 1)
    full = full[(full > 0).sum(1) >= 2]
    full = full[np.lexsort(full.T[::-1])]
    return [w / steps for w in full.astype(np.float64)]


def weighted_auprc(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[D] average precision of `score` [n] for targets `y` [n] (bool) under each row of sample weights
    `w` [D, n]; NaN where a row weighs no positive."""
    return resampled_auprc(y, score, np.arange(len(y)), np.asarray(w, dtype=np.float64))


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision of `score` [n] for `y` [n] (bool), each sample once (`weighted_auprc` with unit
    weights, without its sparse sums): one sort, ties grouped by distinct score. NaN without a positive."""
    order = np.argsort(-score)  # the order within a tie does not matter: a tie is one step
    s, hits = score[order], np.cumsum(y[order].astype(bool))
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1] if len(s) else np.zeros(0, np.int64)
    tp = hits[ends].astype(np.float64)
    if len(tp) == 0 or tp[-1] == 0:
        return float("nan")
    gained = np.diff(np.r_[0.0, tp])
    step = gained > 0  # the steps where a positive enters, as resampled_auprc sums them: the same floats
    return float(np.sum(gained[step] * (tp[step] / (ends[step] + 1))) / tp[-1])


def resampled_auprc(y: np.ndarray, score: np.ndarray, group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[D] average precision of `score` [n] for `y` [n] (bool) when sample i weighs counts[d, group[i]]
    (`counts` [D, G]: how often each patient was drawn). Only the distinct scores where a positive enters
    add recall, so the samples are summed into those steps with two sparse products, and the [D, n] weights
    are never formed (a tuning set of 20,000 samples: 200 draws in a few milliseconds)."""
    D = counts.shape[0]
    order = np.argsort(-score, kind="mergesort")
    y, score, group = y[order].astype(bool), score[order], group[order]
    ends = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the last sample of each distinct score
    ends = ends[np.diff(np.r_[0, np.cumsum(y)[ends]]) > 0]  # the steps where a positive enters
    if len(ends) == 0:
        return np.full(D, np.nan)
    step = np.searchsorted(ends, np.arange(len(y)))  # each sample's step; after the last positive: none
    keep = step < len(ends)
    shape = (counts.shape[1], len(ends))
    every = sp.csr_matrix((np.ones(int(keep.sum())), (group[keep], step[keep])), shape=shape)
    pos = y & keep
    positives = sp.csr_matrix((np.ones(int(pos.sum())), (group[pos], step[pos])), shape=shape)
    gained = np.asarray(counts @ positives)  # [D, steps] positive weight entering at each step
    tp, seen = np.cumsum(gained, axis=1), np.cumsum(np.asarray(counts @ every), axis=1)
    P = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(gained * np.where(seen > 0, tp / np.where(seen > 0, seen, 1), 0.0), axis=1) / P
    return np.where(P > 0, out, np.nan)


def patient_draws(groups: np.ndarray, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(index [n], counts [draws, patients]): each sample's patient, and how often each patient is drawn
    when patients are drawn with replacement, as many as there are, seeded."""
    patients, index = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients))
                       for _ in range(draws)])
    return index, counts.astype(np.float64)


def _usable(y: np.ndarray) -> bool:
    return len(y) > 0 and bool(y.any()) and not bool(y.all())


def kind_of(w: np.ndarray) -> str:
    """"equal", "member" (one member alone) or "mix": what a weighting is, in the report."""
    return "equal" if np.ptp(w) < 1e-12 else "member" if w.max() == 1 else "mix"


def equal_without_tuning(n_labels: int, n_members: int) -> tuple[np.ndarray, list[dict]]:
    """Weights [L, M] and report when there are no tuning samples (--val-fraction 0): the equal mix for every
    label, as with fewer than MIN_PATIENTS tuning patients, and the report says why."""
    return (np.full((n_labels, n_members), 1.0 / n_members),
            [{"chosen": "equal (no tuning patients)", "for": "all labels"} for _ in range(n_labels)])


def choose_weights(p_val: np.ndarray, y, mask, groups: np.ndarray | None = None, seed: int = 0, grid: bool = True,
                   draws: int = DRAWS, confidence: float = CONFIDENCE, shared: bool = True,
                   per_label: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Weights [L, M] of the members' probabilities p_val [M, N, L], from the tuning samples. `shared`: one
    weighting for all labels, the equal mix unless a candidate (a member alone, or a mix on the grid,
    `grid`; the members alone otherwise) beats it on the macro tuning AUPRC in at least `confidence` of
    `draws` resamplings of the tuning patients (`groups` [N]: each sample's patient; None: each sample its
    own); of those that do, the best on the whole tuning set (with fewer than MIN_PATIENTS tuning patients,
    too few to resample, the equal mix). `per_label`: then each label's own weighting
    by the same test on that label's AUPRC against the shared one. Neither: the equal mix. Masked entries do
    not count; a label without a known positive and negative keeps the shared weighting. `y`, `mask`: [N, L]
    arrays or packed tables (data/bits.py), read a label's column at a time. The report says per label what
    was chosen (`chosen`: equal, member or mix; `for`: all labels or this label) and why (tuning AUPRC of
    the choice and of the equal mix on this label, and the tuning patients with a known positive of it;
    `wins`: the share of resamplings the choice won)."""
    M, N, L = p_val.shape
    if N == 0:
        return equal_without_tuning(L, M)
    y, mask = as_table(y), as_table(mask, bool)
    equal = np.full(M, 1.0 / M)
    candidates = [equal] + [np.eye(M)[k] for k in range(M)] + (
        [c for c in mixes(M) if not np.allclose(c, equal)] if grid else [])
    patient, counts = patient_draws(np.arange(N) if groups is None else np.asarray(groups), draws, seed)
    few = counts.shape[1] < MIN_PATIENTS  # too few patients to resample: the equal mix, and the report says why
    labels = {}  # usable label -> (targets, member probabilities, patient of each sample)
    for j in range(L):
        m = mask[:, j]
        yj = y[:, j][m] > 0.5
        if _usable(yj):
            labels[j] = (yj, p_val[:, m, j], patient[m])
    cache: dict[tuple[int, int, bool], float | np.ndarray] = {}

    def score(j: int, k: int, resampled: bool = False):
        """Label j's tuning AUPRC of candidate k: on the whole set (a float) or per draw ([draws])."""
        if (j, k, resampled) not in cache:
            yj, pj, pat = labels[j]
            sj = candidates[k] @ pj
            cache[j, k, resampled] = resampled_auprc(yj, sj, pat, counts) if resampled else auprc(yj, sj)
        return cache[j, k, resampled]

    def pick(base: int, full: Callable[[int], float], per_draw: Callable[[int], np.ndarray]) -> tuple[int, float]:
        """The best candidate (whole set) of those beating `base` in `confidence` of the draws; its wins. Tried
        best first, so the first that passes is the one (and most candidates are never resampled)."""
        base_full, base_draws = full(base), per_draw(base)
        ok = ~np.isnan(base_draws)
        if not ok.any():
            return base, 0.0
        scores = np.array([full(k) for k in range(len(candidates))])
        for k in np.argsort(-scores, kind="stable"):
            if scores[k] <= base_full:
                break
            wins = float(np.mean(per_draw(int(k))[ok] > base_draws[ok]))
            if wins >= confidence:
                return int(k), wins
        return base, 0.0

    base, base_wins = 0, 0.0
    if shared and labels and not few:
        base, base_wins = pick(0, lambda k: float(np.mean([score(j, k) for j in labels])),
                               lambda k: np.nanmean(np.stack([score(j, k, True) for j in labels]), axis=0))
    weights, report = np.tile(candidates[base], (L, 1)), []
    for j in range(L):
        if j not in labels:
            report.append({"chosen": f"{kind_of(candidates[base])} (no positive or no negative among tuning "
                                     "samples)", "for": "all labels"})
            continue
        k, wins = (pick(base, lambda k, j=j: score(j, k), lambda k, j=j: score(j, k, True))
                   if per_label and not few else (base, base_wins))
        own = k != base
        weights[j] = candidates[k]
        why = f" (fewer than {MIN_PATIENTS} tuning patients: too few to resample)" if few else ""
        report.append({"chosen": kind_of(candidates[k]) + why, "for": "this label" if own else "all labels",
                       "tuning_auprc": score(j, k), "tuning_auprc_equal": score(j, 0),
                       # metrics.json's small-cell rule hides both AUPRCs of a label from 1 to 9 such patients
                       "tuning_positive_patients": len(np.unique(labels[j][2][labels[j][0]])),
                       **({"wins": wins} if k != 0 else {})})
    return weights, report


def _auprc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(weighted_auprc(y, p, np.ones((1, len(y))))[0]) if _usable(y) else None


def best_on_tuning(p_val: np.ndarray, y, mask) -> tuple[np.ndarray, list[dict]]:
    """The rule before (sessions 8-9): the weighting with the best tuning AUPRC, shared by all labels (a
    member, or a mix on the grid if it beats the best member by MIN_GAIN), then a label's own where it has
    MIN_POSITIVES tuning positives and its best beats the shared choice by MIN_GAIN."""
    M, _, L = p_val.shape
    y, mask = as_table(y), as_table(mask, bool)
    candidates = [np.eye(M)[k] for k in range(M)] + mixes(M)
    scores: dict[int, list[float]] = {}  # usable label -> AUPRC per candidate
    positives = np.zeros(L, np.int64)
    for j in range(L):
        m = mask[:, j]
        yj = y[:, j][m] > 0.5
        if _auprc(yj, p_val[0, m, j]) is None:
            continue
        scores[j] = [_auprc(yj, np.tensordot(c, p_val[:, m, j], 1)) for c in candidates]
        positives[j] = int(yj.sum())
    macro = [float(np.mean([s[k] for s in scores.values()])) if scores else 0.0 for k in range(len(candidates))]
    best_single = int(np.argmax(macro[:M]))
    best = int(np.argmax(macro))
    chosen = best if macro[best] > macro[best_single] + MIN_GAIN else best_single
    weights = np.tile(candidates[chosen], (L, 1))
    report = []
    for j in range(L):
        if j not in scores:
            report.append({"chosen": "shared (no positive or no negative among tuning samples)"})
            continue
        mine, shared_score = scores[j], scores[j][chosen]
        k = int(np.argmax(mine))
        if positives[j] >= MIN_POSITIVES and mine[k] > shared_score + MIN_GAIN:
            weights[j] = candidates[k]
            report.append({"chosen": "own", "tuning_auprc": mine[k], "shared_auprc": shared_score})
        else:
            report.append({"chosen": "shared", "tuning_auprc": shared_score})
    return weights, report
