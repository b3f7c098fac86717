"""The training loop: one readable function, masked loss, AdamW with an optional warm-up and cosine decay
over the step budget, early stopping on validation loss or on a validation ranking metric."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ehrdx.data.batch import Batch
from ehrdx.data.batches import SampleSet, n_batches
from ehrdx.data.bits import column_sums, label_counts, label_tables
from ehrdx.ranking import label_ranking
from ehrdx.train.checkpoint import Checkpointer, data_fingerprint
from ehrdx.train.device import autocast, collate_on_device, device_batches, resolve_device, resolve_precision
from ehrdx.train.distributed import all_sum, current_shard, is_distributed, is_main


@dataclass
class TrainConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 4  # epochs without validation improvement before stopping
    monitor: str = "loss"  # what early stopping follows on validation: loss | auroc | auprc (masked macro)
    schedule: str = "constant"  # learning rate: constant | cosine (decay to 0 over max_epochs' steps)
    warmup: float = 0.0  # share of the step budget over which the learning rate rises linearly from 0
    min_steps: int = 0  # optimiser steps before early stopping may stop, and the least step budget: a small
    # set (few steps an epoch) trains for more than max_epochs epochs until it has taken this many
    pos_weight: bool = False  # up-weight positives of rare labels (capped), see label_pos_weight
    seed: int = 0
    device: str = "cpu"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp32; see train/device.py) | fp32 | bf16 autocast

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, not {self.monitor!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a share of the step budget in [0, 1), not {self.warmup}")

    def to_dict(self) -> dict:
        return asdict(self)


MONITORS = ("loss", "auroc", "auprc")
SCHEDULES = ("constant", "cosine")


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """The learning rate of optimiser step `step` (0-based) of a budget of `total` steps: a linear
    rise over the first `warmup` share, then constant or a cosine decay that reaches 0 at `total`."""
    warm = round(config.warmup * total)
    if step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule == "constant":
        return config.lr
    done = min(step - warm, max(total - warm, 1)) / max(total - warm, 1)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * done))


def epoch_budget(config: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs to train at most: max_epochs, or more where min_steps needs more epochs of this size."""
    return max(config.max_epochs, -(-config.min_steps // max(steps_per_epoch, 1)))


RUN_ONLY = ("seconds", "samples_per_second", "resumed_after_epoch")


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # what early stopping minimised, per epoch
    best_epoch: int = 0
    epochs_run: int = 0
    steps: int = 0  # optimiser steps taken
    seconds: float = 0.0
    samples_per_second: float = 0.0
    processes: int = 1  # data parallel processes that trained together
    device: str = "cpu"
    precision: str = "fp32"
    resumed_after_epoch: int | None = None  # epochs done before a resume from a checkpoint

    def to_dict(self) -> dict:
        return asdict(self)

    def to_artifact(self) -> dict:
        """What a saved model records: the same for the same data and options, so the artifact is
        byte-for-byte reproducible. Wall-clock figures and resume details go to metrics.json."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_ONLY}


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of element-wise BCE over known labels, and how many elements were known.

    Masked elements are removed before reduction (not multiplied into the outputs), so their targets
    and logits cannot influence the value or the gradient.
    """
    loss = nn.functional.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=pos_weight, reduction="none"
    )
    loss = torch.where(mask, loss, 0.0)  # a scalar: no second [N, L] tensor of zeros
    return loss.sum(), mask.sum()


def label_pos_weight(y, mask, cap: float = 20.0) -> torch.Tensor:
    """neg/pos ratio per label over known training elements, capped so very rare labels stay stable
    ([N, L] arrays or BitTables)."""
    positives, known = label_counts(y, mask)
    # float32 counts as the dense float32 sums gave them (whole numbers, exact below 2**24): same weights
    pos, neg = positives.astype(np.float32), (known - positives).astype(np.float32)
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(w, 1.0, cap), dtype=torch.float32)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate_loss(model: nn.Module, samples: SampleSet, batch_size: int | None = None,
                  precision: str = "fp32") -> float:
    """Mean masked BCE over all known labels; in a distributed run each process takes its share and
    the sums are added up, so every process gets the same value."""
    model.eval()
    device = model_device(model)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    batch_size = batch_size or _eval_batch(samples, device)
    batches = samples.batches(batch_size, shard=current_shard(pad=False), bucket=device.type == "cpu")
    for batch in device_batches(batches, device, ready=collate_on_device(samples, device, batch_size)):
        with autocast(device, precision):
            logits = model(batch)
        s, n = masked_bce_with_logits(logits.float(), batch.y, batch.y_mask)
        total += s
        count += n
    total, count = all_sum([total, count])
    return float(total) / max(int(count), 1)


