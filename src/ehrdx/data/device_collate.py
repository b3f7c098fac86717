"""Sequence batches gathered and collated on the device with tensor indexing (issue 15, "the GPU kept busy").

`SequenceSet.collate` builds a batch with numpy on the host and the training loop copies it to the GPU;
at batch 1,024 that host work, not the GPU, set the pace. `DeviceCollate` moves per-event and per-visit tables
made once from the event store (each event's model code, standardised value and numeric column; each visit's
bounds and time features) and the sample set's lookup tables (sequences, samples, targets and
masks: a SparseTable's index lists, other tables bit-packed; `DeviceTable`) to the device once, and builds the same `SequenceBatch` there: only the batch's
sequence indices cross from the host. It mirrors `SequenceSet.collate` step for step; integer and index
fields come out identical, float fields identical where they are copies or single float32 operations and
within float rounding where numpy and torch evaluate log1p or sum in another order (tests/test_device_collate.py).

It runs on any torch device, so the CPU tests check it against the numpy collate; the training loop uses it
on CUDA (train/device.py `collate_on`). It never waits for the device: every output size (visits, events,
static codes, samples, listed label entries of a batch) is summed on the host from per-sequence counts taken
once, and the batch's indices cross in pinned memory, so the host queues the next batch while the GPU still
computes the last one. (The bounded context's summary, `--context`, still reads its sizes back: torch.unique.)
"""

from __future__ import annotations

import hashlib
import warnings
import weakref

import numpy as np
import torch

from ehrdx.data.batch import SequenceBatch
from ehrdx.data.bits import BitTable
from ehrdx.data.patients import birth_times
from ehrdx.data.sparse import SparseTable
from ehrdx.data.store import concat_ranges

YEAR = 365.25 * 86400  # as data/sequences.py
Z_CLIP = 5.0


