"""Samples (features + label targets + label mask) and cheap, vectorised batching.

A sample is one (patient, prediction time). For a patient table there is one per patient.
The label mask marks which labels are known for a sample: unknown labels are excluded from the loss
and from every metric, never counted as negatives.

Every set keeps its targets and mask packed (`y_bits`, `mask_bits`: data/sparse.py SparseTables, or the
BitTables it was given), so memory grows with the listed entries, not samples x labels: a batch reads
its rows as dense blocks, a model that fits a label at a time reads a column (`t[:, j]`), and `y` /
`y_mask` give the whole dense tables on demand (small label sets and tests only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ehrdx.data.batch import TableBatch
from ehrdx.data.bits import BitTable, PackedTargets, label_tables
from ehrdx.data.preprocess import EncodedFeatures
from ehrdx.data.sparse import SparseTable

# What a model reads (ehrdx.models.registry), made by a source (ehrdx.sources) for its samples.
SEQUENCE = "sequence"  # each patient's visits up to each prediction time (data.sequences.SequenceSet)
ROWS = "rows"  # one row per sample: a dense block and a bag of codes (SampleSet)
MATRIX = "matrix"  # one sparse row per sample (MatrixSet)
HISTORY = "history"  # the samples themselves, with their store, for features fitted by the model (HistorySet)


def packed_targets(y, mask) -> tuple[BitTable, BitTable]:
    """Targets and training mask as tables read a block at a time: BitTables (and SparseTables) as they
    are, dense [N, L] arrays as SparseTables (targets: entries above 0.5; mask: nonzero entries)."""
    y = y if isinstance(y, BitTable) else SparseTable.from_dense(np.asarray(y) > 0.5)
    mask = mask if isinstance(mask, BitTable) else SparseTable.from_dense(np.asarray(mask, dtype=bool))
    if y.shape != mask.shape:
        raise ValueError(f"targets {y.shape} and mask {mask.shape} differ in shape")
    return y, mask


@dataclass
class SampleSet(PackedTargets):
    features: EncodedFeatures
    y_bits: BitTable  # [N, L] multi-hot targets, packed (given dense: kept as a SparseTable)
    mask_bits: BitTable  # [N, L] True where the label is known (and counts for training), packed

    def __post_init__(self) -> None:
        self.y_bits, self.mask_bits = packed_targets(self.y_bits, self.mask_bits)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def n_units(self) -> int:
        """What a batch counts: rows here (sequence sets count patients' sequences)."""
        return len(self)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", shard=None, bucket: bool | None = None):
        del bucket  # rows of a table have no length
        return iterate_batches(self, batch_size, shuffle=shuffle, generator=generator, device=device, shard=shard)


@dataclass
class MatrixSet(PackedTargets):
    """One sparse feature row per sample, for the models that fit themselves (logistic, gradient boosting):
    they read the targets a label (column) at a time."""

    X: object  # [N, F] scipy.sparse.csr_matrix
    y_bits: BitTable  # [N, L] multi-hot targets, packed (given dense: kept as a SparseTable)
    mask_bits: BitTable  # [N, L] True where the label is known (and counts for training), packed

    def __post_init__(self) -> None:
        self.y_bits, self.mask_bits = packed_targets(self.y_bits, self.mask_bits)

    def __len__(self) -> int:
        return self.X.shape[0]


def gather_codes(code_ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat code ids and bag offsets for the given rows, without a Python loop over rows."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    batch_offsets = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=batch_offsets[1:])
    total = int(lengths.sum())
    # position k in the batch bag maps to starts[row] + (k - batch_offsets[row])
    positions = np.repeat(starts - batch_offsets, lengths) + np.arange(total, dtype=np.int64)
    return code_ids[positions], batch_offsets


def make_batch(samples: SampleSet, rows: np.ndarray, device: torch.device | str = "cpu") -> TableBatch:
    f = samples.features
    ids, offs = gather_codes(f.code_ids, f.code_offsets, rows)
    weights = None
    if f.code_counts is not None:  # each code once with its count: the mean over the events is count / total
        count, _ = gather_codes(f.code_counts, f.code_offsets, rows)
        owner = np.repeat(np.arange(len(rows)), np.diff(np.append(offs, len(ids))))
        weights = torch.from_numpy((count / np.bincount(owner, weights=count, minlength=len(rows))[owner])
                                   .astype(np.float32)).to(device)
    return TableBatch(
        dense=torch.from_numpy(f.dense[rows]).to(device),
        code_ids=torch.from_numpy(ids).to(device),
        code_offsets=torch.from_numpy(offs).to(device),
        code_weights=weights,
        y=torch.from_numpy(samples.y_bits[rows].astype(np.float32)).to(device),  # this batch's rows only
        y_mask=torch.from_numpy(samples.mask_bits[rows]).to(device),
        sample_index=torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(device),
    )


def iterate_batches(
    samples: SampleSet,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    shard=None,
):
    order = epoch_order(len(samples), shuffle, generator, shard)
    for start in range(0, len(order), batch_size):
        yield make_batch(samples, order[start : start + batch_size], device)


def epoch_order(n: int, shuffle: bool, generator: torch.Generator | None, shard=None) -> np.ndarray:
    """The order of an epoch's items (shuffled by the seeded generator, which every process of a
    distributed run holds in the same state), cut to this process's share when `shard` is given."""
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    return shard.take(order) if shard is not None else order


def n_batches(dataset, batch_size: int, shard=None) -> int:
    n = dataset.n_units
    if shard is not None and shard.world > 1:
        n = -(-n // shard.world)
    return -(-n // batch_size)


class ConcatSet(PackedTargets):
    """Several sample sets trained on together (e.g. new data and a replay of old data): each epoch
    visits every batch of every set once, the sets' batches interleaved in a seeded random order."""

    def __init__(self, *sets) -> None:
        self.sets = sets
        tables = [label_tables(s) for s in sets]
        self.y_bits = BitTable.concat([t if isinstance(t, BitTable) else BitTable.from_dense(t) for t, _ in tables])
        self.mask_bits = BitTable.concat([m if isinstance(m, BitTable) else BitTable.from_dense(m) for _, m in tables])

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    @property
    def n_units(self) -> int:
        return sum(s.n_units for s in self.sets)

    def collate_on(self, device: torch.device | str | None) -> bool:
        """Each set that can builds its batches on `device` (SequenceSet.collate_on); whether all do."""
        ready = [s.collate_on(device) if hasattr(s, "collate_on") else False for s in self.sets]  # every set
        return all(ready)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", shard=None, bucket: bool | None = None):
        counts = [n_batches(s, batch_size, shard) for s in self.sets]
        order = np.repeat(np.arange(len(self.sets)), counts)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator).numpy()]
        iters = [s.batches(batch_size, shuffle=shuffle, generator=generator, device=device, shard=shard, bucket=bucket)
                 for s in self.sets]
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.sets])])
        for k in order:
            while True:  # every part of the set's next step (data/batch.py Batch.part)
                batch = next(iters[k])
                yield replace(batch, sample_index=batch.sample_index + int(offsets[k]))
                if batch.part == batch.parts - 1:
                    break
