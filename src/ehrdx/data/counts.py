"""Count features for the baselines: how often each code occurs in a sample's history, and the last
value of each numeric code, both at the prediction time (events at or before it only).

These are what the foundation's MLP and a one-vs-rest logistic regression see; they know nothing of
order or timing beyond the last values, which is what sequence models are measured against.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ehrdx.data.history import last_of_group
from ehrdx.data.preprocess import EncodedFeatures
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import YEAR, Z_CLIP, EventEncoder, birth_times
from ehrdx.data.store import EventStore, concat_ranges


def history_features(store: EventStore, samples: Samples, encoder: EventEncoder) -> EncodedFeatures:
    """Dense block [last value z-score and missing flag per numeric code, age, log visits] and the bag of
    history codes: each distinct code once, with how often it occurs (a mean embedding weighs codes by
    their counts). Built from the last event of each (patient, code) before each sample's cutoff
    (history.last_of_group), so the work grows with events and distinct history codes, not with samples x
    history: a patient of 20,000 visits has 20,000 histories, which spelt out event by event were 200M
    events (16 GB)."""
    n = len(samples)
    order = np.lexsort((samples.cutoff, samples.row))  # last_of_group reads samples by patient, then cutoff
    row = np.asarray(samples.row, dtype=np.int64)[order]
    cut = np.asarray(samples.cutoff, dtype=np.int64)[order]
    offsets = np.asarray(store.offsets)
    urow, s_u = np.unique(row, return_inverse=True)
    last_cut = cut[np.flatnonzero(np.append(s_u[1:] != s_u[:-1], True))] if n else np.zeros(0, np.int64)
    pos = concat_ranges(offsets[urow], last_cut)  # every event some sample reads, no later one
    ev_u = np.repeat(np.arange(len(urow)), np.maximum(last_cut - offsets[urow], 0))
    big = len(store.times) + 2  # exceeds every event index: patient-major sort keys
    s_key = s_u * big + cut
    codes = encoder.code_map(store)[np.asarray(store.codes)[pos]]
    values = np.asarray(store.values)[pos]

    g = last_of_group(ev_u, pos, codes, encoder.n_codes, s_key, big)
    sample = order[g.pair_sample]
    code = codes[g.order[g.pair_event]]
    count = (g.rank[g.pair_event] + 1).astype(np.float32)
    by = np.lexsort((code, sample))
    sample, code, count = sample[by], code[by], count[by]
    code_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(sample, minlength=n), out=code_offsets[1:])

    numeric = encoder.numeric_codes()
    col_of = np.full(encoder.n_codes, -1, dtype=np.int64)
    col_of[numeric] = np.arange(len(numeric))
    valued = np.flatnonzero(~np.isnan(values) & (col_of[codes] >= 0))
    gv = last_of_group(ev_u[valued], pos[valued], col_of[codes[valued]], max(len(numeric), 1), s_key, big)
    e = valued[gv.order[gv.pair_event]]  # the last value of each (sample, numeric code)
    o, c, v = order[gv.pair_sample], col_of[codes[e]], values[e]
    last = np.zeros((n, len(numeric)), dtype=np.float32)
    seen = np.zeros((n, len(numeric)), dtype=np.float32)
    z = (v - encoder.value_mean[numeric][c]) / encoder.value_std[numeric][c]
    last[o, c] = np.clip(z, -Z_CLIP, Z_CLIP)
    seen[o, c] = 1.0

    birth = birth_times(store, samples.row)
    age = (samples.time - birth) / YEAR
    extra = np.stack([np.nan_to_num((age - 50) / 20, nan=0.0), np.isnan(age),
                      np.log1p(samples.n_visits) / 3.0], axis=1).astype(np.float32)
    dense = np.concatenate([last, seen, extra], axis=1)
    unknown = int(count[code == 0].sum())  # history events of unseen codes, once per sample that reads them
    return EncodedFeatures(dense, code.astype(np.int64), code_offsets, {"codes:unseen": unknown} if unknown else {},
                           code_counts=count)


def count_matrix(features: EncodedFeatures, n_codes: int) -> sp.csr_matrix:
    """Sparse [N, n_codes + dense] matrix: log(1 + count) of each history code, then the dense block."""
    n = len(features)
    each = features.code_counts if features.code_counts is not None else np.ones(len(features.code_ids), np.float32)
    counts = sp.csr_matrix((each, features.code_ids, features.code_offsets), shape=(n, n_codes))
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    return sp.hstack([counts, sp.csr_matrix(features.dense)], format="csr")
