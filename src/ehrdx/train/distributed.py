"""Distributed data parallel training with torchrun, the standard PyTorch way.

    torchrun --nproc_per_node=2 -m ehrdx train --meds DIR ...                 (one machine, 2 processes)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_id=JOB --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29400 -m ehrdx train ...                     (several machines)

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `init_distributed` joins the process group (NCCL when
training on CUDA GPUs, gloo on CPUs) and gives each process its GPU (cuda:LOCAL_RANK). Every process
runs the same pipeline on the same data; each epoch's shuffled order is the same on every process
(the same seeded generator), each process trains on its own share of it, and the gradients are
averaged after every step (DistributedDataParallel), so the weights stay identical everywhere. The
batch size is the global one: each of N processes takes batch_size / N sequences per step, so a run
on N processes takes the same number of steps of the same size as a run on one. Only rank 0 writes
files and logs.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ehrdx.errors import EhrdxError
from ehrdx.train.device import resolve_device


@dataclass(frozen=True)
class Shard:
    """Which share of every epoch this process trains on."""

    rank: int = 0
    world: int = 1
    pad: bool = True  # training pads to equal step counts; evaluation takes each item exactly once

    def take(self, order: np.ndarray) -> np.ndarray:
        """This process's share of an epoch's order, as DistributedSampler does it: padded by wrapping
        around to a multiple of `world` so every process takes the same number of steps (a few items
        are then seen twice an epoch; none is left out), then every world-th item from `rank`."""
        if self.world == 1:
            return order
        n = len(order)
        total = -(-n // self.world) * self.world
        if self.pad and total > n and n:
            order = np.concatenate([order, np.resize(order, total - n)])
        return order[self.rank :: self.world]

    def batch_size(self, global_batch: int) -> int:
        return max(1, -(-global_batch // self.world))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def is_distributed() -> bool:
    """In a process group (started by torchrun, even with a single process)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def current_shard(pad: bool = True) -> Shard:
    return Shard(dist.get_rank(), dist.get_world_size(), pad) if is_distributed() else Shard()


def init_distributed(device: str = "auto") -> str:
    """Join the process group when started by torchrun; return the device this process trains on.
    Without torchrun it only resolves the device."""
    if not launched_by_torchrun():
        return str(resolve_device(device))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        resolved = torch.device("cuda", local)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo",
                                device_id=resolved if resolved.type == "cuda" else None)
        atexit.register(shutdown)
    return str(resolved)


def all_sum(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum tensors over all processes (unchanged in a single process)."""
    if not is_distributed():
        return values
    out = []
    for v in values:
        v = v.clone()
        dist.all_reduce(v, op=dist.ReduceOp.SUM)
        out.append(v)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def all_or_none(what: str) -> Iterator[None]:
    """A step every process of the run takes (its own share of it, or rank 0's for all), ending at a barrier that
    also says who failed: a process whose step raises tells the others before raising its error, and they raise
    one naming it instead of waiting for it at the next barrier (until the process group's timeout, 30 minutes).
    A process killed outright still leaves the others to that timeout. Without torchrun, just the step."""
    if not is_distributed():
        yield
        return
    try:
        yield
    except Exception:
        failed_ranks(failed=True)
        raise
    failed = failed_ranks(failed=False)
    if failed:
        which = ", ".join(str(r) for r in failed)
        raise EhrdxError(f"the process of rank {which} failed {what} (its own error says why): this process (rank "
                         f"{rank()}) stops too")


def failed_ranks(failed: bool) -> list[int]:
    """The ranks that say they failed (every process calls this: it is a barrier)."""
    cuda = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    flags = torch.zeros(dist.get_world_size(), dtype=torch.int32,
                        device=torch.device("cuda", torch.cuda.current_device()) if cuda else "cpu")
    flags[dist.get_rank()] = int(failed)
    dist.all_reduce(flags, op=dist.ReduceOp.SUM)
    return [r for r, f in enumerate(flags.tolist()) if f and r != dist.get_rank()]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
