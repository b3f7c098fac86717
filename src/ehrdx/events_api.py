"""Python API for event streams: a disease prediction at every prediction time of every patient.

    clf = EventClassifier(model="gru", task="next-visit", labels="map:label_map.csv")
    clf.fit(store, train_rows, val_rows)
    samples = clf.samples(store, test_rows)          # prediction times, labels and masks
    proba = clf.predict_samples(store, samples)      # [samples, labels]
    metrics = clf.evaluate(store, test_rows)         # all labels, new onset, by prior visits

Everything learned (label vocabulary, input code vocabulary, value statistics, weights, thresholds)
comes from the training patients; validation patients only stop training and tune thresholds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ehrdx.artifacts import register_family, save_model
from ehrdx.data.batches import SampleSet
from ehrdx.data.counts import count_matrix, history_features
from ehrdx.data.samples import Samples
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.data.store import EventStore
from ehrdx.errors import DataError, ModelError
from ehrdx.evaluate.metrics import evaluate_samples, tune_thresholds
from ehrdx.models.baselines import LogisticBaseline
from ehrdx.models.mlp import MLPConfig, MLPModel, build_model
from ehrdx.models.sequence import ENCODERS, SequenceConfig, SequenceModel
from ehrdx.tasks.icd10 import fill_icd10
from ehrdx.tasks.labels import LabelVocab, describe_from_codes
from ehrdx.tasks.select import LabelSelector, check_label_spellings
from ehrdx.tasks.targets import Targets
from ehrdx.tasks.task import (
    TaskSpec,
    build_samples,
    code_label_index,
    codes_of_labels,
    label_first_times,
    labels_missing_from,
    mask_before_introduction,
    rows_of_subjects,
)
from ehrdx.train.loop import TrainConfig, TrainHistory, predict_logits, train_model

MODELS = (*ENCODERS, "mlp", "logistic")


class EventClassifier:
    """Multi-label disease prediction from event streams (MEDS or long tables, via the event store)."""

    def __init__(
        self,
        *,
        model: str = "gru",
        task: str | TaskSpec = "next-visit",
        labels: str | LabelSelector = "prefix:DX//",
        new_onset: bool = False,
        censor: bool = True,
        hidden: int = 128,
        layers: int | None = None,
        heads: int = 4,
        dropout: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 30,
        patience: int = 3,
        pos_weight: bool = False,
        min_code_count: int = 1,
        seed: int = 0,
        device: str = "cpu",
        precision: str = "auto",
        infer_introduced: bool = False,
    ) -> None:
        if model not in MODELS:
            raise ModelError(f"unknown model '{model}': choose from {', '.join(MODELS)}")
        # The hyperparameters as given (what get_params returns and the model directory keeps), so a loaded
        # model can be rebuilt, or retrained from scratch, with exactly its settings.
        self._given = {"model": model, "new_onset": new_onset, "censor": censor, "hidden": hidden, "layers": layers,
                       "heads": heads, "dropout": dropout, "lr": lr, "weight_decay": weight_decay,
                       "batch_size": batch_size, "max_epochs": max_epochs, "patience": patience,
                       "pos_weight": pos_weight, "min_code_count": min_code_count, "seed": seed,
                       "precision": precision, "infer_introduced": infer_introduced}
        self.model = model
        self.task = task if isinstance(task, TaskSpec) else TaskSpec.parse(task, new_onset, censor)
        self.selector = labels if isinstance(labels, LabelSelector) else LabelSelector.parse(labels)
        self.hidden, self.heads, self.dropout = hidden, heads, dropout
        self.layers = layers if layers is not None else (2 if model == "transformer" else 1)
        self.min_code_count = min_code_count
        self.seed = seed
        # Mask a label before its first record in the training patients when no introduced_at is given
        # (off by default: a rare code's first record is usually not when the code began).
        self.infer_introduced = infer_introduced
        # mlp rows are single samples; sequence batches hold whole patients.
        self.train_config = TrainConfig(lr=lr, weight_decay=weight_decay,
                                        batch_size=batch_size if model in ENCODERS else batch_size * 4,
                                        max_epochs=max_epochs, patience=patience, pos_weight=pos_weight, seed=seed,
                                        device=device, precision=precision)

    def get_params(self) -> dict:
        """The hyperparameters as given to the constructor (task and label selection excepted: `task`,
        `selector`), without the device, which belongs to the machine, not the model."""
        return dict(self._given)

    # -- data ------------------------------------------------------------------------------------
    def samples(self, store: EventStore, rows: np.ndarray | None = None, *, times=None,
                require_labels: bool = True, targets: Targets | None = None) -> Samples:
        """Samples of the given patients (all by default) at visit ends or at (row, time) pairs; with
        `targets`, at their prediction times and with their labels instead of the task's windows."""
        self._check_fitted()
        rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
        index = code_label_index(store, self.selector, self.label_vocab_)
        L = len(self.label_vocab_)
        introduced = self.label_vocab_.introduced_seconds()
        introduced_from = self.label_vocab_.introduced_from()
        if targets is None:
            out = build_samples(store, rows, self.task, index, L, times=times, require_labels=require_labels,
                                introduced=introduced, introduced_from=introduced_from)
            # Labels in the data that this model does not know (e.g. newer codes): left out, and said so.
            for lab in labels_missing_from(store, rows, self.selector, self.label_vocab_):
                out.counts[f"label_not_in_model:{lab}"] = 1
            return out
        t_rows = rows_of_subjects(store, store.store_ids(targets.subject_id, "targets"), "targets")
        keep = np.isin(t_rows, rows)
        s = build_samples(store, rows, self.task, index, L, times=(t_rows[keep], targets.time[keep]),
                          require_labels=False)
        window_end = s.window_end
        # Align the given labels to the samples (both are unique by (row, time)) and to the vocabulary.
        key_t = t_rows[keep].astype(np.int64) * 2**40 + targets.time[keep] - int(targets.time.min(initial=0))
        key_s = s.row.astype(np.int64) * 2**40 + s.time - int(targets.time.min(initial=0))
        order = np.argsort(key_t)
        at = order[np.searchsorted(key_t[order], key_s)]
        col = np.array([targets.labels.index(lab) if lab in targets.labels else -1 for lab in self.label_vocab_.labels])
        have = col >= 0
        y_src, m_src = targets.y[keep][at], targets.mask[keep][at]
        s.y = np.zeros((len(s), L), dtype=np.float32)
        s.mask = np.zeros((len(s), L), dtype=bool)
        s.y[:, have] = y_src[:, col[have]]
        s.mask[:, have] = m_src[:, col[have]]
        s.counts.update(mask_before_introduction(s.mask, window_end, np.where(have, introduced, -np.inf),
                                                 introduced_from))
        if not have.all():
            s.counts["labels_not_in_targets"] = int((~have).sum())
        if require_labels:
            usable = s.mask.any(1)
            if (~usable).any():
                s.counts["samples_without_known_labels_left_out"] = int((~usable).sum())
                s = s.subset(usable)
        return s

    def _dataset(self, store: EventStore, samples: Samples):
        if self.model in ENCODERS:
            return SequenceSet(store, samples, self.encoder_, new_onset=self.task.new_onset)
        feats = history_features(store, samples, self.encoder_)
        return SampleSet(feats, samples.y, samples.train_mask(self.task.new_onset))

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, store: EventStore, train_rows: np.ndarray, val_rows: np.ndarray,
            on_epoch: Callable[[int, float, float | None], None] | None = None,
            targets: Targets | None = None, checkpoint: str | Path | None = None,
            resume: bool = False) -> EventClassifier:
        """Fit on `train_rows`; `val_rows` stop training and tune thresholds. Labels come from the task's
        windows over the events, or from given `targets` (long table or MEDS task directories).
        `checkpoint`: a directory for per-epoch checkpoints; `resume` continues from the one there."""
        train_rows, val_rows = np.asarray(train_rows, np.int64), np.asarray(val_rows, np.int64)
        if np.intersect1d(train_rows, val_rows).size:
            raise DataError("the same patients are in training and validation", file=str(store.directory),
                            fix="split by patient: each patient belongs to one part only")
        if len(train_rows) == 0:
            raise DataError("no training patients", file=str(store.directory))
        if targets is None:
            first = label_first_times(store, train_rows, self.selector)
        else:  # labels with a known positive among training patients; first record = first positive time
            t_rows = rows_of_subjects(store, store.store_ids(targets.subject_id, "targets"), "targets")
            in_train = np.isin(t_rows, train_rows)
            pos = (targets.y > 0.5) & targets.mask & in_train[:, None]
            first = {lab: int(targets.time[pos[:, j]].min()) for j, lab in enumerate(targets.labels) if pos[:, j].any()}
        check_label_spellings(first, file=str(store.directory), column="code",
                              fix="the codes behind these labels differ only in case or spaces: correct the "
                              "codes, or give --labels map:FILE mapping every spelling to one label")
        codes = codes_of_labels(store, self.selector, train_rows)
        info = {lab: {"codes": sorted(codes.get(lab, [])), **self.selector.info.get(lab, {})} for lab in first}
        describe_from_codes(info, store.code_descriptions())  # the data's own code descriptions
        fill_icd10(info, first)  # ICD-10-CM parents/descriptions where the optional package is installed
        self.label_vocab_ = LabelVocab.from_first_times(first, info, self.infer_introduced)
        if len(self.label_vocab_) == 0:
            raise DataError(f"no label codes (labels '{self.selector.spec}') in the training patients' events",
                            file=str(store.directory), column="code",
                            fix="check --labels against the codes in the data (ehrdx reads them from events)")
        self.encoder_ = EventEncoder.fit(store, train_rows, self.min_code_count)
        train_s = self.samples(store, train_rows, targets=targets)
        val_s = self.samples(store, val_rows, targets=targets)
        if len(train_s) == 0:
            raise DataError("no training samples with a known label (every patient has a single visit, or "
                            "all windows are censored)", file=str(store.directory),
                            fix="use a window task, or --no-censor")
        torch.manual_seed(self.seed)
        L = len(self.label_vocab_)
        train_mask = train_s.train_mask(self.task.new_onset)
        prevalence = (train_s.y * train_mask).sum(0) / np.maximum(train_mask.sum(0), 1)
        history = TrainHistory()
        if self.model == "logistic":
            import time

            t0 = time.perf_counter()
            X = count_matrix(history_features(store, train_s, self.encoder_), self.encoder_.n_codes)
            self.model_ = LogisticBaseline(X.shape[1], L).fit(X, train_s.y, train_mask, seed=self.seed)
            history.seconds = time.perf_counter() - t0
            history.epochs_run = 1
            history.samples_per_second = len(train_s) / max(history.seconds, 1e-9)
        else:
            train_set, val_set = self._dataset(store, train_s), self._dataset(store, val_s)
            if self.model in ENCODERS:
                config = SequenceConfig(n_codes=self.encoder_.n_codes, n_labels=L, encoder=self.model,
                                        n_numeric=len(train_set.numeric_ids), hidden=self.hidden,
                                        layers=self.layers, heads=self.heads, dropout=self.dropout)
                self.model_ = SequenceModel(config)
            else:
                config = MLPConfig(n_dense=train_set.features.dense.shape[1], n_codes=self.encoder_.n_codes,
                                   n_labels=L, hidden=self.hidden, depth=self.layers, dropout=self.dropout)
                self.model_ = MLPModel(config)
            self.model_.head.set_bias_from_prevalence(torch.from_numpy(prevalence.astype(np.float32)))
            history = train_model(self.model_, train_set, val_set, self.train_config, on_epoch,
                                  checkpoint=checkpoint, resume=resume)
        self.history_ = history
        val_mask = val_s.train_mask(self.task.new_onset)
        if len(val_s):
            self.thresholds_ = tune_thresholds(val_s.y, val_mask, self.predict_samples(store, val_s))
        else:
            self.thresholds_ = np.full(L, 0.5)
        self.fit_summary_ = {
            "train_patients": len(train_rows), "val_patients": len(val_rows),
            "train_samples": len(train_s), "val_samples": len(val_s),
            "train": {"excluded": train_s.counts}, "val": {"excluded": val_s.counts},
            "labels": len(self.label_vocab_), "input_codes": self.encoder_.n_codes - 1,
            "labels_with_introduced_at": _count_sources(self.label_vocab_.introduced_from()),
        }
        return self

    # -- predict ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "label_vocab_"):
            raise ModelError("this EventClassifier is not fitted yet: call fit() or ehrdx.load()")

    def to(self, device: str = "auto") -> EventClassifier:
        """Move the network to a device for prediction (auto, cpu, cuda, cuda:N); the count baselines
        run on the CPU whatever is asked."""
        from ehrdx.train.device import resolve_device

        self._check_fitted()
        if isinstance(self.model_, torch.nn.Module):
            self.model_.to(resolve_device(device))
        return self

    @property
    def labels_(self) -> list[str]:
        self._check_fitted()
        return list(self.label_vocab_.labels)

    def predict_samples(self, store: EventStore, samples: Samples) -> np.ndarray:
        """Probability of every label (``labels_`` order) for every sample."""
        self._check_fitted()
        if len(samples) == 0:
            return np.zeros((0, len(self.label_vocab_)))
        if self.model == "logistic":
            X = count_matrix(history_features(store, samples, self.encoder_), self.encoder_.n_codes)
            logits = self.model_.decision_function(X)
        else:
            logits = predict_logits(self.model_, self._dataset(store, samples))
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def evaluate(self, store: EventStore, rows: np.ndarray | None = None,
                 proba: np.ndarray | None = None, samples: Samples | None = None) -> dict:
        """Metrics per prediction time: all labels, new onset only, and by number of prior visits."""
        samples = samples if samples is not None else self.samples(store, rows)
        proba = proba if proba is not None else self.predict_samples(store, samples)
        return evaluate_samples(samples, proba, self.labels_, self.thresholds_, self.label_vocab_.descriptions())

    # -- artifacts -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        return save_model(self, directory)

    def artifact_parts(self) -> dict:
        if self.model == "logistic":
            state = {k: torch.from_numpy(v) for k, v in self.model_.state_dict().items()}
            model_config = self.model_.config
        else:
            state = {k: v.detach().contiguous().cpu() for k, v in self.model_.state_dict().items()}
            model_config = self.model_.config.to_dict()
        return {
            "family": "events",
            "json": {"preprocessing.json": self.encoder_.to_dict(),
                     "labels.json": {**self.label_vocab_.to_dict(), "selector": self.selector.to_dict()},
                     "task.json": self.task.to_dict(),
                     # how the events were read (ehrdx.input_settings); absent in older models
                     **({"input.json": self.input_} if getattr(self, "input_", None) else {})},
            "state": state,
            "config": {"model": model_config, "model_name": self.model, "params": self.get_params(),
                       "train": self.train_config.to_dict(),
                       "thresholds": [float(t) for t in self.thresholds_],
                       "history": self.history_.to_artifact() if hasattr(self, "history_") else None,
                       "lineage": getattr(self, "lineage_", None), "infer_introduced": self.infer_introduced},
        }

    @classmethod
    def from_parts(cls, config: dict, files: dict[str, dict], state: dict[str, torch.Tensor]) -> EventClassifier:
        train = config["train"]
        model_cfg = config["model"]
        task = TaskSpec.from_dict(files["task.json"])
        params = dict(config.get("params") or _params_of_older_model(config, files, task))
        params.setdefault("infer_introduced", bool(config.get("infer_introduced", False)))  # absent before it
        clf = cls(task=task, labels=LabelSelector.from_dict(files["labels.json"]["selector"]), **params)
        clf.train_config = TrainConfig(**train)
        clf.label_vocab_ = LabelVocab.from_dict(files["labels.json"])
        clf.encoder_ = EventEncoder.from_dict(files["preprocessing.json"])
        if model_cfg["kind"] == "logistic":
            clf.model_ = LogisticBaseline(model_cfg["n_features"], model_cfg["n_labels"], model_cfg["C"],
                                          model_cfg["max_iter"])
            clf.model_.load_state_dict({k: v.numpy() for k, v in state.items()})
        else:
            clf.model_ = build_model(model_cfg)
            clf.model_.load_state_dict(state)
            clf.model_.eval()
            clf.hidden = clf.model_.config.hidden
        clf.thresholds_ = np.asarray(config["thresholds"], dtype=np.float64)
        if config.get("history"):
            clf.history_ = TrainHistory(**config["history"])
        if config.get("lineage"):
            clf.lineage_ = config["lineage"]
        if files.get("input.json"):
            clf.input_ = files["input.json"]
        return clf


