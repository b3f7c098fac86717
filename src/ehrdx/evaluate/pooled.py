"""The pooled (micro) AUROC and AP of a set of entries and of a subset of it from one sort per merge.

The evaluation reports both for the known entries and for the new-onset ones (known, and not recorded
before: a subset). ranking.PooledCounts merges buffered negatives with the positives by sorting keys made
of the scores' bits and a tag; here each key also carries whether the entry is in the subset, so the
subset's merge is read from the whole one.
"""

from __future__ import annotations

import sys

import numpy as np

from ehrdx.ranking import TWO_BITS, PooledCounts, score_bits


class PooledPair:
    """PooledCounts of a set of entries and of a subset of it (e.g. the known and the new-onset entries)
    from one merge: each key carries, below the tag, a bit saying whether the entry is in the subset, so
    the subset's merge is the whole merge's keys with that bit (still sorted). Probabilities (scores in
    [0, 2)) leave the two bits free; other scores are merged for each set by the float sort."""

    def __init__(self, positive_scores: np.ndarray, positive_in_subset: np.ndarray,
                 min_buffer: int | None = None) -> None:
        ps = np.asarray(positive_scores).ravel()
        flags = np.asarray(positive_in_subset, bool).ravel()
        self.whole, self.subset = PooledCounts(ps, min_buffer), PooledCounts(ps[flags], min_buffer)
        self.dtype = self.whole.dtype
        self.capacity = self.whole.capacity
        self.values, self.flags, self.n_buffered = None, None, 0
        self.positive_flags = self._flags_of_positives()

    def add(self, negative_scores: np.ndarray, in_subset: np.ndarray) -> None:
        """Count these scores as negatives of the whole set, and those `in_subset` of the subset."""
        v = np.asarray(negative_scores).ravel()
        flags = np.asarray(in_subset, bool).ravel()
        if v.dtype != self.dtype:
            if not np.can_cast(v.dtype, self.dtype, "safe"):
                raise ValueError(f"scores of type {v.dtype} cannot be compared exactly as {self.dtype}")
            v = v.astype(self.dtype)
        self.whole.n_neg += len(v)
        self.subset.n_neg += int(np.count_nonzero(flags))
        if self.values is None:
            self.values, self.flags = np.empty(self.capacity, self.dtype), np.empty(self.capacity, bool)
        at = 0
        while at < len(v):
            n = min(len(v) - at, self.capacity - self.n_buffered)
            self.values[self.n_buffered:self.n_buffered + n] = v[at:at + n]
            self.flags[self.n_buffered:self.n_buffered + n] = flags[at:at + n]
            self.n_buffered += n
            at += n
            if self.n_buffered == self.capacity:
                self.flush()

    def flush(self) -> None:
        if not self.n_buffered:
            return
        n, self.n_buffered = self.n_buffered, 0
        buf, flags = self.values[:n], self.flags[:n]
        ps, p_flags = self.whole.ps, self.positive_flags
        if not len(ps):
            return
        bits, pbits = score_bits(buf), score_bits(ps)
        if bits.max() >= TWO_BITS[self.dtype] or pbits.max() >= TWO_BITS[self.dtype]:
            if len(self.subset.ps):
                self.subset.merge_by_search(buf[flags])
            self.whole.merge_by_search(buf)
            return
        key = np.empty(n + len(ps), bits.dtype)  # bits, a tag (0 positive, 1 negative), in the subset
        np.left_shift(bits, 2, out=key[:n])
        key[:n] |= 2
        key[:n] |= flags
        np.left_shift(pbits, 2, out=key[n:])
        key[n:] |= p_flags
        key.sort()
        self.whole.count_merged(key, 1)
        if len(self.subset.ps):
            low = key.view(np.uint8)[::key.itemsize] if sys.byteorder == "little" else key  # the low byte
            self.subset.count_merged(key[(low & 1) != 0], 1)

    def _flags_of_positives(self) -> np.ndarray:
        """Whether each positive (in the order of whole.ps) is in the subset: the subset's positives are
        the first of each score's run in the whole, as many as the subset has of that score (positives of
        one score are interchangeable)."""
        ps, sub = self.whole.ps, self.subset.ps
        rank_in_run = np.arange(len(ps)) - np.searchsorted(ps, ps, side="left")
        in_sub = np.searchsorted(sub, ps, side="right") - np.searchsorted(sub, ps, side="left")
        return (rank_in_run < in_sub).astype(score_bits(ps).dtype)

    def results(self) -> tuple[tuple[float | None, float | None], tuple[float | None, float | None]]:
        """(AUROC, AP) of the whole set and of the subset."""
        self.flush()
        return self.whole.result(), self.subset.result()
