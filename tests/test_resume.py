"""Resume after a crash: a run killed with SIGKILL mid-training continues from its last complete epoch
and ends with the same weights and metrics as a run that was never interrupted. gbm resumes from its fitted
model; auto from its fitted gbm member and its GRU member's last complete epoch."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import ModelError
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    paths = write_longitudinal(generate_longitudinal(1500, seed=7), out / "c")
    return out, paths


@pytest.fixture(scope="module")
def opened(cohort):
    """The cohort's store and its training and validation rows, opened once for the tests that fit in-process."""
    tmp, paths = cohort
    store = open_store(meds=paths["meds"], store_dir=tmp / "store")
    tr, va, _ = patient_splits(store, paths["meds"], 0)
    return store, tr, va


def _run(cmd):
    return subprocess.run(cmd, check=False, env=ENV, capture_output=True, text=True, timeout=600)


def _cmd(paths, out, *extra, model="gru", epochs="8"):
    return [sys.executable, "-m", "ehrdx", "train", "--meds", str(paths["meds"]), "--labels",
            f"map:{paths['label_map']}", "--model", model, "--epochs", epochs, "--patience", "20", "--hidden", "32",
            "--device", "cpu", "--out", str(out), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(cohort):
    tmp, paths = cohort
    whole = _run(_cmd(paths, tmp / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed_dir = tmp / "killed"
    proc = subprocess.Popen(_cmd(paths, killed_dir), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = killed_dir / "checkpoint" / "checkpoint.json"
    deadline = time.monotonic() + 300
    epochs_done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if meta.exists():
            try:
                epochs_done = json.loads(meta.read_text())["epoch"] + 1
            except (json.JSONDecodeError, OSError):  # pragma: no cover - the write is atomic
                epochs_done = 0
            if epochs_done >= 2:
                break
        time.sleep(0.005)
    time.sleep(0.05)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed_dir / "config.json").exists()  # no model was saved
    done_at_kill = json.loads(meta.read_text())["epoch"] + 1
    assert 2 <= done_at_kill < 8

    resumed = _run(_cmd(paths, killed_dir, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from the checkpoint after epoch {done_at_kill}" in resumed.stdout
    assert (whole_w := (tmp / "whole" / "model.safetensors").read_bytes()) == (killed_dir / "model.safetensors").read_bytes()
    assert len(whole_w) > 1000
    m1 = json.loads((tmp / "whole" / "metrics.json").read_text())
    m2 = json.loads((killed_dir / "metrics.json").read_text())
    assert m1["test"] == m2["test"] and m1["test_new_onset"] == m2["test_new_onset"]
    assert m1["history"]["train_loss"] == m2["history"]["train_loss"]
    assert m1["history"]["val_loss"] == m2["history"]["val_loss"]
    assert m2["history"]["resumed_after_epoch"] == done_at_kill
    assert not (killed_dir / "checkpoint").exists()  # removed once the model is saved


def test_a_checkpoint_from_other_data_or_tampered_is_refused(cohort, opened):
    tmp, paths = cohort
    store, tr, va = opened
    ckpt = tmp / "ckpt"

    def fit(rows, resume):
        clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=16, max_epochs=2, seed=0)
        return clf.fit(store, rows, va, checkpoint=ckpt, resume=resume)

    first = fit(tr, False)
    assert (ckpt / "checkpoint.json").exists()
    again = fit(tr, True)  # finished run: nothing left to train, same weights
    assert again.history_.resumed_after_epoch == 2
    for k, v in first.model_.state_dict().items():
        assert np.array_equal(again.model_.state_dict()[k].numpy(), v.numpy())
    with pytest.raises(ModelError, match="different run.*data"):
        fit(tr[:-50], True)
    raw = bytearray((ckpt / "checkpoint.safetensors").read_bytes())
    raw[-10] ^= 0xFF
    (ckpt / "checkpoint.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="does not match"):
        fit(tr, True)
    fresh = fit(tr, False)  # without --resume a damaged checkpoint is replaced, not read
    assert fresh.history_.resumed_after_epoch is None


def test_a_checkpoint_is_not_resumed_with_another_context(cohort, opened):
    tmp, paths = cohort
    store, tr, va = opened
    ckpt = tmp / "ckpt_ctx"

    def fit(context, resume):
        clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=16, max_epochs=1, seed=0,
                              context=context)
        return clf.fit(store, tr, va, checkpoint=ckpt, resume=resume)

    fit(3, False)
    assert fit(3, True).history_.resumed_after_epoch == 1  # the same windows: resumed
    with pytest.raises(ModelError, match="different run"):
        fit(5, True)  # other windows, the same model config otherwise


def _kill_when(cmd, ready, timeout=300):
    """Start `cmd`, SIGKILL it as soon as `ready()` holds (polled); assert it was killed, not finished."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A smaller cohort and its opened store, for the gbm and auto runs (a booster per label)."""
    out = tmp_path_factory.mktemp("resume_small")
    paths = write_longitudinal(generate_longitudinal(500, seed=3), out / "c")
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    return out, paths, store, patient_splits(store, paths["meds"], 0)


def _epoch_of(meta):
    try:
        return json.loads(meta.read_text())["epoch"] + 1
    except (OSError, json.JSONDecodeError, KeyError):
        return 0


def test_auto_killed_after_a_gru_epoch_resumes_from_both_members(small):
    """SIGKILL once the gbm member is checkpointed and the GRU member has a complete epoch: the resumed run
    reads the gbm member (not fitted again), continues the GRU, and ends with the same model and metrics."""
    tmp, paths, _store, _ = small
    args = {"model": "auto", "epochs": "4"}
    store_opt = ("--store", str(tmp / "cli_store"))
    whole = _run(_cmd(paths, tmp / "auto_whole", *store_opt, **args))
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = tmp / "auto_killed"
    ckpt = killed / "checkpoint"
    _kill_when(_cmd(paths, killed, *store_opt, **args), lambda: _epoch_of(ckpt / "gru" / "checkpoint.json") >= 1)
    assert (ckpt / "gbm" / "fitted.json").exists() and (ckpt / "gbm-counts" / "fitted.json").exists()
    assert (ckpt / "auto.json").exists()
    assert not (killed / "config.json").exists()
    done = _epoch_of(ckpt / "gru" / "checkpoint.json")
    assert 1 <= done < 4
    resumed = _run(_cmd(paths, killed, *store_opt, "--resume", **args))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (f"resumed from the checkpoint: gbm fitted, read from the checkpoint; gru after epoch {done}; "
            "gbm-counts fitted, read from the checkpoint" in " ".join(resumed.stdout.split()))
    # The same CPU, threads and steps: the resumed GRU ends with the same weights (as for --model gru), the gbm
    # member is the model text it wrote, so the model files and metrics are equal.
    for name in ("model.safetensors", "gbm.gbm.json", "gbm-counts.gbm.json"):
        assert (tmp / "auto_whole" / name).read_bytes() == (killed / name).read_bytes(), name
    m1 = json.loads((tmp / "auto_whole" / "metrics.json").read_text())
    m2 = json.loads((killed / "metrics.json").read_text())
    assert m1["test"] == m2["test"] and m1["candidates"] == m2["candidates"] and m1["ensemble"] == m2["ensemble"]
    assert m2["history"]["resumed_after_epoch"] == done and m1["history"]["val_loss"] == m2["history"]["val_loss"]
    assert not ckpt.exists()


class Interrupted(Exception):
    pass


def _stop_at(epoch):
    def on_epoch(e, *_):
        if e == epoch:
            raise Interrupted  # before epoch `e` is checkpointed: `e` complete epochs in the checkpoint
    return on_epoch


def test_auto_resumes_after_the_gbm_member_and_after_gru_epoch_one_to_the_same_probabilities(small, monkeypatch):
    tmp, paths, store, (tr, va, te) = small

    def fit(ckpt=None, resume=False, on_epoch=None, hidden=16, **kw):
        kw = {"gbm_params": {"learning_rate": 0.2}, **kw}  # fewer rounds: a faster test, the same paths
        clf = EventClassifier(model="auto", labels=f"map:{paths['label_map']}", hidden=hidden, max_epochs=3, seed=0,
                              **kw)
        return clf.fit(store, tr, va, checkpoint=ckpt, resume=resume, on_epoch=on_epoch)

    whole = fit()
    s = whole.samples(store, te)
    p_whole = whole.predict_samples(store, s)
    after_gru, after_gbm = tmp / "auto_ckpt_1", tmp / "auto_ckpt_0"
    with pytest.raises(Interrupted):
        fit(after_gru, on_epoch=_stop_at(1))  # stopped after GRU epoch 1 (the gbm member checkpointed before)
    assert _epoch_of(after_gru / "gru" / "checkpoint.json") == 1
    shutil.copytree(after_gru, after_gbm)
    shutil.rmtree(after_gbm / "gru")  # as if stopped after the gbm members, before a GRU epoch was complete
    fitted = {"gbm": "fitted, read from the checkpoint", "gbm-counts": "fitted, read from the checkpoint"}
    for ckpt, note in ((after_gbm, fitted), (after_gru, {**fitted, "gru": "after epoch 1"})):
        with monkeypatch.context() as m:
            m.setattr("ehrdx.models.gbm.HistoryGBM.fit_sets", _never)
            back = fit(ckpt, resume=True)
        assert back.model_.resumed == note and back.history_.resumed_after_epoch == int("gru" in note)
        # The same CPU, thread count and steps: equal in practice (0.0); 1e-6 allows for nothing but rounding.
        np.testing.assert_allclose(back.predict_samples(store, s), p_whole, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(back.model_.weights, whole.model_.weights)
    with pytest.raises(ModelError, match=r"auto.json: .*different run \(gbm_params differ"):
        fit(after_gru, resume=True, gbm_params={"learning_rate": 0.2, "num_leaves": 7})  # the ensemble's own settings
    with pytest.raises(ModelError, match=r"gru.checkpoint.json: .*different run \(model differ"):
        fit(after_gru, resume=True, hidden=8)  # the GRU member's


def _never(*_args, **_kw):
    raise AssertionError("the model was fitted again instead of read from its checkpoint")


def test_gbm_resumes_from_its_fitted_model_and_refuses_another_run_or_a_damaged_one(small, monkeypatch):
    tmp, paths, store, (tr, va, te) = small
    ckpt = tmp / "gbm_ckpt"

    def fit(rows=tr, resume=False, seed=0, **kw):
        clf = EventClassifier(model="gbm", labels=f"map:{paths['label_map']}", seed=seed, **kw)
        return clf.fit(store, rows, va, checkpoint=ckpt, resume=resume)

    first = fit()
    saved = json.loads((ckpt / "fitted.json").read_text())
    assert any("tree" in label.get("model", "") for label in saved["files"]["gbm.json"]["model"]["labels"])
    with monkeypatch.context() as m:
        m.setattr("ehrdx.models.gbm.HistoryGBM.fit_sets", _never)
        again = fit(resume=True)
    assert again.history_.resumed_after_epoch == 1
    s = first.samples(store, te)
    np.testing.assert_array_equal(again.predict_samples(store, s), first.predict_samples(store, s))  # same trees
    with pytest.raises(ModelError, match="different run.*data"):
        fit(tr[:-20], resume=True)
    with pytest.raises(ModelError, match="different run.*settings"):
        fit(resume=True, gbm_params={"num_leaves": 7})
    with pytest.raises(ModelError, match="different run.*seed"):
        fit(resume=True, seed=1)
    saved["files"]["gbm.json"]["model"]["labels"][0]["positives"] += 1
    (ckpt / "fitted.json").write_text(json.dumps(saved))
    with pytest.raises(ModelError, match="does not match its digest"):
        fit(resume=True)
    assert fit().history_.resumed_after_epoch is None  # without --resume: fitted afresh, the damaged one replaced


def test_a_fitted_logistic_model_resumes_from_its_tensors_on_a_table(seed_table_path, tmp_path, monkeypatch):
    """The same FittedCheckpoint for any model that fits itself; logistic keeps its weights in safetensors."""
    from ehrdx.estimator import EHRClassifier

    first = EHRClassifier(model="logistic", seed=0).fit(seed_table_path, checkpoint=tmp_path)
    assert (tmp_path / "fitted.safetensors").exists()
    with monkeypatch.context() as m:
        m.setattr("ehrdx.models.baselines.LogisticBaseline.fit_sets", _never)
        back = EHRClassifier(model="logistic", seed=0).fit(seed_table_path, checkpoint=tmp_path, resume=True)
    np.testing.assert_array_equal(back.model_.coef, first.model_.coef)
    raw = bytearray((tmp_path / "fitted.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "fitted.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="does not match"):
        EHRClassifier(model="logistic", seed=0).fit(seed_table_path, checkpoint=tmp_path, resume=True)
