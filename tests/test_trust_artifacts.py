"""Trust, saved models: a model directory copied short, edited by hand or pointed at the wrong place ends in one
error naming the file, the entry and the fix (exit 2 on the command line), and no command writes over a
directory it reads. Uses the golden fixtures read-only: what a test changes is a copy in tmp_path."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import ehrdx
from cli_run import GOLDEN, run, words
from ehrdx.errors import ModelError


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under `path`: what 'unchanged' means."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def assert_clean_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    for needle in needles:
        assert needle in r.output, (needle, r.output)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> dict:
    """The golden MEDS dataset and a small encoder pretrained on it (ehrdx pretrain)."""
    out = tmp_path_factory.mktemp("encoder")
    shutil.copytree(GOLDEN / "meds", out / "meds")
    r = run("pretrain", "--meds", out / "meds", "--out", out / "enc", "--hidden", 8, "--epochs", 1)
    assert r.exit_code == 0, r.output
    return {"meds": out / "meds", "enc": out / "enc"}


# --- The encoder a model starts from is an input: never written over ----------------------------------------
@pytest.mark.parametrize("where", ["enc", "enc/model"])
def test_train_refuses_an_output_over_or_inside_its_init_encoder(encoder, where):
    before = digest(encoder["enc"])
    r = run("train", "--meds", encoder["meds"], "--model", "gru", "--init", encoder["enc"], "--epochs", 1,
            "--out", encoder["enc"].parent / where)
    assert_clean_error(r, "the input pretrained encoder (--init)")
    assert digest(encoder["enc"]) == before


def test_update_refuses_an_output_over_the_encoder_its_model_started_from(encoder, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(GOLDEN / "gru_model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "pretrained": {"directory": str(encoder["enc"])}}))
    before = digest(encoder["enc"])
    r = run("update", "--meds", encoder["meds"], "--model", model, "--out", encoder["enc"])
    assert_clean_error(r, "the input pretrained encoder of --model")
    assert digest(encoder["enc"]) == before


def test_a_model_is_not_saved_over_the_encoder_it_started_from(encoder):
    clf = ehrdx.load(GOLDEN / "gru_model")
    clf.pretrained_ = {"directory": str(encoder["enc"])}
    before = digest(encoder["enc"])
    with pytest.raises(ModelError, match="the pretrained encoder the model started from"):
        clf.save(encoder["enc"])
    assert digest(encoder["enc"]) == before


# --- config.json edited by hand: the entry is named, never a traceback or a model that loads wrong --------------
@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> Path:
    """A small MLP of the golden table, saved as this version saves it (with its settings, `params`)."""
    out = tmp_path_factory.mktemp("table_model")
    ehrdx.EHRClassifier(hidden=8, max_epochs=1).fit(GOLDEN / "table.csv").save(out / "model")
    return out / "model"


def _edited(model: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(model, copy)
    config = json.loads((copy / "config.json").read_text())
    result = edit(config)
    (copy / "config.json").write_text(json.dumps(config if result is None else result))
    return copy


@pytest.mark.parametrize("edit, said", [
    (lambda c: [c], "config.json: a list, where a JSON object {...} is expected"),
    (lambda c: c.update(thresholds=[5.0] * len(c["thresholds"])), "config.json: thresholds: the number 5.0"),
    (lambda c: c["thresholds"].__setitem__(0, None), "config.json: thresholds: null among them"),
    (lambda c: c.update(thresholds="0.5"), "config.json: thresholds: text ('0.5'), where a list"),
    (lambda c: c.update(model=[1]), "config.json: model: a list, where an object"),
    (lambda c: c.pop("train") and None, "config.json: train: missing"),
    (lambda c: c["train"].update(lr="fast"), "config.json: train.lr: text ('fast'), where a number"),
    (lambda c: c["train"].update(speed=2), "config.json: train.speed: not a training setting"),
    (lambda c: c["params"].update(hidden="sixteen"), "config.json: params: settings out of range: hidden='sixteen'"),
    (lambda c: c["params"].update(colour="red"), "config.json: params.colour: not a setting of this ehrdx"),
    (lambda c: c.update(model_name="xgboost"), "config.json: model_name: 'xgboost' is not a model of this ehrdx"),
    (lambda c: c.update(family=["table"]), "config.json: unknown model family ['table']"),
    (lambda c: c.update(sha256="abc"), "config.json: sha256 is text ('abc')"),
    (lambda c: c["sha256"].update({"../labels.json": "0" * 64}), "sha256 names '../labels.json', which is not a file"),
    (lambda c: c.update(pretrained="enc"), "config.json: pretrained: text ('enc'), where an object"),
    (lambda c: c.update(format_version="1"), "config.json: format_version is text ('1')"),
])
def test_a_hand_edited_config_is_refused_naming_the_entry_and_the_fix(table_model, tmp_path, edit, said):
    r = run("predict", GOLDEN / "table.csv", "--model", _edited(table_model, tmp_path, edit), "--out",
            tmp_path / "p.csv")
    assert_clean_error(r, said, "fix: use the model directory as ehrdx wrote it")
    assert not (tmp_path / "p.csv").exists()


def test_a_model_from_a_newer_ehrdx_says_to_upgrade(table_model, tmp_path):
    edited = _edited(table_model, tmp_path, lambda c: c.update(format_version=2, ehrdx_version="9.0.0"))
    r = run("predict", GOLDEN / "table.csv", "--model", edited, "--out", tmp_path / "p.csv")
    assert_clean_error(r, "model format 2 (written by ehrdx 9.0.0) is newer than this ehrdx", "fix: upgrade ehrdx")


def test_a_note_added_to_the_config_and_a_newer_ehrdx_version_of_the_same_format_still_load(table_model, tmp_path):
    edited = _edited(table_model, tmp_path, lambda c: c.update(note="trained for the Q3 audit", ehrdx_version="0.9"))
    assert ehrdx.load(edited).labels_ == ehrdx.load(table_model).labels_


def test_the_encoder_a_model_started_from_is_found_from_any_working_directory(encoder, tmp_path, monkeypatch):
    from ehrdx.pretrained import check_model_patients

    monkeypatch.chdir(encoder["enc"].parent)  # a relative --init, as typed in the folder that holds it
    r = run("train", "--meds", "meds", "--model", "gru", "--init", "enc", "--epochs", 1, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(tmp_path)  # ehrdx update run from elsewhere reads the encoder again
    clf = ehrdx.load(tmp_path / "m")
    assert clf.pretrained_["directory"] == str(encoder["enc"].resolve())
    check_model_patients(clf, {"test": []})


# --- Another file edited and its checksum recomputed: still named, never a traceback or a silent mislabelling ---
def _resummed(tmp_path: Path, name: str, edit) -> Path:
    """A copy of the golden GRU with `name` edited (or added) and its checksum in config.json made to match."""
    copy = tmp_path / "edited"
    shutil.copytree(GOLDEN / "gru_model", copy)
    path = copy / name
    content = json.loads(path.read_text()) if path.exists() else {}
    edit(content)
    path.write_text(json.dumps(content))
    config = json.loads((copy / "config.json").read_text())
    config["sha256"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("name, edit, said", [
    ("labels.json", lambda f: f["labels"].__setitem__(0, 7), "labels.json: labels: the number 7 among them, where each"),
    ("labels.json", lambda f: f["labels"].__setitem__(0, f["labels"][1]), "labels.json: labels: a label is named twice"),
    ("preprocessing.json", lambda f: f["codes"].__setitem__(0, f["codes"][1]), "preprocessing.json: codes: a code"),
    ("preprocessing.json", lambda f: f["codes"].pop(), "preprocessing.json: codes: 57 codes for a model of 59 inputs"),
    ("task.json", lambda f: f.update(task="banana"), "task.json: task: unknown task 'banana'"),
    ("input.json", lambda f: f.update(split_names=["test"]), "input.json: split_names: a list, where an object"),
    ("input.json", lambda f: f.update(visit_gap="soon"), "input.json: visit_gap: text ('soon'), where a duration"),
    ("input.json", lambda f: f.update(split_fractions=[1, 2]), "input.json: split_fractions: a list, where three"),
])
def test_an_edited_model_file_with_a_matching_checksum_is_named_with_its_entry(tmp_path, name, edit, said):
    with pytest.raises(ModelError, match="fix: use the model directory as ehrdx wrote it") as caught:
        ehrdx.load(_resummed(tmp_path, name, edit))
    assert said in str(caught.value)


# --- Data the model never saw ---------------------------------------------------------------------------------
def _events_with_codes(tmp_path: Path, rename) -> Path:
    """The golden MEDS dataset as one long events CSV, each code passed through `rename`."""
    import polars as pl

    frame = pl.read_parquet(GOLDEN / "meds" / "data", glob=True).sort("subject_id", "time")
    frame = frame.with_columns(pl.col("code").map_elements(rename, return_dtype=pl.Utf8),
                               pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    frame.write_csv(tmp_path / "events.csv")
    return tmp_path / "events.csv"


def test_evaluate_on_data_recording_none_of_the_model_s_labels_is_refused_not_scored(tmp_path):
    events = _events_with_codes(tmp_path, lambda code: f"LOCAL//{code}")
    for command in ("evaluate", "report"):
        r = run(command, "--events", events, "--model", GOLDEN / "gru_model", "--out", tmp_path / f"{command}.out")
        assert_clean_error(r, f"{events}: none of the model's 10 labels is recorded", "nothing to evaluate",
                           "fix: check that the data codes diagnoses as the model's labels select them")
        assert not (tmp_path / f"{command}.out").exists()


def test_evaluate_says_how_many_events_had_codes_the_model_never_saw(tmp_path):
    events = _events_with_codes(tmp_path, lambda code: code.replace("LAB//", "LOCAL_LAB//"))
    r = run("evaluate", "--events", events, "--model", GOLDEN / "gru_model")
    assert r.exit_code == 0, r.output
    assert "code(s) not seen in training were read as the unknown code" in r.output


def test_predict_on_data_whose_every_code_is_new_to_the_model_says_so(tmp_path):
    events = _events_with_codes(tmp_path, lambda code: f"LOCAL//{code}")
    r = run("predict", "--events", events, "--model", GOLDEN / "gru_model", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert "no event read has a code the model saw in training" in words(r.output)
    r = run("predict", "--events", _events_with_codes(tmp_path, str), "--model", GOLDEN / "gru_model", "--out",
            tmp_path / "p.csv")
    assert "no event read has a code" not in words(r.output)


# --- Saving where something already is ----------------------------------------------------------------------
def test_saving_a_model_over_an_existing_file_is_refused_naming_it(tmp_path):
    (tmp_path / "model").write_text("my notes")
    with pytest.raises(ModelError, match="model: an existing file, where the model directory is to be written"):
        ehrdx.load(GOLDEN / "gru_model").save(tmp_path / "model")
    assert (tmp_path / "model").read_text() == "my notes"


def test_an_encoder_saved_over_a_trained_model_leaves_none_of_its_metrics(encoder, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(GOLDEN / "gru_model", out)
    (out / "metrics.json").write_text('{"test": {"macro_auroc": 0.81}}')  # what ehrdx train wrote beside it
    r = run("pretrain", "--meds", encoder["meds"], "--out", out, "--hidden", 8, "--epochs", 1)
    assert r.exit_code == 0, r.output
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize("edit, said", [
    (lambda c: c.update(model_name="lstm"), "model_name is lstm and the model config's kind 'sequence', encoder 'gru'"),
    (lambda c: c.update(model_name="mlp"), "model_name is mlp and the model config's kind is 'sequence'"),
    (lambda c: c.pop("model_name") and None, "config.json: model_name: missing"),
])
def test_a_model_name_edited_to_another_model_is_refused_not_loaded_under_the_wrong_name(tmp_path, edit, said):
    with pytest.raises(ModelError, match="fix: use the model directory as ehrdx wrote it") as caught:
        ehrdx.load(_edited(GOLDEN / "gru_model", tmp_path, edit))
    assert said in str(caught.value)


# --- A training checkpoint (train --resume) edited by hand ------------------------------------------------------
def _checkpoint(tmp_path: Path):
    import torch

    from ehrdx.train.checkpoint import Checkpointer
    from ehrdx.train.loop import TrainHistory

    model = torch.nn.Linear(3, 2)
    ckpt = Checkpointer(tmp_path / "checkpoint", {"run": "this one"})
    ckpt.save(epoch=4, model=model, optimizer=torch.optim.AdamW(model.parameters()), best_state=None, best_val=0.5,
              stale=0, stopped=False, history=TrainHistory(train_loss=[0.7] * 5), generator=torch.Generator())
    return ckpt, tmp_path / "checkpoint" / "checkpoint.json"


@pytest.mark.parametrize("edit", [lambda m: m.update(epoch="4"), lambda m: m.update(stale=-1),
                                  lambda m: m["history"].update(epochs_run=99), lambda m: [m]])
def test_a_checkpoint_edited_by_hand_is_refused_with_the_fix_not_resumed_or_a_traceback(tmp_path, edit):
    ckpt, path = _checkpoint(tmp_path)
    assert ckpt.load()[0]["epoch"] == 4  # as written: resumes
    meta = json.loads(path.read_text())
    result = edit(meta)
    path.write_text(json.dumps(meta if result is None else result))
    with pytest.raises(ModelError, match="changed since ehrdx wrote it .*\n  fix: remove .*checkpoint to train from"):
        ckpt.load()


@pytest.mark.parametrize("edit", [lambda m: [m], lambda m: m.update(fingerprint="mine")])
def test_a_fitted_model_s_checkpoint_edited_by_hand_is_refused_not_a_traceback(tmp_path, edit):
    from ehrdx.train.checkpoint import FittedCheckpoint

    ckpt = FittedCheckpoint(tmp_path / "checkpoint", {"run": "this one"})
    ckpt.save({"kind": "gbm"}, {}, {"gbm.json": {}})
    meta = json.loads(ckpt.meta.read_text())
    result = edit(meta)
    ckpt.meta.write_text(json.dumps(meta if result is None else result))
    with pytest.raises(ModelError, match="changed since ehrdx wrote it"):
        ckpt.load()
