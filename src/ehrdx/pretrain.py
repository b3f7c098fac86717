"""Self-supervised pretraining of a sequence encoder (`ehrdx pretrain`): no labels, the data's own codes.

At the end of every visit of a training patient the network predicts which target codes occur in the
patient's next visit (multi-label: every code recorded by at least `min_count` training patients, the
`max_targets` most frequent), and, optionally, how soon that visit comes: cumulative bins of the time to it
(within 7, 30, 90, 365 days; an ordinal encoding of log time that the same masked BCE learns). Early
stopping follows the tuning patients' next-visit loss.

Everything else is the supervised machinery: the samples are `Samples` at visit ends (data/samples.py) whose
targets are a packed `BitTable` built from (sample, target) index lists, with the mask and history held as
broadcast views of one row (no [S, T] table is ever dense: a batch reads its own rows); `SequenceSet` reads
them; the registry builds the network and `fit_model` trains it. The patient split is `ehrdx train`'s
default on the same data and settings, so pretraining patients are training (and tuning) patients of a later
`ehrdx train` with the same split settings, never its test patients (ehrdx.pretrained checks it).

Long histories: `context=N` reads the latest visits before each sample (between N + 1 and 2N) plus a
summary of the earlier ones, as `ehrdx train --context N` does (data/windows.py); the encoder records it, and
a fine-tune from it reads the same (`ehrdx train --init` takes it; another context is refused).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ehrdx.data.bits import BitTable
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.data.store import STATIC_TIME, EventStore, concat_ranges
from ehrdx.errors import DataError
from ehrdx.models.registry import SEQUENCE, get_model
from ehrdx.models.sequence import check_heads
from ehrdx.pretrained import PretrainedEncoder, patient_hashes
from ehrdx.tasks.task import check_features_before
from ehrdx.train.fit import fit_model
from ehrdx.train.loop import TrainConfig

DAY = 86400
TIME_BINS_DAYS = (7, 30, 90, 365)  # time-to-next-visit targets: the next visit comes within this many days
DEFAULT_MIN_COUNT = 20
DEFAULT_MAX_TARGETS = 4096


def time_target_names() -> list[str]:
    return [f"@next_visit_within_{d}d" for d in TIME_BINS_DAYS]


def target_codes(store: EventStore, rows: np.ndarray, min_count: int, max_targets: int | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Store code ids recorded at visits (not static facts) of at least `min_count` of these patients, most
    patients first (ties by code name), at most `max_targets`; and their patient counts."""
    offsets = np.asarray(store.offsets)
    rows = np.asarray(rows, dtype=np.int64)
    pos = concat_ranges(offsets[rows], offsets[rows + 1])
    owner = np.repeat(np.arange(len(rows)), offsets[rows + 1] - offsets[rows])
    timed = np.asarray(store.times)[pos] != STATIC_TIME
    n_codes = len(store.code_names)
    pairs = np.unique(owner[timed] * n_codes + np.asarray(store.codes)[pos][timed].astype(np.int64))
    patients = np.bincount(pairs % n_codes, minlength=n_codes)
    keep = np.flatnonzero(patients >= max(min_count, 1))
    names = np.array(store.code_names, dtype=object)[keep]
    keep = keep[np.lexsort((names, -patients[keep]))]
    if max_targets is not None:
        keep = keep[:max_targets]
    return keep, patients[keep]