@torch.no_grad()
def predict_logits(model: nn.Module, samples: SampleSet, batch_size: int | None = None,
                   precision: str = "fp32", forward=None) -> np.ndarray:
    """Logits [N, L] in sample order (batches may visit samples in another order), computed on the
    model's device; or, with `forward` (e.g. model.states), what it gives per sample of a batch."""
    model.eval()
    device = model_device(model)
    out = None  # as wide as the model's output, which may differ from the samples' label columns
    batch_size = batch_size or _eval_batch(samples, device)
    batches = samples.batches(batch_size, bucket=device.type == "cpu")
    for batch in device_batches(batches, device, ready=collate_on_device(samples, device, batch_size)):
        with autocast(device, precision):
            logits = model(batch) if forward is None else forward(batch)
        logits = logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(samples), logits.shape[1]), dtype=np.float32)
        out[batch.sample_index.cpu().numpy()] = logits
    return out if out is not None else np.zeros((0, label_tables(samples)[0].shape[1]), dtype=np.float32)


def masked_macro_score(y, mask, scores: np.ndarray, metric: str) -> float:
    """Macro AUROC or AUPRC (average precision) over the labels that have both classes among their
    known elements; nan when none has. A block of labels at a time (ehrdx.ranking); `y` and `mask`:
    [N, L] arrays or BitTables."""
    r = label_ranking(y, mask, scores)
    values = (r.auroc if metric == "auroc" else r.auprc)[r.scored]
    return float(np.mean(values)) if len(values) else math.nan


def validation_score(model: nn.Module, val, monitor: str, precision: str = "fp32") -> float:
    """What early stopping minimises: the mean validation loss, or minus the masked macro metric
    (falling back to the loss where no label has both classes in validation)."""
    if monitor != "loss":
        value = masked_macro_score(*label_tables(val), predict_logits(model, val, precision=precision), monitor)
        if not math.isnan(value):
            return -value
    return evaluate_loss(model, val, precision=precision)


def _eval_batch(samples, device: torch.device | None = None) -> int:
    """Rows per evaluation batch: patient-table rows are cheap; sequences carry all their visits. On a GPU
    sequences go 2,048 patients at a time (at 512 the H200 predicted 0.5-0.9M rows/s, at 2,048 1.4-1.9M:
    BENCHMARKS.md, issue 15)."""
    if isinstance(samples, SampleSet):
        return 4096
    return 2048 if device is not None and device.type == "cuda" else 512


