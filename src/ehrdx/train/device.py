"""Where training runs: device choice, mixed precision, and host-to-device batch transfer.

Batches are collated on the CPU (numpy); on a GPU they are copied from pinned memory with
non-blocking copies, and a background thread collates the next batches while the GPU works on this
one. On the CPU nothing is copied and nothing runs in the background. Sequence sets on a GPU, in batches of
MIN_DEVICE_BATCH patients or more, instead build their batches there (`collate_on_device`,
data/device_collate.py; the store goes over once), in a background thread on a side stream (`side_stream`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from ehrdx.data.batch import Batch, PackedBatch
from ehrdx.errors import ModelError

T = TypeVar("T")

PRECISIONS = ("auto", "fp32", "bf16")
# Where a sequence set's batches are built when training or predicting on a GPU (collate_on_device). Measured
# on an H200 (BENCHMARKS.md, issue 15): building them there by tensor indexing costs a fixed host time per
# batch (about a hundred small kernels), so it wins with large batches (GRU at 1,024 patients: 1.00M rows/s
# against 0.73M with numpy; predicting at 2,048: about 2M against 0.8-1.1M) and loses with small ones (GRU
# at 256: 0.27M against 0.32-0.38M).
DEVICE_COLLATE: bool | None = None  # None: on the device from MIN_DEVICE_BATCH patients a batch; True/False: always/never
MIN_DEVICE_BATCH = 1024
# Host batches cross to a GPU packed in one pinned buffer (Batch.pack), one copy each; False: a copy per field
PACK_BATCHES = True
DEVICE_COLLATE_THREAD = True  # batches built on a GPU: in a background thread on a side stream (side_stream;
# 1.14-1.34x the rows/s of building them in the training thread, in all four of the H200's configurations)


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "cpu").strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ModelError(f"unknown device '{spec}': use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device '{spec}' was asked for but this torch build sees no CUDA GPU "
                             f"(torch {torch.__version__}); use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelError(f"device '{spec}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ModelError(f"device '{spec}' is not supported: use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is float32 on every device. Measured on an H200 (BENCHMARKS.md), bf16 autocast made these
    models slower, not faster: at hidden 128 to 512 they are bound by kernel launches and batch
    collation, not by matrix arithmetic, and autocast adds casts. bf16 stays available for larger
    models (`--precision bf16`)."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision '{precision}': choose from {', '.join(PRECISIONS)}")
    del device  # the same answer on every device, for now
    return "fp32" if precision == "auto" else precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass (weights, optimiser state and the loss stay float32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pin(batch: Batch) -> Batch:
    """Pinned host memory for a host batch; a batch built on the device already is left as it is."""
    return batch.pin_memory() if batch.y.device.type == "cpu" else batch


def to_device(batch: Batch | PackedBatch, device: torch.device) -> Batch | PackedBatch:
    """Copy a collated CPU batch to `device` (non-blocking: from pinned memory it overlaps with work)."""
    if device.type == "cpu":
        return batch
    return batch.to(device, non_blocking=True)


def prefetch(batches: Iterable[T], depth: int = 3) -> Iterator[T]:
    """Produce `batches` in a background thread, up to `depth` ahead, in the same order.

    numpy collation releases the GIL for most of its work, so this overlaps the next batches'
    collation with the device's work on the current one. Errors in the producer are raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            q.put(e)

    thread = threading.Thread(target=produce, name="ehrdx-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def collate_on_device(dataset, device: torch.device, batch_size: int) -> bool:
    """Have `dataset` build its batches on `device` with tensor indexing when the device is a GPU and the
    set can (sequence sets, data/device_collate.py) and `batch_size` (patients a batch) is at least
    MIN_DEVICE_BATCH (DEVICE_COLLATE True/False forces it, for benchmarks);
    whether its batches now come ready on the device (device_batches' `ready`)."""
    if device.type != "cuda" or not hasattr(dataset, "collate_on"):
        return False
    on = batch_size >= MIN_DEVICE_BATCH if DEVICE_COLLATE is None else DEVICE_COLLATE
    return bool(dataset.collate_on(device if on else None))


_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def side_stream(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """Batches built on the GPU (collate_on_device) in a background thread on a stream of their own, so
    the host's work of building the next batch overlaps with launching the current step. Each batch is
    handed over with an event the consumer's stream waits on, and its tensors are marked as used by that
    stream (record_stream) so that their memory is not reused before the step is done. One side stream per
    device, kept (the allocator caches memory per stream: a new stream per epoch would strand each one's)."""
    stream = _SIDE_STREAMS.get(device) or _SIDE_STREAMS.setdefault(device, torch.cuda.Stream(device))

    def produce() -> Iterator[tuple[Batch, torch.cuda.Event]]:
        with torch.cuda.stream(stream):
            for batch in batches:
                event = torch.cuda.Event()
                event.record(stream)
                yield batch, event

    source = prefetch(produce())
    try:
        for batch, event in source:
            current = torch.cuda.current_stream(device)
            current.wait_event(event)
            for field in dataclasses.fields(batch):
                value = getattr(batch, field.name)
                if isinstance(value, torch.Tensor) and value.device.type == "cuda":
                    value.record_stream(current)
            yield batch
    finally:  # stopped early too: the side stream's queued work is ordered before anything that follows
        source.close()
        torch.cuda.current_stream(device).wait_stream(stream)


def device_batches(batches: Iterable[Batch], device: torch.device, background: bool | None = None,
                   ready: bool = False) -> Iterator[Batch]:
    """Batches on `device`; collated in a background thread when the device is a GPU (or if asked).
    `ready`: they are built on the device already (collate_on_device) and pass through as they come: a
    thread would only wait on the device's queue, and there is nothing to pin or copy. On a GPU each batch
    crosses packed in one pinned buffer (PACK_BATCHES): one copy for the training thread to launch, not
    one per field."""
    if ready:
        if device.type == "cuda" and DEVICE_COLLATE_THREAD:
            yield from side_stream(batches, device)
        else:
            yield from batches
        return
    gpu = device.type == "cuda"
    background = gpu if background is None else background
    if gpu:  # packed and pinned in the producer too, so the main thread only launches the copy
        batches = (b.pack(pin=True) if PACK_BATCHES and b.y.device.type == "cpu" else pin(b) for b in batches)
    source = prefetch(batches) if background else iter(batches)
    for batch in source:
        batch = to_device(batch, device)
        yield batch.unpack() if isinstance(batch, PackedBatch) else batch
