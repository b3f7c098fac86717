"""Model directories on disk: truncated, foreign or half-written files never load as a model."""

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import ehrdx
from ehrdx import artifacts
from ehrdx.data.table import table_from_frame
from ehrdx.errors import ModelError
from ehrdx.estimator import EHRClassifier


@pytest.fixture(scope="module")
def models(small_cohort):
    table = table_from_frame(small_cohort.table)
    a = EHRClassifier(hidden=16, layers=1, max_epochs=2, seed=0).fit(table)
    b = EHRClassifier(hidden=16, layers=1, max_epochs=2, seed=1).fit(table)
    return table, a, b


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_truncated_weights_and_broken_config_are_refused(models, tmp_path):
    _, a, _ = models
    d = a.save(tmp_path / "m")
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelError, match="model.safetensors: checksum does not match"):
        ehrdx.load(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json: not a readable JSON file"):
        ehrdx.load(d)


def test_foreign_weights_with_a_matching_checksum_are_refused(models, tmp_path):
    _, a, _ = models
    d = a.save(tmp_path / "m")
    save_file({"layer.weight": torch.zeros(3, 3)}, str(d / "model.safetensors"))
    config = json.loads((d / "config.json").read_text())
    config["sha256"]["model.safetensors"] = _sha(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not fit together"):
        ehrdx.load(d)
    (d / "model.safetensors").write_bytes(b"\x80\x04 a pickle is not a model")
    config["sha256"]["model.safetensors"] = _sha(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        ehrdx.load(d)


@pytest.mark.parametrize("crash_at", ["weights", "config"])
def test_a_crash_while_overwriting_never_leaves_a_model_that_loads_wrong(models, tmp_path, monkeypatch, crash_at):
    table, a, b = models
    d = a.save(tmp_path / "m")
    expected = a.predict_proba(table)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(artifacts, "atomic_save_tensors" if crash_at == "weights" else "atomic_write_json",
                        crash if crash_at == "weights" else _crash_on_config(artifacts.atomic_write_json, crash))
    with pytest.raises(KeyboardInterrupt):
        b.save(d)
    monkeypatch.undo()
    try:
        loaded = ehrdx.load(d)
    except ModelError:
        return  # refused: fine
    # if it loads, it is model a, whole: old config and old weights together
    np.testing.assert_allclose(loaded.predict_proba(table), expected, atol=1e-6)


def _crash_on_config(real, crash):
    def write(path, obj):
        if str(path).endswith("config.json"):
            crash()
        real(path, obj)
    return write


def test_loading_finds_the_classifier_through_the_family_registry(models, tmp_path, monkeypatch):
    """artifacts imports no classifier: a family registered by its module is what reads a directory back."""
    _, a, _ = models
    d = a.save(tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "family": "toy"}))
    with pytest.raises(ModelError, match=r"unknown model family 'toy' \(known: events, table;"):
        ehrdx.load(d)
    seen = {}

    def toy_loader(config, files, state):
        seen.update(family=config["family"], files=sorted(files), tensors=len(state))
        return "a toy model"

    monkeypatch.setitem(artifacts.FAMILIES, "toy", artifacts.Family(("labels.json", "model.safetensors"), toy_loader))
    assert ehrdx.load(d) == "a toy model"
    assert seen == {"family": "toy", "files": ["labels.json", "preprocessing.json"],
                    "tensors": len(a.model_.state_dict())}
    (d / "labels.json").unlink()
    with pytest.raises(ModelError, match="missing labels.json"):
        ehrdx.load(d)