def ranges(starts: torch.Tensor, ends: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """store.concat_ranges on tensors: the concatenation of arange(s, e) over the pairs (s, e). `total`: the
    output's length, when the caller knows it (otherwise it is read back from the device, which waits)."""
    lengths = (ends - starts).clamp(min=0)
    total = int(lengths.sum()) if total is None else int(total)
    if total == 0:
        return torch.zeros(0, dtype=torch.int64, device=starts.device)
    first = torch.cumsum(lengths, 0) - lengths
    return torch.repeat_interleave(starts - first, lengths, output_size=total) + torch.arange(
        total, device=starts.device)


def exclusive_cumsum(lengths: torch.Tensor) -> torch.Tensor:
    """Where each of consecutive runs of `lengths` starts (0 first)."""
    return torch.cumsum(lengths, 0) - lengths


def unpack_rows(packed: torch.Tensor, rows: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Dense bool [len(rows), n_cols] from np.packbits rows (big-endian bits) kept on the device."""
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    bits = (packed[rows].unsqueeze(-1) >> shifts) & 1
    return bits.reshape(len(rows), packed.shape[1] * 8)[:, :n_cols].bool()


class DeviceTable:
    """An [S, L] yes/no table on the device, read a batch of rows at a time as dense bool [rows, L]. A
    SparseTable moves its own arrays (row pointers, listed columns, row flags: memory grows with its listed
    entries, not with S x L) and each batch's block is set from them with tensor indexing; a BitTable moves
    its packed bits, and a dense array is packed first."""

    def __init__(self, table, device: torch.device) -> None:
        def t(a) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.n_cols = int(np.shape(table)[1])
        self.sparse = isinstance(table, SparseTable)
        self.host_indptr = table.indptr if self.sparse else None  # per-row entry counts, summed on the host
        if self.sparse:
            # the listed columns as the table keeps them (2 bytes each below 32,768 labels), widened per batch
            self.indptr, self.cols, self.flip = t(table.indptr), t(table.cols), t(table.flip)
        else:
            self.packed = t(table.packed if isinstance(table, BitTable) else
                            np.packbits(np.asarray(table).astype(bool), axis=1))

    def entries(self, rows: np.ndarray) -> int | None:
        """How many entries the given rows (host indices) list; None for a packed table."""
        return None if self.host_indptr is None else int((self.host_indptr[rows + 1] - self.host_indptr[rows]).sum())

    def rows(self, rows: torch.Tensor, entries: int | None = None) -> torch.Tensor:
        """Dense bool [len(rows), L] of the given rows (indices on the device); `entries`: how many they list
        (`entries()`), so that nothing is read back from the device."""
        if not self.sparse:
            return unpack_rows(self.packed, rows, self.n_cols)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        at = ranges(starts, ends, entries)
        which = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), ends - starts,
                                        output_size=len(at))
        out = torch.zeros(len(rows) * self.n_cols, dtype=torch.bool, device=rows.device)
        # index_fill_, not `out[i, j] = True`, which copies the scalar from the host: a sync
        out.index_fill_(0, which * self.n_cols + self.cols[at].long(), True)
        return out.view(len(rows), self.n_cols) ^ self.flip[rows][:, None]  # a flipped row lists its clear entries


STORE_ARRAYS = ("visit_offsets", "visit_starts", "visit_ends")  # events and visits are read from tables made from them
_ON_DEVICE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # store -> {device: its arrays there}


def store_tensors(store, device: torch.device) -> dict[str, torch.Tensor]:
    """The store's arrays on `device`, copied once per store and device (training and validation sets of
    one store share them) and freed with the store."""
    per_device = _ON_DEVICE.setdefault(store, {})
    if device not in per_device:
        with warnings.catch_warnings():  # a store's arrays may be read-only maps; they are only read here
            warnings.simplefilter("ignore", UserWarning)
            per_device[device] = {name: torch.from_numpy(np.ascontiguousarray(np.asarray(getattr(store, name))))
                                  .to(device) for name in STORE_ARRAYS}
    return per_device[device]


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def visit_features(store, chunk: int = 1 << 20) -> np.ndarray:
    """Per visit of the store, float32 [visits, N_TIME_FEATURES]: the time features of SequenceSet.collate
    that do not depend on the sample (time since the previous and the first visit, age, age unknown, first
    visit), computed as it computes them; the column of events read (4) is 0, set per batch."""
    offsets, starts = np.asarray(store.visit_offsets), np.asarray(store.visit_starts)
    times = np.asarray(store.times)
    n = len(starts)
    birth = birth_times(store, np.arange(len(store)))
    out = np.zeros((n, 6), dtype=np.float32)
    for lo in range(0, n, chunk):
        vis = np.arange(lo, min(n, lo + chunk))
        owner = np.searchsorted(offsets, vis, side="right") - 1
        vis_pos = vis - offsets[owner]
        t = times[starts[vis]].astype(np.float64)
        first_t = times[starts[offsets[owner]]].astype(np.float64)
        prev_t = np.where(vis_pos > 0, times[starts[np.maximum(vis - 1, 0)]], t)
        age = (t - birth[owner]) / YEAR
        out[lo : lo + len(vis)] = np.stack([
            np.log1p((t - prev_t) / 86400.0) / 5.0,
            np.log1p((t - first_t) / 86400.0) / 5.0,
            np.nan_to_num((age - 50.0) / 20.0, nan=0.0),
            np.isnan(age).astype(np.float64),
            np.zeros(len(vis)),
            (vis_pos == 0).astype(np.float64),
        ], axis=1).astype(np.float32)
    return out


def event_tables(store, code_map: np.ndarray, mean: np.ndarray, std: np.ndarray, numeric_col: np.ndarray,
                 chunk: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event of the store, as SequenceSet.collate computes them: the model's code id (int32), the
    standardised clipped value (float32, 0 where none) and the dense numeric column it fills (int16, -1:
    none: no value, or not a dense numeric code)."""
    if len(numeric_col) and int(numeric_col.max()) >= np.iinfo(np.int16).max:
        raise ValueError("dense numeric columns must fit int16")
    codes_all, values_all = np.asarray(store.codes), np.asarray(store.values)
    n = len(codes_all)
    ids, zs, cols = np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, np.int16)
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        codes, values = code_map[codes_all[sl]], values_all[sl]
        ids[sl] = codes
        zs[sl] = np.clip(np.nan_to_num((values - mean[codes]) / std[codes], nan=0.0), -Z_CLIP, Z_CLIP)
        cols[sl] = np.where(np.isnan(values), -1, numeric_col[codes])
    return ids, zs, cols


