"""Where training runs: device choice, mixed precision, and host-to-device batch transfer.

Batches are collated on the CPU (numpy); on a GPU they are copied from pinned memory with
non-blocking copies, and a background thread collates the next batches while the GPU works on this
one. On the CPU nothing is copied and nothing runs in the background. Sequence sets on a GPU instead
build their batches there (`collate_on_device`, data/device_collate.py): the store goes over once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from ehrdx.data.batch import Batch
from ehrdx.errors import ModelError

T = TypeVar("T")

PRECISIONS = ("auto", "fp32", "bf16")
DEVICE_COLLATE = True  # sequence sets build their batches on a GPU (collate_on_device); False: numpy + copy


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


def to_device(batch: Batch, device: torch.device) -> Batch:
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


def collate_on_device(dataset, device: torch.device) -> bool:
    """Have `dataset` build its batches on `device` with tensor indexing when the device is a GPU and the
    set can (sequence sets, data/device_collate.py; DEVICE_COLLATE switches it off, for benchmarks);
    whether its batches now come ready on the device (device_batches' `ready`)."""
    if device.type != "cuda" or not hasattr(dataset, "collate_on"):
        return False
    return bool(dataset.collate_on(device if DEVICE_COLLATE else None))


def device_batches(batches: Iterable[Batch], device: torch.device, background: bool | None = None,
                   ready: bool = False) -> Iterator[Batch]:
    """Batches on `device`; collated in a background thread when the device is a GPU (or if asked).
    `ready`: they are built on the device already (collate_on_device) and pass through as they come: a
    thread would only wait on the device's queue, and there is nothing to pin or copy."""
    if ready:
        yield from batches
        return
    gpu = device.type == "cuda"
    background = gpu if background is None else background
    if gpu:  # pinned in the producer too, so the main thread only launches copies
        batches = (pin(b) for b in batches)
    source = prefetch(batches) if background else iter(batches)
    for batch in source:
        yield to_device(batch, device)