def next_visit_samples(store: EventStore, rows: np.ndarray, target_of_code: np.ndarray, n_codes: int,
                       time_targets: bool) -> Samples:
    """A sample at the end of every visit of these patients that has a next visit; its targets: the target
    codes recorded at the next visit (columns 0..n_codes-1, `target_of_code` maps store codes to them, -1
    for none), then (with `time_targets`) whether the next visit starts within each TIME_BINS_DAYS."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    vo, v_starts, v_ends = (np.asarray(a) for a in (store.visit_offsets, store.visit_starts, store.visit_ends))
    times = np.asarray(store.times)
    n_vis = vo[rows + 1] - vo[rows]
    has = n_vis > 1
    first = vo[rows][has]
    visits = concat_ranges(first, vo[rows + 1][has] - 1)  # every visit but each patient's last
    s_row = np.repeat(rows[has], n_vis[has] - 1)
    nxt = visits + 1
    cutoff = v_ends[visits]
    s_time = times[cutoff - 1]
    n_visits = (visits - np.repeat(first, n_vis[has] - 1) + 1).astype(np.int32)
    w_end = times[v_ends[nxt] - 1]
    # (sample, target) pairs: the next visit's events, each sample's own range
    pos = concat_ranges(v_starts[nxt], v_ends[nxt])
    sample = np.repeat(np.arange(len(visits)), v_ends[nxt] - v_starts[nxt])
    col = target_of_code[np.asarray(store.codes)[pos]]
    sample, col = sample[col >= 0], col[col >= 0]
    n_cols = n_codes + (len(TIME_BINS_DAYS) if time_targets else 0)
    if time_targets:
        gap = times[v_starts[nxt]] - s_time
        for j, days in enumerate(TIME_BINS_DAYS):
            within = np.flatnonzero(gap <= days * DAY)
            sample = np.concatenate([sample, within])
            col = np.concatenate([col, np.full(len(within), n_codes + j)])
    check_features_before(store, s_row, s_time, cutoff)  # the leakage guard every sample set passes
    y = BitTable.from_entries(len(visits), n_cols, sample, col)
    width = y.packed.shape[1]
    every = np.packbits(np.ones(n_cols, bool))  # padding bits 0
    known = BitTable(np.broadcast_to(every, (len(visits), width)), n_cols)  # every target known: one row's bytes
    none = BitTable(np.broadcast_to(np.zeros(width, np.uint8), (len(visits), width)), n_cols)
    counts = {"patients_with_one_visit": int((~has).sum())} if (~has).any() else {}
    return Samples(s_row, s_time, cutoff, n_visits, w_end, y, known, none, counts)


def encoder_spec(model: str, hidden: int, heads: int):
    """The registry entry of an encoder to pretrain, refused (DataError, ModelError) where `model` reads no
    visit sequences or its sizes cannot be built. Cheap: ehrdx pretrain checks it before reading any events."""
    spec = get_model(model, "events")
    if spec.inputs_for("events") != SEQUENCE:
        raise DataError(f"pretraining is for sequence models, and {model} does not read visit sequences",
                        column="--model", fix="choose gru, lstm or transformer")
    check_heads(model, hidden, heads)
    return spec


def pretrain(store: EventStore, splits: tuple[np.ndarray, np.ndarray, np.ndarray], *, model: str = "gru",
             hidden: int = 128, layers: int | None = None, heads: int = 4, dropout: float = 0.1,
             max_epochs: int = 10, batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 1e-4,
             patience: int = 2, seed: int = 0, min_count: int = DEFAULT_MIN_COUNT,
             max_targets: int | None = DEFAULT_MAX_TARGETS, min_code_count: int = 1, time_targets: bool = True,
             context: int | None = None, device: str = "cpu", precision: str = "auto", settings: dict | None = None,
             on_epoch: Callable[[int, float, float | None], None] | None = None,
             on_start: Callable[[], None] | None = None) -> PretrainedEncoder:
    """Pretrain a `model` (gru, lstm, transformer) on the training patients of `splits` (train, tuning, test
    store rows; the test rows are never read), stopping early on the tuning patients' next-visit loss.
    `context`: read at most about this many of the latest visits (N to 2N, data/windows.py) plus a summary of
    the earlier ones (None: whole histories), as `ehrdx train --context` reads them; a fine-tune from the
    encoder reads the same. `settings`: how the split was made, recorded with the encoder. `on_start` is called
    once the targets and samples are checked, before the network is fitted (e.g. to show a progress bar only
    then)."""
    spec = encoder_spec(model, hidden, heads)
    tr, va = (np.asarray(x, dtype=np.int64) for x in splits[:2])
    if context is not None and (isinstance(context, bool) or not isinstance(context, int | np.integer) or context < 1):
        raise DataError(f"context must be a positive number of visits or None, not {context!r}", column="--context",
                        fix="give --context N with N >= 1, or leave it out to read whole histories")
    if max_targets is not None and max_targets < 1:  # else no target, said as if --min-count were too high
        raise DataError(f"max_targets must be at least 1 (or None), not {max_targets!r}", column="--max-targets",
                        fix="give --max-targets N with N >= 1")
    if max_epochs < 1:  # else an untrained encoder is written as if pretrained
        raise DataError(f"max_epochs must be at least 1, not {max_epochs!r}", column="--epochs",
                        fix="give --epochs N with N >= 1")
    if len(tr) == 0:
        raise DataError("no training patients to pretrain on",  # the store's folder may be a temporary one
                        fix="give a --test-fraction and --val-fraction that leave training patients")
    codes, patients = target_codes(store, tr, min_count, max_targets)
    if len(codes) == 0:
        raise DataError(f"no code is recorded at visits of {min_count} or more training patients",
                        column="--min-count", fix="lower --min-count")
    target_of_code = np.full(len(store.code_names), -1, dtype=np.int64)
    target_of_code[codes] = np.arange(len(codes))
    encoder = EventEncoder.fit(store, tr, min_code_count)
    train_s = next_visit_samples(store, tr, target_of_code, len(codes), time_targets)
    val_s = next_visit_samples(store, va, target_of_code, len(codes), time_targets)
    if len(train_s) == 0:
        raise DataError("no training patient has two visits: there is no next visit to predict",
                        fix="pretrain on data with repeated visits")
    torch.manual_seed(seed)
    train_set = SequenceSet(store, train_s, encoder, context=context)
    val_set = SequenceSet(store, val_s, encoder, context=context)
    layers = layers if layers is not None else spec.default_layers
    n_targets = train_s.n_labels
    net = spec.build(train_set, n_targets, {"hidden": hidden, "layers": layers, "heads": heads, "dropout": dropout,
                                            "n_codes": encoder.n_codes})
    config = TrainConfig(lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_epochs=max_epochs,
                         patience=patience, seed=seed, device=device, precision=precision)
    if on_start is not None:
        on_start()
    history = fit_model(net, train_set, val_set, config, on_epoch)
    time_counts = train_s.y_bits[:, len(codes):].sum(0).tolist() if time_targets else []
    names = [store.code_names[int(c)] for c in codes] + (time_target_names() if time_targets else [])
    ids = np.asarray(store.subject_ids)
    return PretrainedEncoder(
        model, net.config.to_dict(), {k: v.detach().cpu() for k, v in net.state_dict().items()}, encoder, names,
        [int(x) for x in patients] + [int(x) for x in time_counts], len(names) - len(codes),
        {"train": patient_hashes(ids[tr]), "tuning": patient_hashes(ids[va])},
        {**(settings or {}), "context": context, "min_count": min_count, "max_targets": max_targets, "min_code_count": min_code_count,
         "train_patients": len(tr), "tuning_patients": len(va), "train_samples": len(train_s),
         "tuning_samples": len(val_s), "excluded": train_s.counts, "train": config.to_dict()},
        history.to_dict())
