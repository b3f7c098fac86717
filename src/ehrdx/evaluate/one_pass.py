"""Every metric of an evaluation from one reading of the scores.

evaluate_samples reports, for two masks (all labels, new onset), the per-label ranking, the pooled (micro)
AUROC and AUPRC, calibration sums, recall@k and the metrics at two sets of thresholds, and the per-label and
pooled rankings again within groups of samples (by prior visits). Computed metric by metric, that reads the
scores about twenty times, and scores computed when read (ranking.HeadScores) are the costliest part of a
read. Here each block of labels is read once and handed to every tally that needs it: a block is put
label-major with the samples in group order, each (mask, group, label) part compressed and sorted once,
and the sorted parts give the per-label rankings (a label's whole ranking from its groups' parts, by
searches), the calibration sums, and the negatives the pooled counts merge (evaluate/pooled.py); one pass
over blocks of samples serves recall@k for both masks. The counts are those the separate metrics gather,
so the results are the same: every count, ranking and threshold metric exactly, the calibration sums (Brier,
ECE) within rounding (summed in another order). tests/test_one_pass.py compares them number by number.

The pooled counts need every positive's score before the negatives are counted: they are read first from
the targets (positives are few) and scored pair by pair (ranking.pair_scores); the pass compares the scores
it reads for those positives with them, and if any differs (a computed read that rounds otherwise) the
pooled counts take one more pass over the blocks, so the result stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ehrdx.evaluate.pooled import PooledPair
from ehrdx.evaluate.tallies import CalibrationTally, RecallTally, ThresholdTally, at_least, count_per_row
from ehrdx.ranking import (
    TWO_BITS,
    LabelRanking,
    block_elements,
    label_blocks,
    pair_scores,
    ranking_of_counts,
    read_block,
    score_bits,
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


def _rank(r: LabelRanking, j: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Label j's known elements and ranking in `r` from the sorted positive and negative scores of some
    disjoint sets of samples: the counts binary_ranking gets from all of them together (each positive's
    negatives below and tied summed over the sets), so the same AUROC and AP."""
    ps = parts[0][0] if len(parts) == 1 else np.sort(np.concatenate([q for q, _ in parts]))
    n_neg = sum(len(ns) for _, ns in parts)
    r.known[j], r.positives[j] = len(ps) + n_neg, len(ps)
    if len(ps) and n_neg:
        below, tied = np.zeros(len(ps), np.int64), 0
        for _, ns in parts:
            left = np.searchsorted(ns, ps, side="left")
            below += left
            tied += int((np.searchsorted(ns, ps, side="right") - left).sum())
        r.auroc[j], r.auprc[j] = ranking_of_counts(ps, below, tied, n_neg)


def _by_label(values: np.ndarray, per_label: np.ndarray) -> list[np.ndarray]:
    """A block's selected scores, label by label (`per_label` of each): views of `values`."""
    ends = np.cumsum(per_label)
    return [values[e - n:e] for e, n in zip(ends.tolist(), per_label.tolist())]


def _sorted_by_label(values: np.ndarray, per_label: np.ndarray) -> list[np.ndarray]:
    """_by_label, each label's part sorted in place."""
    out = _by_label(values, per_label)
    for part in out:
        part.sort()
    return out


def _sorted_by_both(ns: np.ndarray, in_new: np.ndarray, per_label: list[np.ndarray]) -> list[list[np.ndarray]]:
    """_sorted_by_label of the mask's negatives and of the new mask's among them, from one sort per label:
    keys of the scores' bits (scores in [0, 2): no sign bit, a bit free above) and whether new onset."""
    key = score_bits(ns) << 1
    key |= in_new
    _sorted_by_label(key, per_label[0])
    new = key[(key & 1) != 0]
    key >>= 1
    new >>= 1
    return [_by_label(key.view(ns.dtype), per_label[0]), _by_label(new.view(ns.dtype), per_label[1])]


