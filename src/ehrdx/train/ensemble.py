"""`auto`: the chosen ensemble. Fits each candidate model (gradient boosting on history features, `gbm`; the
same on each code's count and age only, `gbm-counts`; a GRU over visits), then averages their probabilities
per label with weights chosen on the tuning (validation) samples only (`train/mixing.py`
`choose_weights`): the equal mix, unless a resampling of the tuning patients clearly prefers a member or
another mix for a label; with no tuning patients (--val-fraction 0) the equal mix, and the GRU runs every
epoch. The members, the weights and the reasons are saved with the model and listed in its metrics. Models
saved with two members (gbm, gru; before session 10) load and predict as they were.

From a pretrained encoder (`ehrdx train --init ENC --model auto`, ehrdx.pretrained) the network member is the
encoder's model (NETWORK_MEMBER in the settings: gru or transformer, saved under that name) with its sizes,
started from its weights by `start_network` before it trains; in `add_labels` its probe of a new label starts
from the pretrained rows of the label's codes. Models without an encoder are as before (a gru member).

A member that stops early label by label (gbm) stops on a share of the *training* patients (`inner_split`),
so the tuning patients that choose the weights are patients no member was fitted or stopped on per label.
Stopping it on the tuning patients made its tuning scores look better than they were (new-onset AUROC
0.750 on tuning vs 0.687 held out on clinosim, 0.676 vs 0.625 on Eunomia; the GRU, which makes one
stopping decision for all labels, was level: 0.669 vs 0.668), and auto chose gbm alone where a mix was
better held out (BENCHMARKS.md).

With two or more threads and the network on the CPU the fitted members run in a thread beside the network,
on half of the threads each (train/beside.py): on the 2-core box the demo cohort's auto fit went from about
2.0x to 1.68x the GRU's alone (BENCHMARKS.md), with the same boosters; the network is the one a run on half
the threads gives.

Checkpoints (`ehrdx train --resume`): each member in its own subfolder of the run's checkpoint directory,
`gbm/` and `gbm-counts/` (the fitted members, as the registry saves them: LightGBM's model text,
train/checkpoint.py `FittedCheckpoint`; saved when fitted) and `gru/` (per epoch, as `--model gru`), beside
`auto.json`, the ensemble's own settings. A resumed run reads the fitted members that were finished (side by
side, one stopped half way left no checkpoint and is fitted again, to the same trees) and continues the GRU
from its last epoch; the weights are chosen again (seconds, deterministic). Under
torchrun every process fits the same gbm members on all the training patients (deterministic: same data
and seed; no communication), the GRU trains data parallel as `--model gru` does, and only
rank 0 writes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from ehrdx.data.batches import HISTORY, SEQUENCE
from ehrdx.data.bits import label_columns, label_tables
from ehrdx.data.history import HistorySet
from ehrdx.data.sequences import SequenceSet
from ehrdx.models.registry import EVENTS, ModelKind, get_model, register_model
from ehrdx.ranking import sigmoid
from ehrdx.train.beside import Beside
from ehrdx.train.checkpoint import FittedCheckpoint
from ehrdx.train.device import resolve_device
from ehrdx.train.distributed import is_main
from ehrdx.train.fit import fit_model, model_logits
from ehrdx.train.loop import TrainHistory
from ehrdx.train.mixing import choose_weights, equal_without_tuning
from ehrdx.train.probe import probe_new_rows

ENSEMBLE = "auto"
MEMBERS = ("gbm", "gru", "gbm-counts")  # gbm-counts last: gbm and gru are fitted as with two members
NETWORK_MEMBER = "network_member"  # settings: the network member in gru's place (a pretrained encoder's model)
EPS = 1e-6
INNER_SHARE = 0.1  # of the training patients: where a member that stops per label (gbm) stops


def members_for(settings: dict) -> tuple[str, ...]:
    """MEMBERS, with the network member named in the settings (NETWORK_MEMBER, e.g. transformer: the model
    of the encoder it starts from) in gru's place."""
    network = settings.get(NETWORK_MEMBER) or "gru"
    return tuple(network if name == "gru" else name for name in MEMBERS)


def fit_order(names: tuple[str, ...]) -> list[str]:
    """The members that fit themselves (gbm, gbm-counts: seconds, checkpointed whole) before the networks
    (epochs): the order they are built in, and fitted in where they run one after the other (train/beside.py)."""
    return sorted(names, key=lambda n: get_model(n, EVENTS).inputs_for(EVENTS) != HISTORY)


