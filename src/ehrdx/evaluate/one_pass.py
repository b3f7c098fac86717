"""Every metric of an evaluation from one reading of the scores.

evaluate_samples reports, for two masks (all labels, new onset), the per-label ranking, the pooled (micro)
AUROC and AUPRC, calibration sums, recall@k and the metrics at two sets of thresholds, and the per-label and
pooled rankings again within groups of samples (by prior visits). Computed metric by metric, that reads the
scores about twenty times, and scores computed when read (ranking.HeadScores) are the costliest part of a
read. Here each block of labels is read once and handed to every tally that needs it (evaluate/tallies.py,
ranking.PooledCounts), and one pass over blocks of samples serves recall@k for both masks. The counts are
those the separate metrics gather (the same multisets of scores, the same operations per block), so the
results are the same (tests/test_one_pass.py compares them number by number).

The pooled counts need every positive's score before the negatives are counted: they are read first from
the targets (positives are few) and scored pair by pair (ranking.pair_scores); the scores the pass reads
for those positives are compared with them at the end, and a group whose scores differ (a computed read
that rounds differently) is counted again with ranking.pooled_ranking, so the result stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ehrdx.evaluate.tallies import CalibrationTally, RecallTally, ThresholdTally
from ehrdx.ranking import (
    LabelRanking,
    PooledCounts,
    binary_ranking,
    block_elements,
    label_blocks,
    pair_scores,
    pooled_ranking,
    read_block,
)

RECALL_ROWS = 4096  # samples per block of the recall@k pass (as metrics.recall_at_ks reads them)


@dataclass
class MaskCounts:
    """What the pass gathers for one mask over all samples."""

    rank: LabelRanking
    micro: tuple[float | None, float | None]
    calibration: tuple[np.ndarray, np.ndarray, np.ndarray, float]
    recall: dict[int, float | None]
    at_thresholds: dict[str, dict]  # ThresholdTally.result per named set of thresholds


@dataclass
class OnePass:
    """Per mask: MaskCounts over all samples, and (LabelRanking, micro) within each group of samples."""

    masks: list[MaskCounts]
    groups: list[list[tuple[LabelRanking, tuple[float | None, float | None]]]]  # [mask][group]


def _empty_ranking(n_labels: int) -> LabelRanking:
    return LabelRanking(np.zeros(n_labels, np.int64), np.zeros(n_labels, np.int64), np.full(n_labels, np.nan),
                        np.full(n_labels, np.nan))


def _rank_label(r: LabelRanking, j: int, p: np.ndarray, known: np.ndarray, pos: np.ndarray) -> None:
    r.known[j], r.positives[j] = int(known.sum()), int(pos.sum())
    if 0 < r.positives[j] < r.known[j]:
        r.auroc[j], r.auprc[j] = binary_ranking(p[pos], p[known & ~pos])


def evaluate_once(y, masks: list, proba, groups: list[np.ndarray], thresholds: dict[str, np.ndarray],
                  k_values, max_elements: int | None = None) -> OnePass:
    """The counts of metrics.evaluate_predictions (without patients_per_label, which reads no scores) for
    each of `masks`, and of ranking.macro_scores within each of `groups` (sorted, disjoint sample indices)
    for each mask, from one reading of each block of `proba` ([S, L] array or HeadScores; `y` and the masks
    [S, L] tables read like arrays) and one pass over blocks of samples for recall@k."""
    n_samples, n_labels = np.shape(proba)
    blocks = list(label_blocks(n_samples, n_labels, max_elements or block_elements(proba)))
    # samples in group order (the rest last), so that each group's samples are one range of a block's columns
    group_of = np.full(n_samples, len(groups), np.int64)
    for g, rows in enumerate(groups):
        group_of[rows] = g
    order = np.argsort(group_of, kind="stable") if groups else None
    bounds = np.searchsorted(group_of[order], np.arange(len(groups) + 1)) if groups else np.zeros(1, np.int64)
    spans = [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(len(groups))]

    # the positives' scores first (targets and masks only, then the pairs scored), for the pooled counts
    pairs = [([], []) for _ in masks]
    for b in blocks:
        yb = read_block(y, None, b) > 0.5
        for m, mask in enumerate(masks):
            r, c = np.nonzero(yb & read_block(mask, None, b).astype(bool, copy=False))
            pairs[m][0].append(r)
            pairs[m][1].append(c + b.start)
    pooled, seen = [], []  # per mask: PooledCounts of all samples then of each group; the scores read
    for rs, cs in pairs:
        r = np.concatenate(rs) if rs else np.zeros(0, np.int64)
        s = pair_scores(proba, r, np.concatenate(cs) if cs else np.zeros(0, np.int64))
        pooled.append([PooledCounts(s)] + [PooledCounts(s[group_of[r] == g]) for g in range(len(groups))])
        seen.append([[] for _ in range(len(groups) + 1)])
    del pairs

    ranks = [[_empty_ranking(n_labels) for _ in range(len(groups) + 1)] for _ in masks]
    calibration = [CalibrationTally() for _ in masks]
    at_thr = [{name: ThresholdTally(n_samples, thr) for name, thr in thresholds.items()} for _ in masks]
    for b in blocks:
        p = read_block(proba, None, b)
        y_raw = read_block(y, None, b)
        yb = y_raw > 0.5
        known = [read_block(mask, None, b).astype(bool, copy=False) for mask in masks]
        pos = [yb & k for k in known]
        for m in range(len(masks)):
            calibration[m].add_block(p, y_raw, known[m])
            for tally in at_thr[m].values():
                tally.add(b, p, yb, known[m])
            pooled[m][0].add(p[known[m] & ~pos[m]])
            seen[m][0].append(p[pos[m]])
        # label-major, samples in group order: each label's scores contiguous, each group one range
        pf = p if np.issubdtype(p.dtype, np.floating) else p.astype(np.float64)
        pt = np.ascontiguousarray((pf if order is None else pf[order]).T)
        kt = [np.ascontiguousarray((k if order is None else k[order]).T) for k in known]
        post = [np.ascontiguousarray((q if order is None else q[order]).T) for q in pos]
        for m in range(len(masks)):
            for g, span in enumerate(spans, start=1):
                kg, pg = kt[m][:, span], post[m][:, span]
                pooled[m][g].add(pt[:, span][kg & ~pg])
                seen[m][g].append(pt[:, span][pg])
            for i, j in enumerate(range(b.start, b.stop)):
                _rank_label(ranks[m][0], j, pt[i], kt[m][i], post[m][i])
                for g, span in enumerate(spans, start=1):
                    _rank_label(ranks[m][g], j, pt[i, span], kt[m][i, span], post[m][i, span])

    recall = [RecallTally(k_values) for _ in masks]
    for r0 in range(0, n_samples, RECALL_ROWS):
        rows = slice(r0, r0 + RECALL_ROWS)
        p, yb = np.asarray(proba[rows]), np.asarray(y[rows]) > 0.5
        for m, mask in enumerate(masks):
            k = np.asarray(mask[rows], dtype=bool)
            recall[m].add(yb & k, k, p)

    micro = [[_pooled_result(pooled[m][g], seen[m][g], y, mask, proba, None if g == 0 else groups[g - 1])
              for g in range(len(groups) + 1)] for m, mask in enumerate(masks)]
    return OnePass(
        [MaskCounts(ranks[m][0], micro[m][0], calibration[m].sums(), recall[m].result(),
                    {name: t.result(ranks[m][0].scored) for name, t in at_thr[m].items()})
         for m in range(len(masks))],
        [[(ranks[m][g], micro[m][g]) for g in range(1, len(groups) + 1)] for m in range(len(masks))])


def _pooled_result(counts: PooledCounts, seen: list[np.ndarray], y, mask, proba, rows: np.ndarray | None
                   ) -> tuple[float | None, float | None]:
    """The pooled AUROC and AUPRC from `counts`, when the positives' scores it was built from are those the
    pass read (`seen`); else counted again from the tables."""
    read = np.sort(np.concatenate(seen).astype(counts.dtype, copy=False)) if seen else np.zeros(0, counts.dtype)
    if np.array_equal(read, counts.ps):
        return counts.result()
    return pooled_ranking(y, mask, proba, rows)
