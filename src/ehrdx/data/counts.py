"""Count features for the baselines: how often each code occurs in a sample's history, and the last
value of each numeric code, both at the prediction time (events at or before it only).

These are what the foundation's MLP and a one-vs-rest logistic regression see; they know nothing of
order or timing beyond the last values, which is what sequence models are measured against.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ehrdx.data.preprocess import EncodedFeatures
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import YEAR, Z_CLIP, EventEncoder, birth_times
from ehrdx.data.store import EventStore, concat_ranges


def history_features(store: EventStore, samples: Samples, encoder: EventEncoder) -> EncodedFeatures:
    """Dense block [last value z-score and missing flag per numeric code, age, log visits] and the bag
    of history codes (with repeats, so a mean embedding weighs codes by their counts)."""
    offsets = np.asarray(store.offsets)
    starts, ends = offsets[samples.row], samples.cutoff
    pos = concat_ranges(starts, ends)
    lengths = ends - starts
    owner = np.repeat(np.arange(len(samples)), lengths)
    codes = encoder.code_map(store)[np.asarray(store.codes)[pos]]
    values = np.asarray(store.values)[pos]

    numeric = encoder.numeric_codes()
    col_of = np.full(encoder.n_codes, -1, dtype=np.int64)
    col_of[numeric] = np.arange(len(numeric))
    has = ~np.isnan(values) & (col_of[codes] >= 0)
    # Last value per (sample, code): events are in time order, so keep the last occurrence.
    o, c, v = owner[has], col_of[codes[has]], values[has]
    k = o * max(len(numeric), 1) + c
    rev = np.unique(k[::-1], return_index=True)[1]
    last_idx = len(k) - 1 - rev
    last = np.zeros((len(samples), len(numeric)), dtype=np.float32)
    seen = np.zeros((len(samples), len(numeric)), dtype=np.float32)
    z = (v[last_idx] - encoder.value_mean[numeric][c[last_idx]]) / encoder.value_std[numeric][c[last_idx]]
    last[o[last_idx], c[last_idx]] = np.clip(z, -Z_CLIP, Z_CLIP)
    seen[o[last_idx], c[last_idx]] = 1.0

    birth = birth_times(store, samples.row)
    age = (samples.time - birth) / YEAR
    extra = np.stack([np.nan_to_num((age - 50) / 20, nan=0.0), np.isnan(age),
                      np.log1p(samples.n_visits) / 3.0], axis=1).astype(np.float32)
    dense = np.concatenate([last, seen, extra], axis=1)
    code_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    unknown = int((codes == 0).sum())
    return EncodedFeatures(dense, codes.astype(np.int64), code_offsets, {"codes:unseen": unknown} if unknown else {})


def count_matrix(features: EncodedFeatures, n_codes: int) -> sp.csr_matrix:
    """Sparse [N, n_codes + dense] matrix: log(1 + count) of each history code, then the dense block."""
    n = len(features)
    ones = np.ones(len(features.code_ids), dtype=np.float32)
    counts = sp.csr_matrix((ones, features.code_ids, features.code_offsets), shape=(n, n_codes))
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    return sp.hstack([counts, sp.csr_matrix(features.dense)], format="csr")
