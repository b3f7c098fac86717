"""Resume after a crash: a run killed with SIGKILL mid-training continues from its last complete epoch
and ends with the same weights and metrics as a run that was never interrupted."""

import json
import os
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


def _cmd(paths, out, *extra):
    return [sys.executable, "-m", "ehrdx", "train", "--meds", str(paths["meds"]), "--labels",
            f"map:{paths['label_map']}", "--epochs", "8", "--patience", "20", "--hidden", "32", "--device", "cpu",
            "--out", str(out), *extra]


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
