"""Model inputs from the event store: a code vocabulary and value statistics fit on training patients,
sequences of visits per sample, and a collate that pads a batch only to its own longest sequence.

A patient's samples at the ends of complete visits share one sequence (the model reads it once and
predicts at every visit); a sample whose prediction time falls inside a visit gets a sequence of its own,
cut at that time. Sequences stop at their latest sample: visits after a patient's last prediction time are
never read. With a bounded context (data/windows.py) a sequence is a window of at most 2N visits and its
samples' time features still count from the patient's first visit. Within a visit, codes go into an
embedding bag (no padding at the event level) and each numeric value is standardised with its code's
training mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ehrdx.data.batch import SequenceBatch
from ehrdx.data.batches import epoch_order
from ehrdx.data.bits import BitTable, PackedTargets
from ehrdx.data.device_collate import DeviceCollate, exact_device
from ehrdx.data.patients import birth_times, static_ranges
from ehrdx.data.samples import Samples
from ehrdx.data.sparse import SparseTable
from ehrdx.data.store import EventStore, concat_ranges
from ehrdx.data.windows import prior_summary, window_starts

YEAR = 365.25 * 86400
N_TIME_FEATURES = 6
Z_CLIP = 5.0
MAX_NUMERIC = 64  # numeric codes (most frequent in training) also given as a dense per-visit block
BUCKET_BATCHES = 50  # batches per chunk sorted by sequence length (see SequenceSet._length_batches)
# Samples x labels of one batch at most (its dense logits, targets, mask, loss and their gradients): a step
# of whole sequences with more comes in parts (SequenceSet.step_parts). 2**24 is 64 MB per float32 block:
# 11k samples at 1,500 labels; with tens of labels no batch of the cohorts seen so far comes near it.
MAX_BATCH_CELLS = 1 << 24


@dataclass
class EventEncoder:
    """Input code vocabulary (index 0 = unknown) and per-code value mean/std, from training patients."""

    codes: list[str]  # model index i + 1 -> code
    value_mean: np.ndarray  # [n_codes] (index 0 unused)
    value_std: np.ndarray
    value_count: np.ndarray  # training events with a value, per code
    min_count: int = 1

    @property
    def n_codes(self) -> int:
        return len(self.codes) + 1

    @classmethod
    def fit(cls, store: EventStore, rows: np.ndarray, min_count: int = 1) -> EventEncoder:
        offsets = np.asarray(store.offsets)
        pos = concat_ranges(offsets[rows], offsets[rows + 1])
        codes = np.asarray(store.codes)[pos]
        count = np.bincount(codes, minlength=len(store.code_names))
        keep = np.flatnonzero(count >= min_count)
        names = sorted(store.code_names[i] for i in keep)
        enc = cls(names, np.zeros(len(names) + 1), np.ones(len(names) + 1), np.zeros(len(names) + 1, np.int64),
                  min_count)
        model_id = enc.code_map(store)[codes]
        values = np.asarray(store.values)[pos].astype(np.float64)
        has = ~np.isnan(values)
        n = np.bincount(model_id[has], minlength=enc.n_codes)
        s1 = np.bincount(model_id[has], weights=values[has], minlength=enc.n_codes)
        mean = s1 / np.maximum(n, 1)
        s2 = np.bincount(model_id[has], weights=(values[has] - mean[model_id[has]]) ** 2, minlength=enc.n_codes)
        std = np.sqrt(s2 / np.maximum(n - 1, 1))
        enc.value_mean = mean
        enc.value_std = np.where(std > 1e-8, std, 1.0)
        enc.value_count = n
        return enc

    def numeric_codes(self) -> np.ndarray:
        """Model ids of codes that carry numeric values in training data (unknown bucket excluded)."""
        return np.flatnonzero(self.value_count[1:] > 0) + 1

    def dense_numeric_codes(self, limit: int = MAX_NUMERIC) -> np.ndarray:
        """The `limit` numeric codes with the most training values (ties by code order), sorted by id."""
        ids = self.numeric_codes()
        top = ids[np.argsort(-self.value_count[ids], kind="stable")[:limit]]
        return np.sort(top)

    def code_map(self, store: EventStore) -> np.ndarray:
        """Model code id of every store code (0 where the model has not seen the code)."""
        index = {c: i + 1 for i, c in enumerate(self.codes)}
        return np.array([index.get(c, 0) for c in store.code_names], dtype=np.int64)

    def to_dict(self) -> dict:
        return {"kind": "events", "codes": self.codes, "value_mean": self.value_mean.tolist(),
                "value_std": self.value_std.tolist(), "value_count": self.value_count.tolist(),
                "min_count": self.min_count}

    @classmethod
    def from_dict(cls, d: dict) -> EventEncoder:
        return cls(list(d["codes"]), np.asarray(d["value_mean"], dtype=np.float64),
                   np.asarray(d["value_std"], dtype=np.float64), np.asarray(d["value_count"], dtype=np.int64),
                   int(d["min_count"]))


def numeric_sources(columns: np.ndarray, owner: np.ndarray, vis_pos: np.ndarray, n_columns: int) -> tuple[
        np.ndarray, np.ndarray]:
    """Which event fills each entry of the dense numeric block, -1 where none: `now` [V, K], the event whose
    value a visit shows for column k (the last of several in the visit wins), and `last` [V, K], the event
    whose value is carried forward into it (the latest measurement at an earlier visit of the same
    sequence). `columns`: each event's dense column, -1 for events without one or without a value;
    `owner`: each event's visit (flat); `vis_pos`: each visit's position in its sequence. Vectorised
    forward fill, no loop over visits. Training and explanations (per-event gates) both use it."""
    V, K = len(vis_pos), n_columns
    now = np.full((V, K), -1, dtype=np.int64)
    has = columns >= 0
    now[owner[has], columns[has]] = np.flatnonzero(has)
    idx = np.where(now >= 0, np.arange(V)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    prev_idx = np.vstack([np.full((1, K), -1), idx[:-1]]) if V else idx
    seq_first = np.arange(V) - vis_pos  # flat index of each visit's sequence start
    has_prev = prev_idx >= seq_first[:, None]
    last = np.where(has_prev, now[np.maximum(prev_idx, 0), np.arange(K)[None, :]], -1)
    return now, last


def numeric_block(z: np.ndarray, now: np.ndarray, last: np.ndarray) -> np.ndarray:
    """[V, 4K] float32: per dense numeric code, its value at this visit (z, 0 if not measured), whether it
    was measured, its last value before this visit (carried forward) and whether there is one; `now` and
    `last` from numeric_sources."""
    zs = np.append(z, np.float32(0))  # index -1 (no event) reads 0
    return np.concatenate([zs[now], now >= 0, zs[last], last >= 0], axis=1).astype(np.float32)


def known_entries(mask, rows: np.ndarray) -> int:
    """Set entries in the given rows of a SparseTable (from its row lengths), a BitTable (a popcount of its
    packed bytes) or a dense array."""
    if isinstance(mask, SparseTable):
        return int(mask.row_sums(rows).sum())
    if isinstance(mask, BitTable):
        return int(np.bitwise_count(mask.packed[rows]).sum())
    return int(np.count_nonzero(np.asarray(mask)[rows]))


class SequenceSet(PackedTargets):
    """Samples of one store made ready for sequence models; `batches` yields collated tensors. `context`:
    read each sample's window of visits (data/windows.py) with a summary of the earlier ones; None: all."""

    def __init__(self, store: EventStore, samples: Samples, encoder: EventEncoder, new_onset: bool = False,
                 context: int | None = None) -> None:
        self.store, self.samples, self.encoder, self.context = store, samples, encoder, context
        self.y_bits, self.mask_bits = samples.y_bits, samples.train_mask_bits(new_onset)  # read per batch
        self._code_map = encoder.code_map(store)
        self._mean = encoder.value_mean.astype(np.float32)
        self.numeric_ids = encoder.dense_numeric_codes()
        self._numeric_col = np.full(encoder.n_codes, -1, dtype=np.int64)
        self._numeric_col[self.numeric_ids] = np.arange(len(self.numeric_ids))
        self._std = encoder.value_std.astype(np.float32)
        vo = np.asarray(store.visit_offsets)
        v_ends = np.asarray(store.visit_ends)
        row, nv = samples.row, samples.n_visits.astype(np.int64)
        last_visit = vo[row] + nv - 1
        full = samples.cutoff >= v_ends[last_visit] if len(row) else np.zeros(0, bool)
        start = window_starts(nv - 1, context)  # each sample's window (data/windows.py); 0: whole history
        # Shared sequences: one per patient (and window) with complete-visit samples, as long as the longest
        # of them: visits after a patient's last prediction time are never read.
        stride = int(nv.max(initial=0)) + 1
        keys, shared_inv = np.unique(row[full] * stride + start[full], return_inverse=True)
        shared_rows, shared_start = keys // stride, keys % stride
        shared_nv = np.zeros(len(keys), dtype=np.int64)
        np.maximum.at(shared_nv, shared_inv, nv[full])
        offsets = np.asarray(store.offsets)
        part = np.flatnonzero(~full)
        self.seq_row = np.concatenate([shared_rows, row[part]])
        self.seq_cutoff = np.concatenate([offsets[shared_rows + 1], samples.cutoff[part]])
        self.seq_start = np.concatenate([shared_start, start[part]])  # first visit read (patient-relative)
        self.seq_nv = np.concatenate([shared_nv, nv[part]]) - self.seq_start  # visits read
        seq_of = np.empty(len(row), dtype=np.int64)
        seq_of[full] = shared_inv
        seq_of[part] = len(keys) + np.arange(len(part))
        self.sample_pos = nv - 1 - start  # position in its sequence
        self.sample_order = np.argsort(seq_of, kind="stable")  # samples grouped by sequence
        counts = np.bincount(seq_of, minlength=len(self.seq_row))
        self.seq_sample_offsets = np.concatenate([[0], np.cumsum(counts)])
        self.bucket: bool | None = None  # batches of similar lengths; None: as the caller asks (see batches)
        self.max_cells = MAX_BATCH_CELLS  # samples x labels per batch at most (see step_parts)
        self.device_collate: DeviceCollate | None = None  # set by collate_on: batches built on a device
        self._prepare_patients()

    def _prepare_patients(self) -> None:
        """Static facts (events before the first visit: static rows, birth) and birth time per patient."""
        rows = np.unique(self.seq_row)
        self._rows = rows  # sorted
        self._static_start, self._static_end = static_ranges(self.store, rows)
        self._birth = birth_times(self.store, rows)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def n_sequences(self) -> int:
        return len(self.seq_row)

    @property
    def n_units(self) -> int:
        """What a batch counts: sequences (patients, or a patient's cut sequence)."""
        return self.n_sequences

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", shard=None, bucket: bool | None = None):
        """Batches of `batch_size` sequences (patients), each with all of its samples; with `shard`,
        this process's share of the epoch only. `bucket` makes batches of similar lengths: 1.7x faster
        on CPUs; on a GPU, where the loop is bound by the host, random batches were faster for the GRU
        (BENCHMARKS.md), so the training loop asks for them there. `self.bucket`, when set, overrides
        the caller (benchmarks compare both); neither set: bucketed."""
        order = epoch_order(self.n_sequences, shuffle, generator, shard)
        choice = self.bucket if self.bucket is not None else (True if bucket is None else bucket)
        for seqs in self._length_batches(order, batch_size, shuffle, generator, choice):
            yield from self.step_batches(seqs, device)

    @property
    def max_rows(self) -> int:
        """Samples per batch at most: `max_cells` over the number of labels."""
        return max(1, self.max_cells // max(self.y_bits.shape[1], 1))

    def step_parts(self, seqs: np.ndarray) -> list[np.ndarray]:
        """The sequences of one step cut, in order, into parts of at most `max_rows` samples; a part holds
        whole sequences (a sequence with more samples than that is a part of its own)."""
        so = self.seq_sample_offsets
        counts = so[seqs + 1] - so[seqs]
        cap = self.max_rows
        if int(counts.sum()) <= cap:
            return [seqs]
        parts, start, rows = [], 0, 0
        for i, c in enumerate(counts.tolist()):
            if rows + c > cap and i > start:
                parts.append(seqs[start:i])
                start, rows = i, 0
            rows += c
        parts.append(seqs[start:])
        return parts

    def collate_on(self, device: torch.device | str | None) -> bool:
        """From now on build batches on `device` with tensor indexing (data/device_collate.py: the store's
        arrays go there once; `batches` then ignores its `device`); None: back to the numpy collate."""
        if device is None:
            self.device_collate = None
        elif self.device_collate is None or self.device_collate.device != exact_device(device):
            self.device_collate = DeviceCollate(self, device)
        return self.device_collate is not None

    def step_batches(self, seqs: np.ndarray, device: torch.device | str = "cpu"):
        """One step's batch, or its parts with the whole step's sample and known-entry counts."""
        collate = self.collate if self.device_collate is None else self.device_collate.collate
        parts = self.step_parts(seqs)
        if len(parts) == 1:
            yield collate(seqs, device)
            return
        so = self.seq_sample_offsets
        samples = self.sample_order[concat_ranges(so[seqs], so[seqs + 1])]
        known = known_entries(self.mask_bits, samples)
        for k, part in enumerate(parts):
            yield replace(collate(part, device), part=k, parts=len(parts), step_rows=len(samples),
                          step_known=known)

    def _length_batches(self, order: np.ndarray, batch_size: int, shuffle: bool,
                        generator: torch.Generator | None, bucket: bool = True) -> list[np.ndarray]:
        """Batches of sequences of similar length, so little of a batch is padding (a random batch of 256
        is about 43% visits and 57% padding on the built-in cohort). Shuffled: the epoch order is cut
        into chunks of BUCKET_BATCHES batches, each chunk sorted by length and cut into batches, and the
        batches are visited in a random order; so batches stay random in content and order, only
        their members are alike in length. Not shuffled (prediction): sorted by length."""
        if not bucket:
            return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if not shuffle:
            order = order[np.argsort(self.seq_nv[order], kind="stable")]
            return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        chunk = batch_size * BUCKET_BATCHES
        out = []
        for c in range(0, len(order), chunk):
            part = order[c : c + chunk]
            part = part[np.argsort(self.seq_nv[part], kind="stable")]
            out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        return [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]

    def collate(self, seqs: np.ndarray, device: torch.device | str = "cpu", sources: bool = False) -> SequenceBatch:
        """The batch of sequences `seqs` (indices into seq_row) with all their samples; with `sources`, also
        which event fills each numeric entry (SequenceBatch.numeric_source, for explanations)."""
        store = self.store
        seqs = np.asarray(seqs, dtype=np.int64)
        rows = self.seq_row[seqs]
        nv = self.seq_nv[seqs]
        B, T = len(seqs), int(nv.max()) if len(seqs) else 0
        vlo = np.asarray(store.visit_offsets)[rows]  # the patient's first visit
        wlo = vlo + self.seq_start[seqs]  # the first visit read
        vis = concat_ranges(wlo, wlo + nv)
        vis_seq = np.repeat(np.arange(B), nv)
        vis_pos = vis - np.repeat(vlo, nv)  # in the patient's history (time features)
        grid_pos = vis - np.repeat(wlo, nv)  # in the sequence read
        v_starts = np.asarray(store.visit_starts)
        ev_s = v_starts[vis]
        ev_e = np.minimum(np.asarray(store.visit_ends)[vis], np.repeat(self.seq_cutoff[seqs], nv))
        lengths = ev_e - ev_s
        pos = concat_ranges(ev_s, ev_e)
        codes = self._code_map[np.asarray(store.codes)[pos]]
        values = np.asarray(store.values)[pos]
        z = np.clip(np.nan_to_num((values - self._mean[codes]) / self._std[codes], nan=0.0), -Z_CLIP, Z_CLIP)
        w = np.repeat(1.0 / np.maximum(lengths, 1), lengths).astype(np.float32)
        bag_offsets = np.zeros(len(vis), dtype=np.int64)
        np.cumsum(lengths[:-1], out=bag_offsets[1:])

        times = np.asarray(store.times)
        t = times[ev_s].astype(np.float64)
        first_t = np.repeat(times[v_starts[vlo]].astype(np.float64), nv)
        prev_t = np.where(vis_pos > 0, times[v_starts[np.maximum(vis - 1, 0)]], t)
        slots = np.searchsorted(self._rows, rows)
        birth = np.repeat(self._birth[slots], nv)
        age = (t - birth) / YEAR
        time_feats = np.stack([
            np.log1p((t - prev_t) / 86400.0) / 5.0,
            np.log1p((t - first_t) / 86400.0) / 5.0,
            np.nan_to_num((age - 50.0) / 20.0, nan=0.0),
            np.isnan(age).astype(np.float64),
            np.log1p(lengths) / 3.0,
            (vis_pos == 0).astype(np.float64),
        ], axis=1).astype(np.float32)

        s_start, s_end = self._static_start[slots], self._static_end[slots]
        s_pos = concat_ranges(s_start, s_end)
        static_ids = self._code_map[np.asarray(store.codes)[s_pos]]
        static_offsets = np.zeros(B, dtype=np.int64)
        np.cumsum((s_end - s_start)[:-1], out=static_offsets[1:])

        columns = np.where(np.isnan(values), -1, self._numeric_col[codes])
        now, last = numeric_sources(columns, np.repeat(np.arange(len(vis)), lengths), grid_pos, len(self.numeric_ids))
        numeric = numeric_block(z, now, last)

        so = self.seq_sample_offsets
        sample_idx = self.sample_order[concat_ranges(so[seqs], so[seqs + 1])]
        local_seq = np.repeat(np.arange(B), so[seqs + 1] - so[seqs])
        gather = local_seq * T + self.sample_pos[sample_idx]
        visit_mask = np.zeros((B, T), dtype=bool)
        visit_mask[vis_seq, grid_pos] = True
        prior = (prior_summary(store, self._code_map, vlo, wlo, self.encoder.n_codes) if self.context is not None
                 else None)

        def tt(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return SequenceBatch(
            code_ids=tt(codes), code_weights=tt(w), value_weights=tt((z * w).astype(np.float32)),
            bag_offsets=tt(bag_offsets), visit_index=tt(vis_seq * T + grid_pos), time_feats=tt(time_feats),
            static_ids=tt(static_ids), static_offsets=tt(static_offsets), visit_mask=tt(visit_mask),
            numeric=tt(numeric), gather=tt(gather), sample_index=tt(sample_idx),
            y=tt(self.y_bits[sample_idx].astype(np.float32)), y_mask=tt(self.mask_bits[sample_idx]),
            numeric_source=tt(np.concatenate([now, now, last, last], axis=1)) if sources else None,
            prior_ids=None if prior is None else tt(prior.ids),
            prior_offsets=None if prior is None else tt(prior.offsets),
            prior_weights=None if prior is None else tt(prior.weights),
            prior_features=None if prior is None else tt(prior.features),
        )