def _params_of_older_model(config: dict, files: dict[str, dict], task: TaskSpec) -> dict:
    """Hyperparameters of a model saved before config.json kept them: from its model and train configs."""
    train, model_cfg = config["train"], config["model"]
    name = config["model_name"]
    params = {"model": name, "new_onset": task.new_onset, "censor": task.censor, "lr": train["lr"], "weight_decay": train["weight_decay"],
              "batch_size": train["batch_size"] if name in ENCODERS else max(train["batch_size"] // 4, 1),
              "max_epochs": train["max_epochs"], "patience": train["patience"], "pos_weight": train["pos_weight"],
              "seed": train["seed"], "precision": train.get("precision", "auto"),
              "min_code_count": files["preprocessing.json"].get("min_count", 1)}
    if model_cfg.get("kind") == "sequence":
        params.update(hidden=model_cfg["hidden"], layers=model_cfg["layers"], heads=model_cfg["heads"],
                      dropout=model_cfg["dropout"])
    elif model_cfg.get("kind") == "mlp":
        params.update(hidden=model_cfg["hidden"], layers=model_cfg["depth"], dropout=model_cfg["dropout"])
    return params


def _count_sources(sources: list[str | None]) -> dict[str, int]:
    """How many labels have an introduced_at, by where it came from."""
    out: dict[str, int] = {}
    for s in sources:
        if s:
            out[s] = out.get(s, 0) + 1
    return out


register_family("events", ("preprocessing.json", "labels.json", "task.json", "model.safetensors"), EventClassifier.from_parts)
