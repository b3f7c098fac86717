"""The estimator's model directory: what it saves and how it is read back, for both families.

`table` (a model of a patient table): preprocessing.json (the table encoder), labels.json, model.safetensors.
`events` (a model of event streams): the same plus task.json, the label selection inside labels.json and
input.json, how the events were read (the command line's options; a Python fit records the store's visit
gap). config.json holds the model's config, `model_name` (the registry name), `params` (the estimator's
settings, `get_params()` without the machine's device and the objects saved in their own files), the training
config, thresholds, history and lineage.
Directories written before there was one estimator load too: their settings are read from their configs.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path

import numpy as np

from ehrdx.artifacts import EntryError, json_kind
from ehrdx.data.preprocess import TablePreprocessor
from ehrdx.data.sequences import EventEncoder
from ehrdx.data.splits import SPLIT_RULE
from ehrdx.data.table import TableSchema
from ehrdx.errors import DataError, ModelError
from ehrdx.input_settings import check_saved
from ehrdx.models.registry import TABLE, get_model, model_names
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec
from ehrdx.train.loop import TrainConfig, TrainHistory
from ehrdx.train.settings import check_settings

NOT_SAVED = ("task", "labels", "device", "schema")  # in their own files, or the machine's
PARAMS_VERSION = 2  # 2: the one estimator's settings, as given; before: each classifier's own meaning


class Artifacts:
    """Mixed into the estimator: `artifact_parts()` for ehrdx.artifacts.save_model, `from_parts` for loading."""

    def artifact_parts(self) -> dict:
        config, state, model_files = get_model(self.model_name_).save(self.model_)
        params = {k: str(v) if isinstance(v, Path) else v for k, v in self.get_params().items() if k not in NOT_SAVED}
        params["context"] = self.context_  # the visits the model was fitted to read (not a setting changed since)
        if isinstance(self.schema, TableSchema):  # the roles the user gave (not the inferred ones)
            params["schema"] = self.schema.to_dict()
        common = {"model": config, "model_name": self.model_name_, "params": params, "params_version": PARAMS_VERSION,
                  # the rule of the seeded split its patients came from (a loaded or updated model keeps its own)
                  "split_rule": getattr(self, "split_rule_", SPLIT_RULE),
                  "train": self.train_config_.to_dict(), "thresholds": [float(t) for t in self.thresholds_],
                  "history": self.history_.to_artifact() if hasattr(self, "history_") else None,
                  **({"pretrained": self.pretrained_} if getattr(self, "pretrained_", None) else {})}
        json_files = {"preprocessing.json": self.encoder_.to_dict(), **model_files}
        if self.source_kind_ == TABLE:
            return {"family": "table", "json": {**json_files, "labels.json": self.label_vocab_.to_dict()},
                    "state": state, "config": common}
        json_files.update({"labels.json": {**self.label_vocab_.to_dict(), "selector": self.selector_.to_dict()},
                           "task.json": self.task_.to_dict()})
        if getattr(self, "input_", None):  # how the events were read (ehrdx.input_settings)
            json_files["input.json"] = self.input_
        return {"family": "events", "json": json_files, "state": state,
                "config": {**common, "lineage": getattr(self, "lineage_", None),
                           "infer_introduced": self.infer_introduced}}

    @classmethod
    def from_parts(cls, config: dict, files: dict[str, dict], state: dict):
        check_config(config, set(cls().get_params()))
        family = config.get("family", "table")
        model_cfg, train = config["model"], config["train"]
        name = config.get("model_name") or "mlp"  # table models before the registry were all MLPs
        params = dict(config.get("params") or params_of_older_model(config, files))
        # model=None meant the default of the version that trained it (gru for event streams before auto): the
        # loaded estimator names the model it has, so a copy (`update --compare`'s retraining) trains the same.
        params["model"] = params.get("model") or name
        if config.get("params_version") != PARAMS_VERSION:
            # Saved before the one estimator: what the model really used (events MLPs multiplied the batch size
            # by 4; layers None meant a default that now lives in the registry), so a copy trains the same.
            params["batch_size"] = train["batch_size"]
        if config.get("params_version") != PARAMS_VERSION and model_cfg.get("kind") in ("sequence", "mlp"):
            params["layers"] = model_cfg["layers"] if model_cfg["kind"] == "sequence" else model_cfg["depth"]
            params["hidden"] = model_cfg["hidden"]
        if params.get("schema"):
            params["schema"] = TableSchema.from_dict(params["schema"])
        check_labels(files["labels.json"].get("labels"))
        if family == "table":
            clf = cls(**params)
            clf.encoder_ = TablePreprocessor.from_dict(files["preprocessing.json"])
        else:
            task = read_task(files)
            params.setdefault("infer_introduced", bool(config.get("infer_introduced", False)))  # absent before it
            params.update(new_onset=task.new_onset, censor=task.censor)  # also when a TaskSpec was given whole
            selector = LabelSelector.from_dict(files["labels.json"]["selector"])
            # The selection as saved (a label map's file may be gone or changed since) makes selector_ below
            clf = cls(task=task.name, labels=selector, **params)
            clf.encoder_ = EventEncoder.from_dict(files["preprocessing.json"])
            check_codes(clf.encoder_.codes, model_cfg.get("n_codes"))
            if files.get("input.json"):
                check_saved(files["input.json"])
                clf.input_ = files["input.json"]
            if config.get("lineage"):
                clf.lineage_ = config["lineage"]
            if config.get("pretrained"):  # the encoder it came from (ehrdx train --init)
                clf.pretrained_ = config["pretrained"]
        clf.resolve_settings("table" if family == "table" else "events")
        if family != "table" and clf.selector_.spec:  # the setting as the user gave it ("map:FILE"): a refit
            clf.labels = clf.selector_.spec  # (clone, set_params) reads it again, as any fit of a setting does
        clf.context_ = clf.context  # saved as the model was fitted to read (artifact_parts)
        clf.split_rule_ = int(config.get("split_rule", 1))  # saved before rule 2: trained on rule 1's parts
        clf.model_name_ = name  # the saved one, whatever the default for model=None is today
        spec = get_model(name)
        clf.train_config_ = TrainConfig(**train)
        clf.label_vocab_ = LabelVocab.from_dict(files["labels.json"])
        clf.model_ = spec.load(model_cfg, state, files)
        clf.thresholds_ = np.asarray(config["thresholds"], dtype=np.float64)
        n_model = model_cfg.get("n_labels")
        sizes = {"labels.json": len(clf.label_vocab_), "config.json thresholds": len(clf.thresholds_)}
        if n_model is not None:
            sizes["config.json model.n_labels"] = int(n_model)
        if len(set(sizes.values())) > 1:  # an edited file: predictions would be written under wrong names
            raise ValueError("different numbers of labels: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        if config.get("history"):
            clf.history_ = TrainHistory(**config["history"])
        return clf


def params_of_older_model(config: dict, files: dict[str, dict]) -> dict:
    """Settings of a model saved before config.json kept them: from its model and train configs."""
    train, model_cfg = config["train"], config["model"]
    params = {"lr": train["lr"], "weight_decay": train["weight_decay"], "max_epochs": train["max_epochs"],
              "patience": train["patience"], "pos_weight": train["pos_weight"], "seed": train["seed"],
              "precision": train.get("precision", "auto")}
    if config.get("family", "table") == "table":
        params.update(code_dim=model_cfg.get("code_dim", 32), dropout=model_cfg["dropout"])
        return params
    task = read_task(files)
    params.update(model=config["model_name"], new_onset=task.new_onset, censor=task.censor,
                  min_code_count=files["preprocessing.json"].get("min_count", 1))
    if model_cfg.get("kind") in ("sequence", "mlp"):
        params["dropout"] = model_cfg["dropout"]
    if model_cfg.get("kind") == "sequence":
        params["heads"] = model_cfg["heads"]
    return params


# config.json's entries: (kind, required). Checked before anything is built from them: an entry edited to
# another kind was a traceback deep in loading, a threshold above 1 a model that never predicts a label.
ENTRIES = {"model": (dict, True), "train": (dict, True), "thresholds": (list, True), "model_name": (str, False),
           "params": (dict, False), "history": (dict, False), "lineage": (dict, False), "pretrained": (dict, False)}
KIND_NAMES = {dict: "an object {...}", list: "a list [...]", str: "text"}


def check_config(config: dict, setting_names: set[str]) -> None:
    """Raise EntryError naming the first entry of config.json that ehrdx did not write so (`setting_names`: the
    estimator's settings, what `params` may hold). Entries it does not read (an added note) are left alone."""
    for key, (kind, required) in ENTRIES.items():
        value = config.get(key)
        if value is None and not required:
            continue
        if not isinstance(value, kind):
            raise EntryError("config.json", key, f"missing, where {KIND_NAMES[kind]} is expected" if key not in config
                             else f"{json_kind(value)}, where {KIND_NAMES[kind]} is expected")
    bad = [t for t in config["thresholds"] if not _is_number(t) or not 0 <= t <= 1]  # NaN too
    if bad:
        raise EntryError("config.json", "thresholds", f"{json_kind(bad[0])} among them, where each label's threshold "
                         "is a probability from 0 to 1")
    name = config.get("model_name")
    if name is None and config.get("family") == "events":  # only table models were saved without it (all MLPs)
        raise EntryError("config.json", "model_name", "missing, where the name of the model is expected")
    if name is not None and name not in model_names():
        raise EntryError("config.json", "model_name", f"{name!r} is not a model of this ehrdx (known: "
                         f"{', '.join(model_names())})")
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key, value in config["train"].items():
        if key not in fields:
            raise EntryError("config.json", f"train.{key}", "not a training setting of this ehrdx (known: "
                             f"{', '.join(fields)})")
        expected = type(fields[key])
        if not (isinstance(value, bool) if expected is bool else _is_number(value) if expected in (int, float)
                else isinstance(value, expected)):
            raise EntryError("config.json", f"train.{key}", f"{json_kind(value)}, where "
                             f"{'true or false' if expected is bool else 'a number' if expected in (int, float) else 'text'}"
                             " is expected")
    params = config.get("params") or {}
    unknown = sorted(set(params) - setting_names)
    if unknown:
        raise EntryError("config.json", f"params.{unknown[0]}", "not a setting of this ehrdx (EHRClassifier's "
                         "settings: EHRClassifier().get_params())")
    if config.get("params") is not None and config.get("params_version") == PARAMS_VERSION:
        try:
            check_settings(params, params.get("init"))
        except ModelError as exc:
            raise EntryError("config.json", "params", str(exc).splitlines()[0]) from None


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def read_task(files: dict[str, dict]) -> TaskSpec:
    try:
        return TaskSpec.from_dict(files["task.json"])
    except DataError as exc:  # said of an option (--task) when parsed from the command line
        raise EntryError("task.json", "task", exc.problem) from None


def check_labels(labels: object) -> None:
    """labels.json `labels`: distinct names (predictions are written under them)."""
    if not isinstance(labels, list):
        raise EntryError("labels.json", "labels", f"{json_kind(labels)}, where a list of label names is expected")
    odd = [lab for lab in labels if not isinstance(lab, str)]
    if odd:
        raise EntryError("labels.json", "labels", f"{json_kind(odd[0])} among them, where each label's name is text")
    if len(set(labels)) != len(labels):
        raise EntryError("labels.json", "labels", "a label is named twice")


def check_codes(codes: list, n_codes: object) -> None:
    """preprocessing.json `codes`: distinct code names, one per input row of the model (and the unknown code)."""
    if not all(isinstance(code, str) for code in codes) or len(set(codes)) != len(codes):
        raise EntryError("preprocessing.json", "codes", "a code that is not text, or one named twice")
    if n_codes is not None and n_codes != len(codes) + 1:
        raise EntryError("preprocessing.json", "codes", f"{len(codes):,} codes for a model of {n_codes} inputs "
                         "(the codes and the unknown code)")
