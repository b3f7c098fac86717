"""`--model auto` from a pretrained encoder (ehrdx train --init ENC --model auto): the ensemble's network member
is the encoder's model, started from its weights; every member reads the encoder's vocabulary."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ehrdx
import ehrdx.train.ensemble
from ehrdx.cli import app
from ehrdx.errors import DataError
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import patient_splits
from ehrdx.tasks.task import codes_of_labels
from ehrdx.update import update_model


@pytest.fixture(scope="module")
def data(pretrained_cohort):
    return pretrained_cohort("pretrain_auto", 400, 2)


def _auto(data, kind="gru", **kw) -> EHRClassifier:
    return EHRClassifier(model="auto", labels=f"map:{data['paths']['label_map']}", init=str(data["out"] / kind),
                         hidden=None, heads=None, **kw)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_auto_from_an_encoder_starts_its_network_member_from_the_encoder(data, kind):
    store, (tr, va, _), enc = data["store"], data["splits"], data["encoders"][kind]
    clf = _auto(data, kind, max_epochs=0).fit(store, tr, va)
    assert clf.model_name_ == "auto" and clf.model_.names == ("gbm", kind, "gbm-counts")
    assert clf.encoder_.codes == enc.input_encoder.codes  # one vocabulary for every member
    net = clf.model_.members[kind]
    assert net.config.encoder == kind and net.config.hidden == 16
    body = net.body_state()
    assert set(body) == {k for k in enc.state if not k.startswith("head.")}
    for k, v in body.items():
        assert torch.equal(v, enc.state[k]), k
    # each label's row from the pretrained rows of its codes, as a single model from the encoder starts
    index, W = {c: i for i, c in enumerate(enc.targets)}, enc.state["head.label_embedding"]
    codes, rows = codes_of_labels(store, clf.selector_, tr), net.head.rows().detach()
    started = 0
    for j, lab in enumerate(clf.labels_):
        ids = [index[c] for c in codes[lab] if c in index]
        if ids:
            torch.testing.assert_close(rows[j], W[ids].mean(0))
            started += 1
    assert started > 0 and clf.pretrained_["labels_from_encoder"] == started
    assert clf.fit_summary_["pretrained"]["labels_from_encoder"] == started
    assert clf.model_.start_network is None  # the encoder is not kept with the model
    # the boosters read the encoder's vocabulary: history features of its codes, and they score
    assert set(clf.model_.members["gbm"].featurizer.codes_) <= set(enc.input_encoder.codes)
    p = clf.predict_samples(store, clf.samples(store, va))
    assert p.shape[1] == len(clf.labels_) and np.isfinite(p).all()


def test_auto_probe_freezes_the_network_body_and_saves_and_loads_the_same(data, tmp_path):
    store, (tr, va, te), enc = data["store"], data["splits"], data["encoders"]["gru"]
    clf = _auto(data, probe=True, max_epochs=2).fit(store, tr, va)
    net = clf.model_.members["gru"]
    for k, v in net.body_state().items():
        assert torch.equal(v, enc.state[k]), k  # frozen
    assert clf.history_.steps > 0 and all(p.requires_grad for p in net.parameters())  # trainable again
    fresh = EHRClassifier(model="auto", labels=clf.labels, hidden=16, max_epochs=1, seed=0).fit(store, tr, va)
    assert not torch.equal(fresh.model_.members["gru"].code_embedding.weight, net.code_embedding.weight)
    clf.save(tmp_path / "m")
    back = ehrdx.load(tmp_path / "m")
    s = clf.samples(store, te)
    # the same members and weights on the same inputs in one process: the same numbers
    np.testing.assert_array_equal(back.predict_samples(store, s), clf.predict_samples(store, s))
    assert back.model_.names == ("gbm", "gru", "gbm-counts") and back.init == str(data["out"] / "gru")
    assert back.pretrained_ == clf.pretrained_ and back.pretrained_["probe"]
    assert torch.equal(back.model_.members["gru"].pretrained_rows, enc.state["head.label_embedding"])
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["pretrained"]["directory"] == str(data["out"] / "gru")


def test_an_auto_update_starts_the_network_members_new_rows_from_the_pretrained_rows(data, monkeypatch):
    meds, enc = data["paths"]["meds"], data["encoders"]["gru"]
    otr, ova, _ = patient_splits(data["old_store"], meds, 0)
    old = _auto(data, max_epochs=1).fit(data["old_store"], otr, ova)
    seen = {}
    real = ehrdx.train.ensemble.probe_new_rows

    def spy(*args, start=None, **kwargs):
        seen["start"] = start
        return real(*args, start=start, **kwargs)

    monkeypatch.setattr(ehrdx.train.ensemble, "probe_new_rows", spy)
    new, report = update_model(old, data["store"], data["splits"], epochs=0)
    rows, bias, found = seen["start"]
    index = {code: i for i, code in enumerate(enc.targets)}
    W, b = enc.state["head.label_embedding"], enc.state["head.label_bias"]
    assert "U07.1" in report["added"] and found.any()
    for j, lab in enumerate(report["added"]):
        ids = [index[c] for c in new.label_vocab_.info[lab]["codes"] if c in index]
        assert bool(found[j]) == bool(ids)
        if ids:  # the mean of the rows of the codes that define the label
            torch.testing.assert_close(rows[j], W[ids].mean(0))
            torch.testing.assert_close(bias[j], b[ids].mean())
        assert report["init"][lab] == ("fit (network member: pretrained+probe)" if ids else "fit")
    assert len(new.labels_) == len(old.labels_) + len(report["added"])
    assert new.model_.weights.shape == (len(new.labels_), 3)
    # the update's own split is checked against the encoder's patients, read again from its directory
    tr, va, te = data["splits"]
    with pytest.raises(DataError, match=f"{len(tr)} of this run's {len(tr)} test patients were pretraining"):
        update_model(old, data["store"], (te, va, tr), epochs=0)


def test_auto_refuses_validation_patients_the_encoder_trained_on(data):
    store, (tr, va, te) = data["store"], data["splits"]
    with pytest.raises(DataError, match=f"{len(tr)} of this run's {len(tr)} validation patients were pretraining"):
        _auto(data, max_epochs=0).fit(store, te, tr)
    with pytest.raises(DataError, match="hidden 32 .encoder 16."):
        EHRClassifier(model="auto", labels=f"map:{data['paths']['label_map']}", init=str(data["out"] / "gru"),
                      hidden=32).fit(store, tr, va)


def test_the_command_line_trains_auto_from_an_encoder(data, tmp_path):
    r = CliRunner().invoke(app, ["train", "--meds", str(data["paths"]["meds"]), "--labels",
                                 f"map:{data['paths']['label_map']}", "--out", str(tmp_path / "m"), "--init",
                                 str(data["out"] / "gru"), "--model", "auto", "--probe", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # the console wraps long lines
    assert "auto's gru member" in text and "labels started from the pretrained rows" in text
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"]["members"] == ["gbm", "gru", "gbm-counts"] and config["model"]["member_configs"][
        "gru"]["hidden"] == 16
    assert config["pretrained"]["probe"] and config["pretrained"]["labels_from_encoder"] > 0
