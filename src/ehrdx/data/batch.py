"""What a model reads: one batch of samples as named tensors.

`TableBatch` comes from a patient table (data/batches.py, one row per sample), `SequenceBatch` from an
event store (data/sequences.py, a sequence of visits per patient, with one or more samples each). Both
carry the samples' targets and where the samples sit in their sample set, and both move as a whole
(`to`, `pin_memory`), so the training loop and train/device.py need not know their fields.

Shapes: S samples, L labels; for a table B = S rows; for sequences B sequences padded to T visits,
V = the batch's real visits (V <= B * T), E = its events, K = dense numeric codes (MAX_NUMERIC at most),
P = distinct codes of the visits before the sequences' windows (a bounded context only).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Self

import torch

PACK_ALIGN = 16  # bytes: every field of a packed batch starts at a multiple of this (any dtype's view is valid)


@dataclass(kw_only=True)
class Batch:
    """Fields every batch has: the targets, and which samples of the sample set these are."""

    y: torch.Tensor  # [S, L] float32 multi-hot targets
    y_mask: torch.Tensor  # [S, L] bool, True where the label is known (unknown: out of loss and metrics)
    sample_index: torch.Tensor  # [S] int64, row of each output in the sample set (the model's output order)
    # A step whose samples would pass the row cap (data/sequences.py MAX_BATCH_CELLS) comes as several
    # batches, parts 0 .. parts - 1 of one optimiser step; the loop accumulates their gradients and
    # normalises by the whole step's counts, so the step computes what the one big batch would.
    part: int = 0
    parts: int = 1
    step_rows: int = 0  # samples of the whole step (0 when it is one part: len(self))
    step_known: int = 0  # known target entries of the whole step (0 when it is one part: y_mask.sum())

    def apply(self, fn) -> Self:
        """A copy with `fn` applied to every tensor (fields that are None and plain numbers stay as they are)."""
        return replace(self, **{f.name: fn(v) for f in fields(self) if isinstance(v := getattr(self, f.name),
                                                                                    torch.Tensor)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Self:
        return self.apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Self:
        return self.apply(lambda t: t.pin_memory())

    def pack(self, pin: bool = False) -> PackedBatch:
        """Every tensor of the batch in one byte buffer (each at an offset aligned to PACK_ALIGN bytes), so
        that it crosses to a GPU in one copy instead of one per field. `pin`: the buffer in pinned memory.
        `PackedBatch.unpack` gives the batch back."""
        tensors = {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)}
        layout, size = [], 0
        for name, t in tensors.items():
            n = t.numel() * t.element_size()
            layout.append((name, t.dtype, tuple(t.shape), size, n))
            size += -(-n // PACK_ALIGN) * PACK_ALIGN
        buf = torch.empty(size, dtype=torch.uint8, pin_memory=pin)
        for (name, dtype, _, off, n) in layout:
            buf[off : off + n].view(dtype).copy_(tensors[name].reshape(-1))
        return PackedBatch(buf, tuple(layout), replace(self, **dict.fromkeys(tensors)))

    def __len__(self) -> int:
        """Samples in the batch (rows of the model's output)."""
        return int(self.sample_index.shape[0])


@dataclass(kw_only=True)
class TableBatch(Batch):
    """Rows of a patient table: dense features and a bag of codes per row (S = B)."""

    dense: torch.Tensor  # [B, D] float32 encoded numeric and one-hot features
    code_ids: torch.Tensor  # [C] int64 all rows' code ids, row after row
    code_offsets: torch.Tensor  # [B] int64 where each row's codes start in code_ids
    # [C] float32 each code's share of its row's bag (a code once with its count / the row's events), or None:
    # every code once, the bag their plain mean
    code_weights: torch.Tensor | None = None


@dataclass(kw_only=True)
class SequenceBatch(Batch):
    """Sequences of visits (padded to the longest, T) and the samples read off them.

    A visit's events are one bag in `code_ids`; visits are flat (V of them, sequence after sequence) and
    `visit_index` places them in the padded [B, T] grid. `gather` picks each sample's state from that
    grid: the state after its last visit before its prediction time."""

    code_ids: torch.Tensor  # [E] int64 model code id of each event (0 = unknown code)
    bag_offsets: torch.Tensor  # [V] int64 where each visit's events start in code_ids
    code_weights: torch.Tensor  # [E] float32 1 / events in its visit (the code bag is a mean)
    value_weights: torch.Tensor  # [E] float32 standardised value (0 if none) x code weight
    time_feats: torch.Tensor  # [V, N_TIME_FEATURES] float32 time since previous/first visit, age, size, first
    numeric: torch.Tensor  # [V, 4K] float32 dense numeric block: value, measured, last value, has last value
    visit_mask: torch.Tensor  # [B, T] bool, True at real visits
    visit_index: torch.Tensor  # [V] int64 flat position (sequence * T + visit) of each visit in the grid
    static_ids: torch.Tensor  # [Z] int64 code ids of the sequences' static facts (before the first visit)
    static_offsets: torch.Tensor  # [B] int64 where each sequence's static facts start in static_ids
    gather: torch.Tensor  # [S] int64 flat grid position of each sample's state
    # [V, 4K] int64 event (index into code_ids) whose value fills each entry of `numeric`, -1 where none;
    # only when asked for (SequenceSet.collate(..., sources=True)), for `with_event_gates`
    numeric_source: torch.Tensor | None = None
    # With a bounded context (data/windows.py), what came before each sequence's window; None without one:
    prior_ids: torch.Tensor | None = None  # [P] int64 code ids of the earlier visits, each code once per sequence
    prior_offsets: torch.Tensor | None = None  # [B] int64 where each sequence's earlier codes start in prior_ids
    prior_weights: torch.Tensor | None = None  # [P] float32 log(1 + count), normalised to sum 1 per sequence
    prior_features: torch.Tensor | None = None  # [B, N_PRIOR_FEATURES] float32 earlier visits and events

    def with_event_gates(self, gate: torch.Tensor) -> SequenceBatch:
        """The batch as the model sees it with event i scaled by gate[i] ([E], differentiable): its weight
        in the code bag and in the value bag, and the numeric entries its value fills (at its visit, and
        carried forward to later visits). Gates of 1 give the batch back; gates of 0 visits without events.
        The summary of visits before a bounded context's window (prior_*) is not gated."""
        if self.numeric_source is None:
            raise ValueError("collate the batch with sources=True to gate its events")
        entry_gate = torch.cat([gate, gate.new_zeros(1)])[self.numeric_source]  # -1 (no event) -> 0
        return replace(self, code_weights=self.code_weights * gate, value_weights=self.value_weights * gate,
                       numeric=self.numeric * entry_gate)


@dataclass
class PackedBatch:
    """A batch's tensors in one byte buffer (Batch.pack): `layout` holds each field's name, dtype, shape,
    byte offset and size, `rest` the batch with its tensor fields set to None (its other fields as they are)."""

    buf: torch.Tensor  # [bytes] uint8
    layout: tuple
    rest: Batch

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        return replace(self, buf=self.buf.to(device, non_blocking=non_blocking))

    def unpack(self) -> Batch:
        """The batch, its tensors views of the buffer (wherever the buffer is: one copy moved them all)."""
        return replace(self.rest, **{name: self.buf[off : off + n].view(dtype).view(shape)
                                     for name, dtype, shape, off, n in self.layout})