def subset_set(dataset, keep: np.ndarray):
    """The samples `keep` of a member's input set (a HistorySet or a SequenceSet), targets and masks kept."""
    if isinstance(dataset, HistorySet):
        return HistorySet(dataset.store, dataset.samples.subset(keep), dataset.encoder, dataset.y_bits.take(keep),
                          dataset.mask_bits.take(keep))
    if isinstance(dataset, SequenceSet):
        out = SequenceSet(dataset.store, dataset.samples.subset(keep), dataset.encoder, context=dataset.context)
        out.y_bits, out.mask_bits = dataset.y_bits.take(keep), dataset.mask_bits.take(keep)
        out.bucket = dataset.bucket
        return out
    raise TypeError(f"the auto model cannot split a {type(dataset).__name__}")


def inner_split(dataset, seed: int, share: float = INNER_SHARE):
    """(fit, stop): the training set split by patient, `share` of the patients (seeded) to stop on."""
    rows = dataset.samples.row
    patients = np.unique(rows)
    n_stop = min(max(round(share * len(patients)), 1), len(patients) - 1)
    stop = np.isin(rows, np.random.default_rng(seed).choice(patients, n_stop, replace=False))
    return subset_set(dataset, np.flatnonzero(~stop)), subset_set(dataset, np.flatnonzero(stop))


