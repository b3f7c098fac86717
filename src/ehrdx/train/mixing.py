"""How the `auto` ensemble combines its members per label, from their probabilities on the tuning samples.

`choose_weights` (the rule auto uses): the equal-weight average of the members for every label, unless the
tuning patients say clearly that something else is better for a label: another weighting (a member alone,
or a mix of members: candidates in 1/GRID_STEPS steps, `grid=True`; the members alone, `grid=False`)
replaces the equal mix of a label only if its tuning AUPRC beats the equal mix's in at least CONFIDENCE of
DRAWS bootstrap resamplings of the tuning patients (patients drawn with replacement, a patient's samples
together); of the candidates that pass, the best on the whole tuning set. Why: on ~700 tuning samples
(2,500-patient external sets) the weighting with the best tuning AUPRC is mostly noise; choosing it (the
rule of sessions 8-9, `best_on_tuning`) lost to the fixed equal mix on both external sets, and the equal
mix of gbm, gru and gbm-counts was about as good as the best member on each set without knowing which
member that is (BENCHMARKS.md, issue 14).

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

from ehrdx.data.bits import as_table

GRID_STEPS = 10  # candidate weights in tenths
DRAWS = 200  # bootstrap resamplings of the tuning patients
CONFIDENCE = 0.95  # share of the resamplings a candidate must win to replace the equal mix of a label
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
    order = np.argsort(-score, kind="mergesort")
    y, score, w = y[order], score[order], w[:, order]
    ends = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the last sample of each distinct score
    tp = np.cumsum(w * y, axis=1)[:, ends]
    fp = np.cumsum(w * ~y, axis=1)[:, ends]
    P = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        recall = np.concatenate([np.zeros_like(P), tp / P], axis=1)
        out = np.sum(np.diff(recall, axis=1) * precision, axis=1)
    return np.where(P[:, 0] > 0, out, np.nan)


def patient_draws(groups: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """[draws, n] how often each sample is drawn when its patient (`groups` [n]) is: patients with
    replacement, as many as there are, seeded."""
    patients, index = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients))
                       for _ in range(draws)])
    return counts[:, index].astype(np.float64)


def _usable(y: np.ndarray) -> bool:
    return len(y) > 0 and bool(y.any()) and not bool(y.all())


def choose_weights(p_val: np.ndarray, y, mask, groups: np.ndarray | None = None, seed: int = 0, grid: bool = True,
                   draws: int = DRAWS, confidence: float = CONFIDENCE, shared: bool = False
                   ) -> tuple[np.ndarray, list[dict]]:
    """Weights [L, M] of the members' probabilities p_val [M, N, L]: the equal mix, replaced for a label by
    the candidate that beats it on tuning AUPRC in at least `confidence` of `draws` resamplings of the
    tuning patients (`groups` [N]: each sample's patient; None: each sample its own). With `shared`, first
    one weighting for all labels by the same test on the macro AUPRC, which the labels' own then replace.
    Masked entries do not count; a label without a known positive and negative keeps the equal (or shared)
    mix. `y`, `mask`: [N, L] arrays or packed tables (data/bits.py), read a label's column at a time. The
    report says per label what was chosen and why (`chosen`, `wins`: its share of the resamplings)."""
    M, N, L = p_val.shape
    y, mask = as_table(y), as_table(mask, bool)
    equal = np.full(M, 1.0 / M)
    candidates = [equal] + [np.eye(M)[k] for k in range(M)] + (
        [c for c in mixes(M) if not np.allclose(c, equal)] if grid else [])
    W = patient_draws(np.arange(N) if groups is None else np.asarray(groups), draws, seed)
    labels = {}  # usable label -> (targets, member probabilities, draw weights)
    for j in range(L):
        m = mask[:, j]
        yj = y[:, j][m] > 0.5
        if _usable(yj):
            labels[j] = (yj, p_val[:, m, j], W[:, m])
    cache: dict[tuple[int, int], tuple[float, np.ndarray]] = {}

    def score(j: int, k: int) -> tuple[float, np.ndarray]:
        """Label j's tuning AUPRC of candidate k, on the whole set and per draw."""
        if (j, k) not in cache:
            yj, pj, Wj = labels[j]
            s = candidates[k] @ pj
            cache[j, k] = (float(weighted_auprc(yj, s, np.ones((1, len(yj))))[0]), weighted_auprc(yj, s, Wj))
        return cache[j, k]

    def pick(base: int, full: Callable[[int], float], per_draw: Callable[[int], np.ndarray]) -> tuple[int, float]:
        """The best candidate (whole set) of those beating `base` in `confidence` of the draws; its wins."""
        base_full, base_draws = full(base), per_draw(base)
        ok = ~np.isnan(base_draws)
        best, best_score, best_wins = base, base_full, 0.0
        for k in range(len(candidates)):
            if k == base or full(k) <= best_score or not ok.any():
                continue
            wins = float(np.mean(per_draw(k)[ok] > base_draws[ok]))
            if wins >= confidence:
                best, best_score, best_wins = k, full(k), wins
        return best, best_wins

    base, base_wins = 0, 0.0
    if shared and labels:
        base, base_wins = pick(0, lambda k: float(np.mean([score(j, k)[0] for j in labels])),
                               lambda k: np.nanmean(np.stack([score(j, k)[1] for j in labels]), axis=0))
    weights, report = np.tile(candidates[base], (L, 1)), []
    what = "equal" if base == 0 else "shared"
    for j in range(L):
        if j not in labels:
            report.append({"chosen": f"{what} (no positive or no negative among tuning samples)"})
            continue
        k, wins = pick(base, lambda k: score(j, k)[0], lambda k: score(j, k)[1])
        entry = {f"tuning_auprc_{what}": score(j, base)[0], "positives": int(labels[j][0].sum())}
        if k == base:
            report.append({"chosen": what, **entry})
        else:
            weights[j] = candidates[k]
            report.append({"chosen": "equal" if k == 0 else "member" if candidates[k].max() == 1 else "mix",
                           "tuning_auprc": score(j, k)[0], "wins": wins, **entry})
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