def _pooled_pairs(s: np.ndarray, new: np.ndarray, group_of_pos: np.ndarray, n_groups: int) -> list[PooledPair]:
    """PooledPair of all samples, then of each group: the mask's counts, and within them the new mask's,
    from the positives' scores `s`, whether each is a new-mask positive, and each one's group."""
    return [PooledPair(s, new)] + [PooledPair(s[group_of_pos == g], new[group_of_pos == g]) for g in range(n_groups)]


def _label_major(p: np.ndarray, yb: np.ndarray, known: list[np.ndarray], order: np.ndarray | None) -> tuple:
    """A block label-major, samples in group order (each label's scores contiguous, each group one range):
    the scores (floats), and per mask the known positives and the known negatives."""
    pf = p if np.issubdtype(p.dtype, np.floating) else p.astype(np.float64)
    pt = np.ascontiguousarray((pf if order is None else pf[order]).T)
    qt, nt = [], []
    for k in known:
        pos = yb & k
        qt.append(np.ascontiguousarray((pos if order is None else pos[order]).T))
        nt.append(np.ascontiguousarray((k if order is None else k[order]).T))
        nt[-1] &= ~qt[-1]
    return pt, qt, nt


def evaluate_once(y, mask, new_mask, proba, groups: list[np.ndarray], thresholds: dict[str, np.ndarray],
                  k_values, max_elements: int | None = None) -> OnePass:
    """The counts of metrics.evaluate_predictions (without patients_per_label, which reads no scores) for
    `mask` and for `new_mask` (a part of it: known there means known in `mask`), and of ranking.macro_scores
    within each of `groups` (sorted, disjoint sample indices) for each mask, from one reading of each
    block of `proba` ([S, L] array or HeadScores; `y` and the masks [S, L] tables read like arrays) and
    one pass over blocks of samples for recall@k."""
    masks = [mask, new_mask]
    n_samples, n_labels = np.shape(proba)
    n_groups = len(groups)
    blocks = list(label_blocks(n_samples, n_labels, max_elements or block_elements(proba)))
    # samples in group order (the rest last), so that each group's samples are one range of a block's columns
    group_of = np.full(n_samples, n_groups, np.int64)
    for g, rows in enumerate(groups):
        group_of[rows] = g
    order = np.argsort(group_of, kind="stable") if groups else None
    bounds = np.searchsorted(group_of[order], np.arange(n_groups + 2)) if groups else np.array([0, n_samples])
    spans = [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(n_groups + 1)]  # the groups, the rest

    # the positives' scores first (targets and masks only, then the pairs scored), for the pooled counts
    rows, cols, new = [], [], []
    for b in blocks:
        yb = read_block(y, None, b) > 0.5
        known, known_new = (read_block(t, None, b).astype(bool, copy=False) for t in masks)
        if (known_new & ~known).any():
            raise ValueError("the new-onset mask must be a part of the mask (known there, known in the mask)")
        at = np.flatnonzero(yb & known)
        rows.append(at // (b.stop - b.start))
        cols.append(at % (b.stop - b.start) + b.start)
        new.append(known_new.ravel()[at])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    s = pair_scores(proba, r, np.concatenate(cols) if cols else np.zeros(0, np.int64), blocks)
    new = np.concatenate(new) if new else np.zeros(0, bool)
    group_of_pos = group_of[r].astype(np.int16)
    del rows, cols, r
    pooled = _pooled_pairs(s, new, group_of_pos, n_groups)
    s_read, n_read = s, 0  # the positives' scores as the pass reads them (a copy once one differs)

    ranks = [[_empty_ranking(n_labels) for _ in range(n_groups + 1)] for _ in masks]
    calibration = [CalibrationTally() for _ in masks]
    at_thr = [{name: ThresholdTally(n_samples, thr) for name, thr in thresholds.items()} for _ in masks]
    for b in blocks:
        p = read_block(proba, None, b)
        y_raw = read_block(y, None, b)
        yb = y_raw > 0.5
        preds = {name: at_least(p, thr[b]) for name, thr in thresholds.items()}
        known = [read_block(t, None, b).astype(bool, copy=False) for t in masks]
        for m in range(len(masks)):
            k = known[m]
            pos = yb & k
            if y_raw.dtype != bool:  # values other than yes/no: summed as they are (else from the sorted scores)
                calibration[m].add_block(p, y_raw, k)
            pos_at = np.flatnonzero(pos)
            if m == 0:  # the mask's positives in the order they were scored
                read = p[pos_at // p.shape[1], pos_at % p.shape[1]]
                if not np.array_equal(read, s_read[n_read:n_read + len(read)]):
                    s_read = s_read.copy() if s_read is s else s_read
                    s_read[n_read:n_read + len(read)] = read
                n_read += len(read)
            rows_known = count_per_row(k) > 0
            for name, tally in at_thr[m].items():
                tally.add(b, p, yb, k, preds[name], pos_at, rows_known)
        pt, qt, nt = _label_major(p, yb, known, order)
        del p, preds, known  # (a block's worth of memory each)
        parts = [[], []]  # per mask, per span, per label: sorted positive and negative scores
        flagged = pt.dtype in TWO_BITS and (not pt.size or score_bits(pt).max() < TWO_BITS[pt.dtype])
        for g, span in enumerate(spans):
            pg, n_all, n_new = pt[:, span], nt[0][:, span], nt[1][:, span]
            ns, in_new = pg[n_all], n_new[n_all]  # the mask's negatives, those of the new mask among them
            pooled[0].add(ns, in_new)
            if g < n_groups:
                pooled[g + 1].add(ns, in_new)
            per_label = [np.count_nonzero(n_all, axis=1), np.count_nonzero(n_new, axis=1)]
            if flagged:  # one sort for both masks: the scores' bits and whether new onset below them
                ns = _sorted_by_both(ns, in_new, per_label)
            else:
                ns = [_sorted_by_label(ns, per_label[0]), _sorted_by_label(pg[n_new], per_label[1])]
            for m in range(len(masks)):
                q = qt[m][:, span]
                ps = pg[q]
                parts[m].append((_sorted_by_label(ps, np.count_nonzero(q, axis=1)), ns[m]))
                if y_raw.dtype == bool:
                    calibration[m].add(ps.astype(np.float64), np.ones(len(ps)))
                    for x in ns[m]:
                        calibration[m].add_sorted(x, 0.0)
        for m in range(len(masks)):
            for i, j in enumerate(range(b.start, b.stop)):
                label_parts = [(q[i], n[i]) for q, n in parts[m]]
                _rank(ranks[m][0], j, label_parts)
                for g in range(n_groups):
                    _rank(ranks[m][g + 1], j, label_parts[g:g + 1])

    recall = [RecallTally(k_values) for _ in masks]
    for r0 in range(0, n_samples, RECALL_ROWS):
        at = slice(r0, r0 + RECALL_ROWS)
        p, yb = np.asarray(proba[at]), np.asarray(y[at]) > 0.5
        for m, t in enumerate(masks):
            k = np.asarray(t[at], dtype=bool)
            recall[m].add(yb & k, k, p)

    if s_read is not s:  # a computed read that rounds otherwise than the pairs: the pooled counts again
        pooled = _pooled_pairs(s_read, new, group_of_pos, n_groups)
        for b in blocks:
            yb = read_block(y, None, b) > 0.5
            pt, qt, nt = _label_major(read_block(proba, None, b), yb,
                                      [read_block(t, None, b).astype(bool, copy=False) for t in masks], order)
            for g, span in enumerate(spans):
                n = nt[0][:, span]
                ns, in_new = pt[:, span][n], nt[1][:, span][n]
                pooled[0].add(ns, in_new)
                if g < n_groups:
                    pooled[g + 1].add(ns, in_new)
    micro = [[None] * (n_groups + 1) for _ in masks]
    for g, pair in enumerate(pooled):
        micro[0][g], micro[1][g] = pair.results()
    return OnePass(
        [MaskCounts(ranks[m][0], micro[m][0], calibration[m].sums(), recall[m].result(),
                    {name: t.result(ranks[m][0].scored) for name, t in at_thr[m].items()})
         for m in range(len(masks))],
        [[(ranks[m][g], micro[m][g]) for g in range(1, n_groups + 1)] for m in range(len(masks))])
