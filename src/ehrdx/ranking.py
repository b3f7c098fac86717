"""Ranking metrics of many labels at once: per-label AUROC, average precision and the points of their
curves, from two 1-D sorts and searches per label instead of one scikit-learn call per label (whose input
checks cost more than the arithmetic: 269 labels x 18k samples went from 38 s to under 1 s).

Only known (mask True) elements count. Tied scores form one threshold, exactly as scikit-learn's
roc_curve / precision_recall_curve treat them, so with P positives and N negatives among the known elements:

  AUROC = sum over positives of (negatives scored below + negatives tied / 2) / (P N)  (the trapezoids)
  AP    = sum over positives of precision at the positive's score / P                  (no interpolation)

Both equal scikit-learn's roc_auc_score and average_precision_score up to floating-point rounding
(tests/test_ranking.py checks 1e-9). Labels are read in blocks of at most `max_elements` scores, so
working memory does not grow with labels x samples. Base layer: the training loop's monitor (train) and
the evaluation (evaluate) both use it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

MAX_ELEMENTS = 1_000_000  # scores of a block of labels copied at once (label-major): about 15 MB
BUFFER_PER_POSITIVE = 2  # negatives buffered per positive before a pooled merge (PooledCounts)
MIN_BUFFER = 1 << 20  # and at least this many
TIE_WINDOW = 8  # places after a positive looked at for negatives of its score before a search (PooledCounts)
PAIR_ROWS = 4096  # samples read at least, per block of labels, to score (sample, label) pairs (HeadScores.pairs)
INF_BITS = {np.dtype(np.float32): np.uint32(0x7F800000), np.dtype(np.float64): np.uint64(0x7FF0000000000000)}
TWO_BITS = {np.dtype(np.float32): np.uint32(0x40000000), np.dtype(np.float64): np.uint64(0x4000000000000000)}


@dataclass
class LabelRanking:
    """Per label: known elements, known positives, and AUROC / average precision (nan where the known
    elements lack one of the classes)."""

    known: np.ndarray  # [L] int64
    positives: np.ndarray  # [L] int64
    auroc: np.ndarray  # [L] float64, nan without both classes
    auprc: np.ndarray  # [L] float64, nan without both classes

    @property
    def scored(self) -> np.ndarray:
        """Labels with both classes among their known elements (those with an AUROC)."""
        return (self.positives > 0) & (self.positives < self.known)


class HeadScores:
    """Probabilities [S, L] of a network whose output is a linear label head over patient states, kept as
    the states [S, H] and the head (rows [L, H], biases [L]) instead of an [S, L] table: a read of some
    samples and labels computes just those (sigmoid(state . row + bias), float64 from float32 logits).
    With 1,500 labels and a state of 128 that is 12x less memory than the scores; every metric here and in
    evaluate/metrics.py reads scores a block at a time, each block computed when read (a block is
    `block_elements` scores: computing one costs a pass over the states, so blocks are larger than those
    copied from an array). np.asarray(...) makes the whole table, for callers that need it."""

    ndim = 2
    dtype = np.dtype(np.float64)
    block_elements = 16_000_000  # about 128 MB of float64 scores per block read

    def __init__(self, states: np.ndarray, rows: np.ndarray, bias: np.ndarray) -> None:
        self.states = np.asarray(states, dtype=np.float32)
        self.rows = np.asarray(rows, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        if self.states.ndim != 2 or self.rows.shape != (len(self.bias), self.states.shape[1]):
            raise ValueError(f"states {self.states.shape}, rows {self.rows.shape} and bias {self.bias.shape} "
                             "do not agree")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.states), len(self.bias)

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, key) -> np.ndarray:
        samples, labels = key if isinstance(key, tuple) else (key, slice(None))
        return sigmoid((self.states[samples] @ self.rows[labels].T + self.bias[labels]).astype(np.float64))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def pairs(self, samples: np.ndarray, labels: np.ndarray, blocks: list[slice] | None = None,
              min_rows: int = PAIR_ROWS) -> np.ndarray:
        """The scores of the given (sample, label) pairs as reads of the label `blocks` (slices, by default
        those of label_blocks) give them: each block is read for the samples with a pair in it, and at
        least `min_rows` samples, so that the matrix product has the shape of a block read but for its
        number of rows (which does not change a product's sums in practice; a vector product, or one small
        enough for a special kernel, may sum otherwise)."""
        samples, labels = np.asarray(samples, np.int64), np.asarray(labels, np.int64)
        out = np.empty(len(samples), np.float64)
        n_samples, n_labels = self.shape
        fill = np.arange(min(n_samples, min_rows))
        for b in blocks if blocks is not None else label_blocks(n_samples, n_labels, self.block_elements):
            at = np.flatnonzero((labels >= b.start) & (labels < b.stop))
            if len(at):
                rows = np.union1d(samples[at], fill)
                out[at] = self[rows, b][np.searchsorted(rows, samples[at]), labels[at] - b.start]
        return out


def score_bits(scores: np.ndarray) -> np.ndarray:
    """The bits of float32 / float64 scores as unsigned integers (a view): for non-negative scores they
    order as the scores do."""
    return scores.view(np.uint32 if scores.dtype == np.float32 else np.uint64)


def pair_scores(scores, samples: np.ndarray, labels: np.ndarray, blocks: list[slice] | None = None) -> np.ndarray:
    """scores[samples[i], labels[i]] for each i, from an [S, L] array or HeadScores (HeadScores.pairs: read
    as the label `blocks` read them)."""
    if isinstance(scores, HeadScores):
        return scores.pairs(samples, labels, blocks)
    return np.asarray(scores)[samples, labels]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), in place on `logits` (a float array of the caller's: no copies)."""
    np.negative(logits, out=logits)
    np.exp(logits, out=logits)
    logits += 1.0
    return np.reciprocal(logits, out=logits)


