"""Samples (features + label targets + label mask) and cheap, vectorised batching.

A sample is one (patient, prediction time). For a patient table there is one per patient.
The label mask marks which labels are known for a sample: unknown labels are excluded from the loss
and from every metric, never counted as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ehrdx.data.preprocess import EncodedFeatures


@dataclass
class SampleSet:
    features: EncodedFeatures
    y: np.ndarray  # [N, L] float32 multi-hot targets
    y_mask: np.ndarray  # [N, L] bool, True where the label is known

    def __len__(self) -> int:
        return len(self.features)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu"):
        return iterate_batches(self, batch_size, shuffle=shuffle, generator=generator, device=device)


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


def make_batch(samples: SampleSet, rows: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    f = samples.features
    ids, offs = gather_codes(f.code_ids, f.code_offsets, rows)
    return {
        "dense": torch.from_numpy(f.dense[rows]).to(device),
        "code_ids": torch.from_numpy(ids).to(device),
        "code_offsets": torch.from_numpy(offs).to(device),
        "y": torch.from_numpy(samples.y[rows]).to(device),
        "y_mask": torch.from_numpy(samples.y_mask[rows]).to(device),
        "sample_index": torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(device),
    }


def iterate_batches(
    samples: SampleSet,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
):
    n = len(samples)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield make_batch(samples, order[start : start + batch_size], device)


class ConcatSet:
    """Several sample sets trained on together (e.g. new data and a replay of old data): each epoch
    visits every batch of every set once, the sets' batches interleaved in a seeded random order."""

    def __init__(self, *sets) -> None:
        self.sets = sets
        self.y = np.concatenate([s.y for s in sets])
        self.y_mask = np.concatenate([s.y_mask for s in sets])

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu"):
        counts = [-(-getattr(s, "n_sequences", len(s)) // batch_size) for s in self.sets]
        order = np.repeat(np.arange(len(self.sets)), counts)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator).numpy()]
        iters = [s.batches(batch_size, shuffle=shuffle, generator=generator, device=device) for s in self.sets]
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.sets])])
        for k in order:
            batch = next(iters[k])
            batch["sample_index"] = batch["sample_index"] + int(offsets[k])
            yield batch