class EnsembleModel:
    """Members by name, and per-label weights of their probabilities."""

    has_members = True  # train/fit.py: fit_sets trains (and checkpoints) the members itself

    def __init__(self, n_labels: int, settings: dict, members: tuple[str, ...] = MEMBERS) -> None:
        self.n_labels = n_labels
        self.settings = settings
        self.names = tuple(members)
        self.members: dict[str, object] = {}
        self.weights = np.full((n_labels, len(members)), 1.0 / len(members))
        self.choices: list[dict] = []
        self.history = TrainHistory()  # the network member's, over the whole fit's time (set by fit_sets)
        self.resumed: dict[str, str] = {}  # member -> what a resumed run read from its checkpoint
        self.member_histories: dict[str, TrainHistory] = {}
        self.probe_c: list[float] = []  # the network member's probe penalty per label of the last update
        self.probe_started: list[bool] = []  # ... and whether it started from pretrained rows, per label
        # Called with the network member just built, before it trains: returns the context it trains in
        # (a fit from a pretrained encoder: ehrdx.pretrained.EncoderStart). Set by the estimator for one fit.
        self.start_network: Callable[[nn.Module], contextlib.AbstractContextManager] | None = None

    @property
    def config(self) -> dict:
        return {"kind": ENSEMBLE, "n_labels": self.n_labels, "members": list(self.names),
                "weights": self.weights.tolist(), "choices": self.choices}

    def fit_sets(self, train: dict, val: dict | None = None, seed: int = 0,
                 on_epoch: Callable[[int, float, float | None], None] | None = None,
                 checkpoint: str | Path | None = None, resume: bool = False) -> EnsembleModel:
        """Fit the members (`fit_order`; the fitted ones in a thread beside a network on the CPU with 2+
        threads: train/beside.py), then choose the weights on `val` (none or empty: the equal mix).
        `on_epoch` follows the network member; with `checkpoint` each member checkpoints in its own subfolder
        and `resume` continues from them."""
        tuned = bool(val) and len(next(iter(val.values()))) > 0  # none: equal weights, networks run every epoch
        t0 = time.perf_counter()
        config = replace(self.settings["train"], seed=seed)
        if checkpoint is not None:
            self._check_run(Path(checkpoint), config, resume)
        self.members, self.resumed, probs, histories = {}, {}, {}, {}
        built = {}
        for name in fit_order(self.names):
            spec = get_model(name, EVENTS)
            built[name] = (spec.build(train[spec.inputs_for(EVENTS)], self.n_labels, self.settings),
                           spec.inputs_for(EVENTS))

        # the fitted members in a thread beside a network on the CPU, each on half of the threads (train/beside.py)
        fitted = [n for n in built if built[n][1] == HISTORY]
        networks = [n for n in built if n not in fitted]
        side = Beside(bool(fitted) and bool(networks) and resolve_device(config.device).type == "cpu")

        def fit_fitted(check: Callable[[], None]) -> None:
            for name in fitted:
                check()
                member = built[name][0]
                member.gbm.num_threads, member.on_label = side.threads_for_fitted, lambda *_: check()
                try:
                    fit_part, stop_part = inner_split(train[HISTORY], seed)  # stops per label on training patients,
                    where = None if checkpoint is None else Path(checkpoint) / name  # so tuning patients stay unseen
                    histories[name] = fit_model(member, fit_part, stop_part, config, checkpoint=where, resume=resume)
                finally:
                    member.gbm.num_threads, member.on_label = side.total, None  # all threads for its predictions
                self.members[name] = member

        def fit_networks(check: Callable[[], None]) -> None:
            def epoch_done(*a) -> None:
                check()  # a fitted member failed beside: stop here
                if on_epoch is not None:
                    on_epoch(*a)

            for name in networks:
                member, kind = built[name]
                where = None if checkpoint is None else Path(checkpoint) / name
                with self.start_network(member) if self.start_network else contextlib.nullcontext():
                    histories[name] = fit_model(member, train[kind], val[kind] if tuned else None, config,
                                                epoch_done, checkpoint=where, resume=resume)
                self.members[name] = member

        side.run(fit_fitted, fit_networks)
        if tuned:
            for name, (member, kind) in built.items():
                probs[name] = _sigmoid(model_logits(member, val[kind]))
        self.members = {name: self.members[name] for name in self.names}
        for name in self.names:  # what a resumed run read, in the members' order
            done = histories[name].resumed_after_epoch
            if done is not None:
                self.resumed[name] = ("after epoch " + str(done)) if isinstance(self.members[name], nn.Module) \
                    else "fitted, read from the checkpoint"
        if tuned:
            v = val[SEQUENCE]
            self.weights, self.choices = choose_weights(np.stack([probs[n] for n in self.names]), *label_tables(v),
                                                        groups=v.samples.row, seed=seed)
        else:
            self.weights, self.choices = equal_without_tuning(self.n_labels, len(self.names))
        self.history = self._history(histories, time.perf_counter() - t0)
        self.member_histories = histories  # this fit's, per member (not saved)
        return self

    def _check_run(self, directory: Path, config, resume: bool) -> None:
        """The ensemble's own settings beside its members' checkpoints: a resumed run must have the same."""
        ckpt = FittedCheckpoint(directory, {"members": list(self.names), "inner_share": INNER_SHARE,
                                            "seed": config.seed, "gbm_params": self.settings.get("gbm_params")},
                                name=ENSEMBLE)
        if resume and ckpt.exists():
            ckpt.load()
        elif is_main():
            ckpt.save({}, {}, {})

    def _history(self, histories: dict[str, TrainHistory], seconds: float) -> TrainHistory:
        """The network member's history (epochs, losses, steps) over the whole fit's time; resumed where any
        member was (after the network's complete epochs, 0 where only a fitted member was read)."""
        net = [n for n in self.names if isinstance(self.members[n], nn.Module)]
        out = replace(histories[net[0]]) if net else TrainHistory(epochs_run=1)
        out.seconds = seconds
        if self.resumed and out.resumed_after_epoch is None:
            out.resumed_after_epoch = 0
        return out

    def add_labels(self, train: dict, val: dict | None = None, n_old: int = 0, seed: int = 0,
                   label_codes: list[list[str]] | None = None) -> EnsembleModel:
        """`ehrdx update`: every member learns the labels from column `n_old` on, and the old labels' outputs
        stay as they were. A member that fits itself (gbm, gbm-counts) adds its own boosters; a network (gru) gets new head
        rows by linear probing on its frozen states (no fine-tuning, so its body does not move), each new
        label's probe starting from the pretrained rows of its codes (`label_codes`, per new label) where the
        network keeps an encoder's rows (`probe_started`). The new labels' weights are chosen on the tuning
        samples by the same rule as at fit time (the gbm members stop on training patients)."""
        for name in self.names:
            member, kind = self.members[name], get_model(name).inputs_for(EVENTS)
            if hasattr(member, "head"):
                # the new labels' columns only, dense (the probes fit all new labels at once)
                y, known = (t[:, n_old:] for t in label_tables(train[kind]))
                # each label's penalty chosen on the validation samples, where there are some
                probe_val = ((val[kind], *(t[:, n_old:] for t in label_tables(val[kind]))) if val and len(val[kind])
                             else None)
                start = (member.pretrained_start(label_codes) if label_codes is not None
                         and hasattr(member, "pretrained_start") else None)
                rows, bias, strengths = probe_new_rows(member, train[kind], y, known, probe_val, seed=seed,
                                                       start=start)
                self.probe_c = [float(c) for c in strengths]  # the update's report lists them (update.py)
                self.probe_started = [bool(f) for f in start[2]] if start is not None else [False] * y.shape[1]
                member.head.grow(rows, bias)
                member.config.n_labels = label_tables(train[kind])[0].shape[1]
                member.config.label_blocks = member.head.block_sizes
            else:
                fit_part, stop_part = inner_split(train[kind], seed)  # as at fit time
                member.add_labels(fit_part, stop_part, n_old=n_old, seed=seed)
        self.n_labels = label_tables(train[SEQUENCE])[0].shape[1]
        new_weights, new_choices = equal_without_tuning(self.n_labels - n_old, len(self.names))
        if val and len(val[SEQUENCE]):
            v = val[SEQUENCE]
            p = self.member_probabilities(val)[:, :, n_old:]
            new_weights, new_choices = choose_weights(p, *(label_columns(t, n_old) for t in label_tables(v)),
                                                      groups=v.samples.row, seed=seed)
        self.weights = np.vstack([self.weights, new_weights])
        # a model updated without tuning patients by older code kept no choices for its new labels: pad, so
        # that each label's choice stays in its column
        old = self.choices[:n_old] + [{"chosen": "not recorded"}] * max(0, n_old - len(self.choices))
        self.choices = [*old, *new_choices]
        return self

    def weights_report(self, labels: list[str], start: int = 0) -> list[dict]:
        """metrics.json's `ensemble.per_label` rows of the labels from column `start` on: each label's weights by
        member and why they were chosen (`choices`, choose_weights' report)."""
        choices = self.choices[start:]
        return [{"label": lab, "weights": dict(zip(self.names, map(float, w))),
                 **(choices[i] if i < len(choices) else {"chosen": "not recorded"})}
                for i, (lab, w) in enumerate(zip(labels[start:], self.weights[start:]))]

    def member_probabilities(self, dataset: dict) -> np.ndarray:
        """[M, N, L] each member's probabilities."""
        return np.stack([_sigmoid(model_logits(self.members[name], dataset[get_model(name).inputs_for(EVENTS)]))
                         for name in self.names])

    def predict_logits(self, dataset: dict) -> np.ndarray:
        p = np.einsum("mnl,lm->nl", self.member_probabilities(dataset), self.weights)
        p = np.clip(p, EPS, 1 - EPS)
        return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return sigmoid(np.array(x, dtype=np.float64))  # a copy: the caller's logits stay as they were


