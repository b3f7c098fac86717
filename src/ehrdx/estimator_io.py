"""The estimator's model directory: what it saves and how it is read back, for both families.

`table` (a model of a patient table): preprocessing.json (the table encoder), labels.json, model.safetensors.
`events` (a model of event streams): the same plus task.json, the label selection inside labels.json and,
when the command line recorded how the events were read, input.json. config.json holds the model's config,
`model_name` (the registry name), `params` (the estimator's settings, `get_params()` without the machine's
device and the objects saved in their own files), the training config, thresholds, history and lineage.
Directories written before there was one estimator load too: their settings are read from their configs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ehrdx.data.preprocess import TablePreprocessor
from ehrdx.data.sequences import EventEncoder
from ehrdx.data.splits import SPLIT_RULE
from ehrdx.data.table import TableSchema
from ehrdx.models.registry import TABLE, get_model
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec
from ehrdx.train.loop import TrainConfig, TrainHistory

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
        if family == "table":
            clf = cls(**params)
            clf.encoder_ = TablePreprocessor.from_dict(files["preprocessing.json"])
        else:
            task = TaskSpec.from_dict(files["task.json"])
            params.setdefault("infer_introduced", bool(config.get("infer_introduced", False)))  # absent before it
            params.update(new_onset=task.new_onset, censor=task.censor)  # also when a TaskSpec was given whole
            selector = LabelSelector.from_dict(files["labels.json"]["selector"])
            # The selection as saved (a label map's file may be gone or changed since) makes selector_ below
            clf = cls(task=task.name, labels=selector, **params)
            clf.encoder_ = EventEncoder.from_dict(files["preprocessing.json"])
            if files.get("input.json"):
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
    task = TaskSpec.from_dict(files["task.json"])
    params.update(model=config["model_name"], new_onset=task.new_onset, censor=task.censor,
                  min_code_count=files["preprocessing.json"].get("min_count", 1))
    if model_cfg.get("kind") in ("sequence", "mlp"):
        params["dropout"] = model_cfg["dropout"]
    if model_cfg.get("kind") == "sequence":
        params["heads"] = model_cfg["heads"]
    return params