def train_model(
    model: nn.Module,
    train: SampleSet,
    val: SampleSet | None,
    config: TrainConfig,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    extra_loss: Callable[[nn.Module, Batch, torch.Tensor], torch.Tensor] | None = None,
    val_score: Callable[[nn.Module], float] | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> TrainHistory:
    """Train in place; on return the model holds the weights of the best validation epoch.

    Early stopping minimises `validation_score` (`config.monitor`: the validation loss, or minus the
    masked macro AUROC/AUPRC); that value is what `on_epoch` gets as its third argument and what
    `history.val_loss` records. `val_score(model)` replaces it. Stopping waits `config.patience` epochs
    without improvement and `config.min_steps` optimiser steps. The learning rate follows `lr_at` over a
    budget of `max_epochs` epochs of steps, or of as many epochs as `min_steps` needs where that is more
    (set before every step, so a resumed run continues it).

    `extra_loss(model, batch, logits)` adds a term to each step's loss (e.g. distillation when a
    model grows new labels). The model is moved to `config.device` and stays there.

    Started by torchrun (see train/distributed.py), the same call trains data parallel: each process
    takes its share of every epoch and DistributedDataParallel averages the gradients.

    With `checkpoint` (a directory) the state is saved after every epoch (train/checkpoint.py);
    `resume=True` continues from it when it is there (the same data and options are required)."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model.to(device)
    shard = current_shard()
    batch_size = shard.batch_size(config.batch_size)  # the global batch is split over the processes
    net: nn.Module = model
    if is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    generator = torch.Generator().manual_seed(config.seed)
    per_epoch = max(n_batches(train, batch_size, shard), 1)
    epochs = epoch_budget(config, per_epoch)
    budget = epochs * per_epoch  # optimiser steps of the schedule
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    pos_weight = label_pos_weight(*label_tables(train)).to(device) if config.pos_weight else None
    history = TrainHistory(processes=shard.world, device=str(device), precision=precision)
    best_val, best_state, stale = math.inf, None, 0
    use_val = val is not None and len(val) > 0 and bool(column_sums(label_tables(val)[1]).any())
    start_epoch = 0
    ckpt = None
    if checkpoint is not None:
        train_cfg = {k: v for k, v in config.to_dict().items() if k != "device"}  # may resume elsewhere
        model_cfg = model.config.to_dict() if hasattr(model, "config") else {}
        model_cfg["context"] = getattr(train, "context", None)  # the windows read: resuming must read the same
        ckpt = Checkpointer(checkpoint, {"train": train_cfg, "model": model_cfg, "processes": shard.world,
                                         "data": data_fingerprint(train, val), "precision": precision,
                                         "extra_loss": extra_loss is not None, "val_score": val_score is not None})
        if resume and ckpt.exists():
            meta, tensors = ckpt.load()
            best_state = Checkpointer.restore(meta, tensors, model, optimizer, generator)
            history = TrainHistory(**{**meta["history"], "resumed_after_epoch": meta["epoch"] + 1})
            best_val = math.inf if meta["best_val"] is None else meta["best_val"]
            stale = meta["stale"]
            start_epoch = epochs if meta["stopped"] else meta["epoch"] + 1
        elif is_main():
            ckpt.clear()  # a fresh run: an older checkpoint must not be resumed later by mistake
    on_device = collate_on_device(train, device, batch_size)  # large batches of sequences on a GPU: built there
    start = time.perf_counter()
    seen, train_seconds = 0, 0.0
    for epoch in range(start_epoch, epochs):
        net.train()
        # Sums stay on the device: reading them back every step would stall a GPU.
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = torch.zeros((), dtype=torch.int64, device=device)
        epoch_start = time.perf_counter()
        batches = train.batches(batch_size, shuffle=True, generator=generator, shard=shard,
                                bucket=device.type == "cpu")
        for batch in device_batches(batches, device, ready=on_device):
            last = batch.part == batch.parts - 1  # a step may come in parts (data/batch.py), updated once
            if batch.part == 0:
                optimizer.zero_grad(set_to_none=True)
            # Parts before the last only accumulate gradients; the last one's backward averages them over
            # the processes (so processes whose steps have different numbers of parts still agree).
            with net.no_sync() if not last and net is not model else contextlib.nullcontext():
                with autocast(device, precision):
                    logits = net(batch)
                logits = logits.float()  # the loss (and any extra term) in float32
                s, n = masked_bce_with_logits(logits, batch.y, batch.y_mask, pos_weight)
                # A part is normalised by the whole step's known entries, so the parts' gradients add up
                # to the whole step's (a mean-per-sample extra term: by the part's share of samples).
                loss = s / (n.clamp(min=1) if batch.parts == 1 else max(batch.step_known, 1))
                if extra_loss is not None:
                    extra = extra_loss(model, batch, logits)
                    loss = loss + (extra if batch.parts == 1 else extra * (len(batch) / max(batch.step_rows, 1)))
                loss.backward()
            if last:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(history.steps, budget, config)
                optimizer.step()
                history.steps += 1
            total += s.detach()
            count += n
            seen += batch.y.shape[0]
        total, count = all_sum([total, count])
        train_loss = float(total) / max(int(count), 1)  # synchronises, so the epoch time is complete
        train_seconds += time.perf_counter() - epoch_start
        history.train_loss.append(train_loss)
        history.epochs_run = epoch + 1
        if not use_val:
            val_loss = None
        else:
            val_loss = (val_score(model) if val_score is not None
                        else validation_score(model, val, config.monitor, precision))
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val_loss)
        stop = False
        if val_loss is None:
            history.best_epoch = epoch
        else:
            history.val_loss.append(val_loss)
            if val_loss < best_val - 1e-5:
                best_val, stale, history.best_epoch = val_loss, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                stop = stale >= config.patience and history.steps >= config.min_steps
        if ckpt is not None and is_main():
            ckpt.save(epoch=epoch, model=model, optimizer=optimizer, best_state=best_state,
                      best_val=None if math.isinf(best_val) else best_val, stale=stale, stopped=stop,
                      history=history, generator=generator)
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    # Throughput of the optimisation steps alone (validation passes excluded).
    # In a distributed run: all processes' samples over the (shared) wall time.
    seen = int(all_sum([torch.tensor(seen, device=device)])[0])
    history.samples_per_second = seen / max(train_seconds, 1e-9)
    model.eval()
    return history
