"""Batches collated in worker processes: each step's numpy collate runs in one of `workers` forked
processes (torch's DataLoader), so on a GPU the collation of the next batches no longer competes with
the training loop for the interpreter (a background thread does: BENCHMARKS.md, issue 15).

The epoch's plan (which sequences make each step, data/sequences.py `plan`) is drawn in this process
from the seeded generator, and the batches come back in its order, so a run gives the batches the
single-process `batches` gives. Workers are forked: they share the store and sample arrays with this
process instead of receiving copies, and they never touch the GPU (only this process does).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ehrdx.data.batch import PackedBatch


class _Steps(Dataset):
    """A set read by step: item `seqs` (an array of sequence indices) is that step's batches (its parts)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, seqs: np.ndarray) -> list[PackedBatch]:
        return [b.pack() for b in self.dataset.step_batches(seqs, "cpu")]


def _as_is(parts: list[PackedBatch]) -> list[PackedBatch]:
    return parts


def _worker_init(_worker_id: int) -> None:
    # Batches cross as shared-memory files opened by name: passing a file descriptor instead costs the
    # receiving process a socket connection per batch (about 0.9 ms of its time, measured on the CPU)
    torch.multiprocessing.set_sharing_strategy("file_system")


def worker_batches(dataset, plan: Sequence[np.ndarray], workers: int, pin: bool = False,
                   depth: int = 4) -> Iterator[PackedBatch]:
    """The batches of `plan`'s steps (`dataset.step_batches` of each, in order), collated in `workers`
    forked processes, up to `depth` steps ahead per worker, each packed in one buffer (Batch.pack: one
    shared-memory segment crosses, not one per field; `unpack` gives the batch); `pin`: in pinned host
    memory (pinned in a thread of this process, as a GPU's non-blocking copies need)."""
    if not len(plan):
        return
    loader = DataLoader(_Steps(dataset), sampler=list(plan), batch_size=None, collate_fn=_as_is,
                        num_workers=workers, pin_memory=pin, prefetch_factor=depth, worker_init_fn=_worker_init,
                        multiprocessing_context=multiprocessing.get_context("fork"),
                        generator=torch.Generator().manual_seed(0))  # unused (no random sampling); keeps
    # the DataLoader from drawing a base seed from the global generator, which would shift a seeded run
    for parts in loader:
        yield from parts