def block_elements(scores) -> int:
    """How many scores to read at once from `scores`: MAX_ELEMENTS from an array, more from scores that are
    computed when read (HeadScores)."""
    return getattr(scores, "block_elements", MAX_ELEMENTS)


def label_blocks(n_samples: int, n_labels: int, max_elements: int = MAX_ELEMENTS) -> Iterator[slice]:
    """Consecutive label slices of at most `max_elements` scores each (at least one label)."""
    step = max(1, max_elements // max(n_samples, 1))
    for j0 in range(0, n_labels, step):
        yield slice(j0, min(j0 + step, n_labels))


def binary_ranking(positive_scores: np.ndarray, negative_scores: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision of one label from its positives' and negatives' scores (nan without
    both). Two sorts and searches: each positive counts the negatives below it (ties a half) and its
    precision is read at its own score, the threshold that includes it and everything tied with it."""
    ps, ns = np.sort(positive_scores), np.sort(negative_scores)
    if len(ps) == 0 or len(ns) == 0:
        return math.nan, math.nan
    below = np.searchsorted(ns, ps, side="left")
    return ranking_of_counts(ps, below, int((np.searchsorted(ns, ps, side="right") - below).sum()), len(ns))


def ranking_of_counts(ps: np.ndarray, below: np.ndarray, tied: int, n_neg: int) -> tuple[float, float]:
    """AUROC and average precision from the sorted positive scores `ps`, the negatives scored below each,
    the (positive, negative) pairs of equal score and the number of negatives (one formula for
    binary_ranking and the pooled counts)."""
    n_pos = len(ps)
    auroc = (int(below.sum()) + 0.5 * int(tied)) / (n_pos * n_neg)
    tp = n_pos - np.searchsorted(ps, ps, side="left")  # positives at or above each positive's score
    fp = n_neg - below
    return auroc, float(np.mean(tp / (tp + fp)))


def read_block(table, rows: np.ndarray | None, b: slice) -> np.ndarray:
    """`table[rows, b]` (all rows when `rows` is None) as an array: `table` is an [S, L] array or anything
    indexed like one (data/bits.py BitTable: targets and masks kept bit-packed)."""
    return np.asarray(table[:, b] if rows is None else table[rows, b])


def label_ranking(y, mask, scores: np.ndarray, max_elements: int | None = None,
                  rows: np.ndarray | None = None) -> LabelRanking:
    """AUROC and average precision of every label ([S, L] arrays, or tables indexed like them), a block of
    labels at a time (one label's scores contiguous, so each label costs two 1-D sorts: faster than one
    sort of the block). `rows`: only these samples (indices)."""
    n_samples, n_labels = np.shape(scores)
    n_samples = n_samples if rows is None else len(rows)
    known = np.zeros(n_labels, np.int64)
    positives = np.zeros(n_labels, np.int64)
    auroc, auprc = np.full(n_labels, np.nan), np.full(n_labels, np.nan)
    for b in label_blocks(n_samples, n_labels, max_elements or block_elements(scores)):
        p = read_block(scores, rows, b)
        p = np.ascontiguousarray((p if np.issubdtype(p.dtype, np.floating) else p.astype(np.float64)).T)
        k = np.ascontiguousarray(read_block(mask, rows, b).astype(bool, copy=False).T)
        pos = np.ascontiguousarray(read_block(y, rows, b).T > 0.5) & k
        known[b], positives[b] = k.sum(1), pos.sum(1)
        for i, j in enumerate(range(b.start, b.stop)):
            if 0 < positives[j] < known[j]:
                auroc[j], auprc[j] = binary_ranking(p[i][pos[i]], p[i][k[i] & ~pos[i]])
    return LabelRanking(known, positives, auroc, auprc)


def micro_ranking(y: np.ndarray, scores: np.ndarray) -> tuple[float | None, float | None]:
    """AUROC and average precision of all given (known) elements pooled; None without both classes."""
    pos = np.asarray(y).ravel() > 0.5
    scores = np.asarray(scores).ravel()
    auroc, auprc = binary_ranking(scores[pos], scores[~pos])
    return (None, None) if math.isnan(auroc) else (auroc, auprc)


def pooled_ranking(y, mask, scores: np.ndarray, rows: np.ndarray | None = None,
                   max_elements: int | None = None) -> tuple[float | None, float | None]:
    """micro_ranking of all known elements of [S, L] tables (`rows` only, when given), without pooling
    them: a first pass over blocks of samples keeps the positives' scores, a second adds every known
    score to PooledCounts (the positives taken back at the end). The counts are the ones micro_ranking
    gets from the pooled arrays, so the result is the same; memory grows with the positives, not with
    samples x labels, and time with the entries. Blocks of samples (all labels), as the pooled counts do
    not care about order: whole rows of an array are contiguous, and HeadScores computes a block of
    samples from one read of their states (a block of labels reads every state)."""
    n_samples, n_labels = np.shape(scores)
    n_rows = n_samples if rows is None else len(rows)
    step = max(1, (max_elements or block_elements(scores)) // max(n_labels, 1))
    chunks = [slice(r0, min(r0 + step, n_rows)) for r0 in range(0, n_rows, step)]

    def read(table, r: slice) -> np.ndarray:
        return np.asarray(table[r] if rows is None else table[rows[r]])

    parts = []
    for r in chunks:
        k = read(mask, r).astype(bool, copy=False)
        parts.append(read(scores, r)[(read(y, r) > 0.5) & k])
    counts = PooledCounts(np.concatenate(parts) if parts else np.zeros(0))
    for r in chunks:
        counts.add(read(scores, r)[read(mask, r).astype(bool, copy=False)])
    counts.discount_positives()
    return counts.result()


class PooledCounts:
    """The counts behind the pooled (micro) AUROC and average precision of many known entries against a
    fixed set of positive scores, gathered a batch of negatives at a time in work linear in the entries.

    For each positive (sorted) it keeps the negatives scored below it, and in all the negatives tied with
    a positive (pairs), the counts ranking_of_counts turns into the AUROC and AP. Negatives are buffered
    (at least BUFFER_PER_POSITIVE per positive) and merged with the positives in one sort per buffer: a
    merge costs the buffer plus the positives, so the positives' part never exceeds a fraction of the
    negatives' (a search of every negative among the positives, or a count array of the positives per
    block of entries, costs more per entry as the positives grow). The keys sorted are the scores' bits
    with a tag bit below them (for non-negative floats the bits order as the values do): a positive sorts
    before the negatives of its own score, so its place in the merge, less the positives before it, is the
    number of negatives below it. Scores with a sign bit or NaN are merged by a float sort and searches
    instead (numpy's order, NaN last, as np.sort and np.searchsorted give). Memory grows with the
    positives (and one buffer), not with the entries."""

    def __init__(self, positive_scores: np.ndarray, min_buffer: int | None = None) -> None:
        ps = np.asarray(positive_scores).ravel()
        self.dtype = np.dtype(np.float32) if ps.dtype == np.float32 else np.dtype(np.float64)
        self.ps = np.sort(ps.astype(self.dtype, copy=False))
        n_pos = len(self.ps)
        self.below = np.zeros(n_pos, np.int64)  # per positive (sorted): negatives scored below it
        self.tied = 0  # (positive, negative) pairs of equal score
        self.n_neg = 0
        self.capacity = max(BUFFER_PER_POSITIVE * n_pos, min_buffer or MIN_BUFFER, 1)
        self.buffer, self.n_buffered = None, 0  # allocated when first used
        # the last positive of each run of equal scores and the run's length (for ties)
        self.run_last = np.flatnonzero(np.r_[self.ps[1:] != self.ps[:-1], True]) if n_pos else np.zeros(0, np.int64)
        self.run_size = np.diff(np.r_[-1, self.run_last])

    def add(self, negative_scores: np.ndarray) -> None:
        """Count these scores as negatives (any shape; the counter's float type or one that casts to it)."""
        v = np.asarray(negative_scores).ravel()
        if v.dtype != self.dtype:
            if not np.can_cast(v.dtype, self.dtype, "safe"):
                raise ValueError(f"scores of type {v.dtype} cannot be compared exactly as {self.dtype}")
            v = v.astype(self.dtype)
        self.n_neg += len(v)
        if self.buffer is None:
            self.buffer = np.empty(self.capacity, self.dtype)
        at = 0
        while at < len(v):
            n = min(len(v) - at, len(self.buffer) - self.n_buffered)
            self.buffer[self.n_buffered:self.n_buffered + n] = v[at:at + n]
            self.n_buffered += n
            at += n
            if self.n_buffered == len(self.buffer):
                self.flush()

    def flush(self) -> None:
        """Merge the buffered negatives with the positives."""
        if not self.n_buffered:
            return
        buf, self.n_buffered = self.buffer[:self.n_buffered], 0
        if not len(self.ps):
            return
        bits, pbits = score_bits(buf), score_bits(self.ps)
        if bits.max() > INF_BITS[self.dtype] or pbits.max() > INF_BITS[self.dtype]:  # a sign bit or NaN
            self.merge_by_search(buf)
            return
        key = np.empty(len(buf) + len(self.ps), bits.dtype)  # bits and a tag below them: 0 positive, 1 negative
        np.left_shift(bits, 1, out=key[:len(buf)])  # (the sign bit is clear: nothing shifted out)
        key[:len(buf)] |= 1
        np.left_shift(pbits, 1, out=key[len(buf):])
        key.sort()
        self.count_merged(key, 0)

    def count_merged(self, key: np.ndarray, below_tag: int) -> None:
        """Count a sorted merge of these positives with negatives: keys of the scores' bits, a tag bit (0
        positive, 1 negative) and `below_tag` more bits below it (any values)."""
        n_pos, tag_bit, value_shift = len(self.ps), 1 << below_tag, below_tag + 1
        low = key.view(np.uint8)[::key.itemsize] if sys.byteorder == "little" else key  # the low byte
        at = np.flatnonzero((low & tag_bit) == 0)  # the positives' places, in the order of self.ps
        at -= np.arange(n_pos)
        self.below += at
        # ties: negatives right after the last positive of a run of equal scores, with that score
        last = at[self.run_last] + self.run_last  # the run's last positive's place in `key`
        after = np.minimum(last + 1, len(key) - 1)
        value = key[last] >> value_shift
        tie = np.flatnonzero(((key[after] >> value_shift) == value) & (last + 1 < len(key)))
        if len(tie):  # how many: one place after another while they match, a search for long runs
            at_last, value = last[tie], value[tie]
            n_tied = np.ones(len(tie), np.int64)  # the place right after matched
            going = np.arange(len(tie))
            for _ in range(TIE_WINDOW):
                nxt = at_last[going] + n_tied[going] + 1
                more = nxt < len(key)
                more[more] = (key[nxt[more]] >> value_shift) == value[going[more]]
                going = going[more]
                if not len(going):
                    break
                n_tied[going] += 1
            if len(going):
                top = (value[going] << value_shift) | ((1 << value_shift) - 1)  # the highest key of that score
                n_tied[going] = np.searchsorted(key, top.astype(key.dtype), side="right") - at_last[going] - 1
            self.tied += int(np.dot(self.run_size[tie], n_tied))

    def merge_by_search(self, buf: np.ndarray) -> None:
        """Count the negatives `buf` (sorted here, in place) by searches of the positives among them: any
        floats, in numpy's order."""
        buf.sort()
        left = np.searchsorted(buf, self.ps, side="left")
        self.below += left
        self.tied += int((np.searchsorted(buf, self.ps, side="right") - left).sum())

    def discount_positives(self) -> None:
        """Take back the positives themselves, for a caller that added every known score (positives
        included) as negatives: each positive was counted below the positives above it and tied with
        those of its score (itself too)."""
        self.flush()
        left = np.searchsorted(self.ps, self.ps, side="left")
        self.below -= left
        self.tied -= int((np.searchsorted(self.ps, self.ps, side="right") - left).sum())
        self.n_neg -= len(self.ps)

    def result(self) -> tuple[float | None, float | None]:
        """Pooled AUROC and average precision; None without both classes."""
        self.flush()
        if len(self.ps) == 0 or self.n_neg == 0:
            return None, None
        return ranking_of_counts(self.ps, self.below, self.tied, self.n_neg)


def macro_scores(y, mask, scores: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float | None]:
    """Macro (labels with both classes) and micro AUROC and AUPRC; None where no label qualifies.
    `rows`: only these samples."""
    return macro_of(label_ranking(y, mask, scores, rows=rows), pooled_ranking(y, mask, scores, rows))


def macro_of(r: LabelRanking, micro: tuple[float | None, float | None]) -> dict[str, float | None]:
    """macro_scores' result from the per-label ranking and the pooled (micro) AUROC and AUPRC."""
    ok = r.scored
    micro_auroc, micro_auprc = micro
    return {"macro_auroc": float(np.mean(r.auroc[ok])) if ok.any() else None,
            "macro_auprc": float(np.mean(r.auprc[ok])) if ok.any() else None,
            "micro_auroc": micro_auroc, "micro_auprc": micro_auprc}


def curve_counts(positive_scores: np.ndarray, negative_scores: np.ndarray, max_points: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Positives (tp) and negatives (fp) scored at or above each distinct score, highest first: the points
    of the ROC (fp/N, tp/P) and precision-recall (tp/(tp+fp), tp/P) curves. With `max_points`, that many
    thresholds at evenly spaced ranks of the scores (for drawing a pooled curve)."""
    ps, ns = np.sort(positive_scores), np.sort(negative_scores)
    if max_points is not None and len(ps) + len(ns) > max_points:  # scores at evenly spaced ranks
        every = np.concatenate([ps, ns])
        every.sort()
        thresholds = np.unique(every[np.linspace(0, len(every) - 1, max_points).astype(np.int64)])[::-1]
    else:
        thresholds = np.unique(np.concatenate([ps, ns]))[::-1]
    tp = len(ps) - np.searchsorted(ps, thresholds, side="left")
    fp = len(ns) - np.searchsorted(ns, thresholds, side="left")
    return tp, fp


def label_curves(y: np.ndarray, mask: np.ndarray, scores: np.ndarray, labels) -> Iterator[tuple[int, np.ndarray,
                                                                                                  np.ndarray]]:
    """(label, tp, fp) for each of the given label indices (curve_counts of its known elements)."""
    for j in labels:
        known = np.asarray(mask[:, j], dtype=bool)
        pos = (np.asarray(y[:, j]) > 0.5) & known
        p = np.asarray(scores[:, j])
        tp, fp = curve_counts(p[pos], p[known & ~pos])
        yield int(j), tp, fp
