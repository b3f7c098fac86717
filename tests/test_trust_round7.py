"""Trust, round 7 (session s14): defects earlier reviews found and left open: a resume with other options refused
before the data is read, ..."""

import json

import pytest

from cli_run import GOLDEN, run, words
from ehrdx import EHRClassifier

# -- train --resume with other options: refused before the events are read ---------------------------------

def _train_args(out, *extra):
    return ("train", "--meds", GOLDEN / "meds", "--labels", f"map:{GOLDEN / 'label_map.csv'}", "--model", "logistic",
            "--out", out, *extra)


class Stopped(Exception):
    pass


def _stop(*args, **kwargs):
    raise Stopped


def _stopped_before_saving(monkeypatch, *args):
    """Train, stopped after fitting, before the model is saved: the checkpoint stays in OUT/checkpoint."""
    with monkeypatch.context() as patch:
        patch.setattr(EHRClassifier, "save", _stop)
        r = run(*args)
    assert isinstance(r.exception, Stopped), r.output


@pytest.fixture
def stopped_run(tmp_path, monkeypatch):
    _stopped_before_saving(monkeypatch, *_train_args(tmp_path / "m"))
    assert (tmp_path / "m" / "checkpoint").is_dir()
    return tmp_path / "m"


def test_a_resume_with_other_options_is_refused_before_the_events_are_read(stopped_run):
    """`train --resume --seed 1` on a checkpoint of seed 0 built the event store, showed the training bar and
    then said "the checkpoint is from a different run (settings differ)". It is refused first, naming the option
    with both values."""
    r = run(*_train_args(stopped_run, "--resume", "--seed", 1))
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "the checkpoint is from a run with other options (--seed 0 there, 1 now)" in said
    assert "leave out --resume to start afresh" in said
    assert "event store:" not in r.output and "training" not in r.output and "Traceback" not in r.output


def test_a_resume_with_the_same_options_resumes_and_a_fresh_run_replaces_the_checkpoint(stopped_run):
    r = run(*_train_args(stopped_run, "--resume"))
    assert r.exit_code == 0, r.output
    assert "resumed: the fitted model was read from the checkpoint" in words(r.output)
    assert not (stopped_run / "checkpoint").exists()  # removed once the model is saved


def test_a_run_without_resume_replaces_a_checkpoint_of_other_options(stopped_run, monkeypatch):
    _stopped_before_saving(monkeypatch, *_train_args(stopped_run, "--seed", 1))
    options = json.loads((stopped_run / "checkpoint" / "run.json").read_text())["options"]
    assert options["--seed"] == 1