def exact_device(device: torch.device | str) -> torch.device:
    """`device` with its index ('cuda' is the current GPU, as a model's parameters report it: cuda:N)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class DeviceCollate:
    """A sequence set's store and lookup tables on `device`, and its collate done there."""

    def __init__(self, ds, device: torch.device | str) -> None:
        self.device = exact_device(device)
        self.ds = ds
        store = ds.store

        def t(a) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.asarray(a))).to(self.device)

        arrays = store_tensors(store, self.device)
        self.visit_offsets, self.visit_starts, self.visit_ends = (arrays["visit_offsets"], arrays["visit_starts"],
                                                                  arrays["visit_ends"])
        # What collate reads per event and per visit, computed once per store, device and encoder (a batch then
        # gathers rows of them: fewer kernels a batch than computing them there, issue 15)
        per_device = _ON_DEVICE[store]
        key = (self.device, "events", _digest(ds._code_map, ds._mean, ds._std, ds._numeric_col))
        if key not in per_device:  # one encoder's tables per store and device: another encoder's are let go
            for old in [k for k in per_device if isinstance(k, tuple) and k[:2] == key[:2]]:
                del per_device[old]
            per_device[key] = tuple(t(a) for a in event_tables(store, ds._code_map, ds._mean, ds._std,
                                                              ds._numeric_col))
        self.ev_code, self.ev_z, self.ev_col = per_device[key]
        if (self.device, "visits") not in per_device:
            per_device[(self.device, "visits")] = t(visit_features(store))
        self.visit_feats = per_device[(self.device, "visits")]
        self.seq_row, self.seq_nv, self.seq_start, self.seq_cutoff = (t(ds.seq_row), t(ds.seq_nv), t(ds.seq_start),
                                                                      t(ds.seq_cutoff))
        self.seq_sample_offsets, self.sample_order, self.sample_pos = (t(ds.seq_sample_offsets), t(ds.sample_order),
                                                                       t(ds.sample_pos))
        self.rows = t(ds._rows)
        self.static_start, self.static_end = t(ds._static_start), t(ds._static_end)
        self.y_table, self.mask_table = DeviceTable(ds.y_bits, self.device), DeviceTable(ds.mask_bits, self.device)
        self.n_labels = ds.y_bits.shape[1]
        self.n_numeric = len(ds.numeric_ids)
        self._host_counts(ds)

    def _host_counts(self, ds, chunk: int = 1 << 16) -> None:
        """Per sequence, on the host: visits read, events read (after the cutoff), static codes, samples; so
        a batch's output sizes are sums of these, and the collate never reads a size back from the device."""
        store = ds.store
        offsets, starts, ends = (np.asarray(store.visit_offsets), np.asarray(store.visit_starts),
                                 np.asarray(store.visit_ends))
        n = len(ds.seq_row)
        self.h_nv = np.asarray(ds.seq_nv, dtype=np.int64)
        self.h_events = np.zeros(n, dtype=np.int64)
        for lo in range(0, n, chunk):  # a chunk of sequences at a time: their visits can be many
            sl = slice(lo, min(n, lo + chunk))
            nv = self.h_nv[sl]
            wlo = offsets[ds.seq_row[sl]] + ds.seq_start[sl]
            vis = concat_ranges(wlo, wlo + nv)
            lengths = np.minimum(ends[vis], np.repeat(ds.seq_cutoff[sl], nv)) - starts[vis]
            total = np.concatenate([[0], np.cumsum(lengths)])
            bounds = np.concatenate([[0], np.cumsum(nv)])
            self.h_events[sl] = total[bounds[1:]] - total[bounds[:-1]]
        slots = np.searchsorted(ds._rows, ds.seq_row)
        self.h_static = (np.asarray(ds._static_end)[slots] - np.asarray(ds._static_start)[slots]).astype(np.int64)
        self.h_sample_offsets = np.asarray(ds.seq_sample_offsets, dtype=np.int64)
        self.h_sample_order = np.asarray(ds.sample_order)

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        """A host index array on the device; on a GPU through pinned memory, so the host does not wait."""
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def collate(self, seqs, device=None, sources: bool = False) -> SequenceBatch:
        """The batch of sequences `seqs`, as SequenceSet.collate gives it, built on this device (`device`,
        accepted for the same signature, is ignored: the batch is where the tables are)."""
        del device
        dev = self.device
        host = np.ascontiguousarray(seqs, dtype=np.int64)
        so_h = self.h_sample_offsets
        host_samples = self.h_sample_order[concat_ranges(so_h[host], so_h[host + 1])]
        B = len(host)
        T = int(self.h_nv[host].max()) if B else 0
        n_vis, n_ev = int(self.h_nv[host].sum()), int(self.h_events[host].sum())
        seqs = self._to_device(host)
        rows = self.seq_row[seqs]
        nv = self.seq_nv[seqs]
        vlo = self.visit_offsets[rows]
        wlo = vlo + self.seq_start[seqs]
        vis = ranges(wlo, wlo + nv, n_vis)
        vis_seq = torch.repeat_interleave(torch.arange(B, device=dev), nv, output_size=n_vis)
        grid_pos = vis - torch.repeat_interleave(wlo, nv, output_size=n_vis)
        ev_s = self.visit_starts[vis]
        ev_e = torch.minimum(self.visit_ends[vis], torch.repeat_interleave(self.seq_cutoff[seqs], nv, output_size=n_vis))
        lengths = ev_e - ev_s
        pos = ranges(ev_s, ev_e, n_ev)
        codes = self.ev_code[pos].long()
        z = self.ev_z[pos]
        w = torch.repeat_interleave((1.0 / lengths.clamp(min=1).double()).float(), lengths, output_size=n_ev)
        bag_offsets = exclusive_cumsum(lengths)

        time_feats = self.visit_feats[vis]  # a copy: only the events-read column depends on the sample's cutoff
        time_feats[:, 4] = (torch.log1p(lengths.double()) / 3.0).float()

        slots = torch.searchsorted(self.rows, rows)
        s_start, s_end = self.static_start[slots], self.static_end[slots]
        static_ids = self.ev_code[ranges(s_start, s_end, int(self.h_static[host].sum()))].long()
        static_offsets = exclusive_cumsum(s_end - s_start)

        columns = self.ev_col[pos].long()
        owner = torch.repeat_interleave(torch.arange(n_vis, device=dev), lengths, output_size=n_ev)
        now, last = self._numeric_sources(columns, owner, grid_pos)
        zs = torch.cat([z, z.new_zeros(1)])  # index -1 (no event) reads 0
        numeric = torch.cat([zs[now], (now >= 0).float(), zs[last], (last >= 0).float()], dim=1)

        so = self.seq_sample_offsets
        sample_idx = self.sample_order[ranges(so[seqs], so[seqs + 1], len(host_samples))]
        per_seq = so[seqs + 1] - so[seqs]
        local_seq = torch.repeat_interleave(torch.arange(B, device=dev), per_seq, output_size=len(sample_idx))
        gather = local_seq * T + self.sample_pos[sample_idx]
        visit_mask = torch.zeros(B * T, dtype=torch.bool, device=dev).index_fill_(0, vis_seq * T + grid_pos, True)
        prior = self._prior(vlo, wlo) if self.ds.context is not None else None
        return SequenceBatch(
            code_ids=codes, code_weights=w, value_weights=z * w, bag_offsets=bag_offsets,
            visit_index=vis_seq * T + grid_pos, time_feats=time_feats, static_ids=static_ids,
            static_offsets=static_offsets, visit_mask=visit_mask.view(B, T), numeric=numeric, gather=gather,
            sample_index=sample_idx, y=self.y_table.rows(sample_idx, self.y_table.entries(host_samples)).float(),
            y_mask=self.mask_table.rows(sample_idx, self.mask_table.entries(host_samples)),
            numeric_source=torch.cat([now, now, last, last], dim=1) if sources else None,
            prior_ids=None if prior is None else prior[0], prior_offsets=None if prior is None else prior[1],
            prior_weights=None if prior is None else prior[2], prior_features=None if prior is None else prior[3],
        )

    def _numeric_sources(self, columns: torch.Tensor, owner: torch.Tensor, vis_pos: torch.Tensor):
        """sequences.numeric_sources on tensors: the event filling each entry now (the last of a visit's
        values: the largest event index, by a max-scatter, deterministic) and carried forward (cummax)."""
        V, K, dev = len(vis_pos), self.n_numeric, self.device
        now = torch.full((V * K + 1,), -1, dtype=torch.int64, device=dev)  # the last slot takes non-numeric events
        slot = torch.where(columns >= 0, owner * K + columns, V * K)
        now.scatter_reduce_(0, slot, torch.arange(len(columns), device=dev), reduce="amax")
        now = now[: V * K].view(V, K)
        if V == 0 or K == 0:
            return now, now.clone()
        idx = torch.where(now >= 0, torch.arange(V, device=dev)[:, None], -1)
        idx = torch.cummax(idx, dim=0).values
        prev_idx = torch.cat([torch.full((1, K), -1, dtype=torch.int64, device=dev), idx[:-1]])
        seq_first = torch.arange(V, device=dev) - vis_pos
        last = torch.where(prev_idx >= seq_first[:, None], torch.gather(now, 0, prev_idx.clamp(min=0)), -1)
        return now, last

    def _prior(self, first_visit: torch.Tensor, window_visit: torch.Tensor):
        """windows.prior_summary on tensors: ids, offsets, weights and features of the visits before each
        sequence's window."""
        dev, n_codes = self.device, self.ds.encoder.n_codes
        B = len(first_visit)
        n_visits = window_visit - first_visit
        has = n_visits > 0
        nvs = len(self.visit_starts)
        if nvs:
            lo = torch.where(has, self.visit_starts[first_visit.clamp(max=nvs - 1)], 0)
            hi = torch.where(has, self.visit_ends[(window_visit - 1).clamp(min=0)], 0)
        else:
            lo = hi = torch.zeros(B, dtype=torch.int64, device=dev)
        n_events = (hi - lo).clamp(min=0)
        codes = self.ev_code[ranges(lo, hi)].long()
        owner = torch.repeat_interleave(torch.arange(B, device=dev), n_events, output_size=len(codes))
        keys, counts = torch.unique(owner * n_codes + codes, sorted=True, return_counts=True)
        seq, ids = keys // n_codes, keys % n_codes
        w = torch.log1p(counts.double())
        total = torch.zeros(B, dtype=torch.float64, device=dev).index_add_(0, seq, w)
        offsets = exclusive_cumsum(torch.bincount(seq, minlength=B))
        features = torch.stack([torch.log1p(n_visits.double()) / 5.0, torch.log1p(n_events.double()) / 10.0,
                                has.double()], dim=1).float()
        return ids, offsets, (w / total[seq]).float(), features