def _build(train_set, n_labels: int, settings: dict) -> EnsembleModel:
    return EnsembleModel(n_labels, settings, members_for(settings))


def _save(model: EnsembleModel) -> tuple[dict, dict, dict]:
    config, tensors, files = dict(model.config), {}, {}
    config["member_configs"] = {}
    for name, member in model.members.items():
        cfg, state, member_files = get_model(name).save(member)
        config["member_configs"][name] = cfg
        tensors.update({f"{name}.{k}": v for k, v in state.items()})
        files.update({f"{name}.{f}": obj for f, obj in member_files.items()})
    return config, tensors, files


def _load(config: dict, state: dict, files: dict) -> EnsembleModel:
    model = EnsembleModel(config["n_labels"], {}, tuple(config["members"]))
    for name in model.names:
        prefix = f"{name}."
        member_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        member_files = {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}
        model.members[name] = get_model(name).load(config["member_configs"][name], member_state, member_files)
    model.weights = np.asarray(config["weights"], dtype=np.float64)
    model.choices = list(config.get("choices", []))
    return model


register_model(ModelKind(
    ENSEMBLE, {EVENTS: (HISTORY, SEQUENCE)}, (EVENTS,),
    "the chosen ensemble: gbm, gru and gbm-counts averaged, one weighting for all labels (equal weights unless "
    "the tuning patients clearly prefer another)",
    _build, _save, _load, default_layers=1, default_batch_size=64, per_label=True))  # its gbm members
