"""Trust, round 7 (session s14): defects earlier reviews found and left open: a resume with other options refused
before the data is read, ..."""

import json
import re

import numpy as np
import pytest

from cli_run import GOLDEN, events_with_lower_case_codes, run, words
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


def test_a_resume_with_the_same_values_spelled_otherwise_resumes(tmp_path, monkeypatch):
    """A run of --visit-gap 0 --task window:10m --until 2020-01-01 --dropout 0.1 resumed with --visit-gap 0s
    --task window:600s --until 2020-01-01T00:00:00 --dropout .1 was refused as "a run with other options": the
    strings were compared, not the values they stand for."""
    out = tmp_path / "m"
    _stopped_before_saving(monkeypatch, *_train_args(out, "--visit-gap", "0", "--task", "window:10m", "--until",
                                                     "2030-01-01", "--dropout", "0.1"))
    r = run(*_train_args(out, "--resume", "--visit-gap", "0s", "--task", "window:600s", "--until",
                         "2030-01-01T00:00:00", "--dropout", ".1"))
    assert r.exit_code == 0, r.output
    assert "resumed: the fitted model was read from the checkpoint" in words(r.output)


def test_a_resume_with_another_visit_gap_is_still_refused_naming_both_spellings(stopped_run):
    r = run(*_train_args(stopped_run, "--resume", "--visit-gap", "1h"))
    assert r.exit_code == 2, r.output
    assert "(--visit-gap '0' there, '1h' now)" in words(r.output)


def test_a_resume_with_the_same_options_resumes_and_a_fresh_run_replaces_the_checkpoint(stopped_run):
    r = run(*_train_args(stopped_run, "--resume"))
    assert r.exit_code == 0, r.output
    assert "resumed: the fitted model was read from the checkpoint" in words(r.output)
    assert not (stopped_run / "checkpoint").exists()  # removed once the model is saved


def test_a_run_without_resume_replaces_a_checkpoint_of_other_options(stopped_run, monkeypatch):
    _stopped_before_saving(monkeypatch, *_train_args(stopped_run, "--seed", 1))
    options = json.loads((stopped_run / "checkpoint" / "run.json").read_text())["options"]
    assert options["--seed"] == 1


# -- errors raised to Python name the parameters, not the command-line options --------------------------------

@pytest.fixture(scope="module")
def golden_store(tmp_path_factory):
    from ehrdx import open_store, patient_splits

    store = open_store(meds=GOLDEN / "meds", store_dir=tmp_path_factory.mktemp("golden") / "store")
    return store, patient_splits(store, GOLDEN / "meds", 0)


@pytest.mark.parametrize(("settings", "said", "fix"), [
    ({"labels": "nope:x"}, "parameter labels: unknown label spec 'nope:x'", None),
    ({"labels": "prefix:NOPE//"}, "no label code of labels='prefix:NOPE//' occurs",
     "check labels= against the codes in the data (ehrdx reads them from events; open_store(until=...) and the"),
    ({"task": "weird"}, "parameter task: unknown task 'weird'", None),
    ({"model": "transformer", "hidden": 10, "heads": 3}, "hidden 10 is not divisible by heads 3",
     "e.g. hidden=128 heads=4 (or heads=1)"),
])
def test_an_estimator_s_errors_name_its_parameters_from_python(golden_store, settings, said, fix):
    """EHRClassifier(labels="nope:x").fit(...) said "option --labels: unknown label spec", and a fix naming
    "--labels", "--until" or "--hidden 128 --heads 4": options of a command the Python caller did not run."""
    from ehrdx.errors import EhrdxError

    store, (tr, va, _) = golden_store
    with pytest.raises(EhrdxError) as caught:
        EHRClassifier(**{"model": "logistic", **settings}).fit(store, tr, va)
    message = str(caught.value)
    assert said in message and (fix is None or fix in message)
    assert "--" not in message, message


def test_the_same_errors_name_the_options_on_the_command_line(tmp_path):
    r = run("train", "--meds", GOLDEN / "meds", "--labels", "prefix:NOPE//", "--model", "logistic",
            "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert "no label code of --labels 'prefix:NOPE//' occurs" in words(r.output)
    assert "check --labels against the codes in the data (ehrdx reads them from events; --until and" in words(r.output)


def test_update_model_and_open_store_errors_name_their_parameters(golden_store):
    from ehrdx import load, open_store, update_model
    from ehrdx.errors import DataError

    store, splits = golden_store
    old = load(GOLDEN / "gru_model")
    with pytest.raises(DataError) as caught:
        update_model(old, store, splits, new_labels=["NOPE"])
    assert str(caught.value).startswith("parameter new_labels: label(s) NOPE are not among the labels of the label "
                                        "map"), caught.value
    with pytest.raises(DataError) as caught:
        update_model(old, store, splits, introduced={"ZZZ": "2020-01-01"})
    assert str(caught.value) == ("parameter introduced: a date was given for label(s) ZZZ that this update does not "
                                 "add\n  fix: give dates only for the labels added (introduced={LABEL: DATE})")
    with pytest.raises(DataError) as caught:
        open_store(meds=GOLDEN / "meds", until="someday")
    assert str(caught.value).startswith("parameter until: unreadable date 'someday'"), caught.value


def test_option_names_are_said_as_parameters_in_prose_values_and_quoted_commands():
    from ehrdx.errors import python_text

    names = {"--model": "model", "--hidden": "hidden", "--no-censor": "censor=False", "--add LABEL=DATE": "x={L: D}"}
    said = python_text("give --model gru or --model auto (or leave --model out), or pretrain one (ehrdx pretrain "
                       "--hidden 64 --model gru); --hidden 128, or --no-censor; --add LABEL=DATE; ehrdx --show-ids",
                       names)
    assert said == ("give model=gru or model=auto (or leave model out), or pretrain one (ehrdx pretrain --hidden 64 "
                    "--model gru); hidden=128, or censor=False; x={L: D}; ehrdx --show-ids")


# -- a blank line in a CSV input is no row -------------------------------------------------------------------

EVENTS = "subject_id,time,code\n1,2020-01-01,DX//E11\n\n1,2020-02-01,DX//I10\n2,2020-01-01,DX//I10\n2,2020-03-01,DX//E11\n\n"


def _no_row_said(output: str) -> bool:
    return "empty" not in output and re.search(r"\brows? \d", words(output)) is None


@pytest.mark.parametrize("blank_in", ["events", "label map"])
def test_a_blank_line_in_an_events_table_or_a_label_map_is_skipped_as_no_row(tmp_path, blank_in):
    """A blank line (between rows, or an extra one at the end) was read by polars as a row of empty cells:
    "events.csv, column 'subject_id': empty subject ids, row 2". It holds nothing and is no row (the csv module,
    pandas and R skip it): the file reads as without it."""
    events = tmp_path / "events.csv"
    events.write_text(EVENTS if blank_in == "events" else EVENTS.replace("\n\n", "\n"))
    label_map = tmp_path / "map.csv"
    label_map.write_text("code,label\nDX//E11*,E11\n" + ("\n" if blank_in == "label map" else "") + "DX//I10*,I10\n")
    r = run("targets", "--events", events, "--labels", f"map:{label_map}", "--task", "window:365d",
            "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    assert "2 prediction times x 2 labels" in r.output and _no_row_said(r.output)


def test_a_blank_line_in_a_times_file_or_a_targets_file_is_skipped_as_no_row(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text(EVENTS)
    targets = tmp_path / "given.csv"
    targets.write_text("subject_id,prediction_time,label,value\n1,2020-01-15,E11,true\n\n2,2020-02-01,I10,\n\n")
    r = run("train", "--events", events, "--labels", "prefix:DX//", "--targets", targets, "--model", "logistic",
            "--val-fraction", 0, "--test-fraction", 0, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert _no_row_said(r.output)
    times = tmp_path / "times.csv"
    times.write_text("subject_id,prediction_time\n1,2020-01-15\n\n2,2020-02-01\n")
    r = run("predict", "--events", events, "--model", tmp_path / "m", "--times", times, "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert "predicted 2 (patient, time) rows" in r.output and _no_row_said(r.output)


def test_a_blank_line_in_a_patient_table_or_an_omop_table_is_no_row(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("patient_id,age,diseases\n1,50,E11\n\n2,60,I10\n3,70,E11\n4,40,\n\n")
    r = run("train", table, "--model", "logistic", "--val-fraction", 0, "--test-fraction", 0, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "read 4 patients" in r.output
    omop = tmp_path / "omop"
    omop.mkdir()
    (omop / "person.csv").write_text("person_id,year_of_birth\n1,1960\n\n2,1970\n")
    (omop / "condition_occurrence.csv").write_text("person_id,condition_start_date,condition_source_value\n"
                                                   "1,2020-01-01,E11\n\n2,2020-01-02,E11\n")
    r = run("targets", "--omop", omop, "--labels", "prefix:CONDITION//", "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    assert "excluded" not in r.output  # were: 1 person row without person id, 1 condition row of no person


def test_a_row_of_empty_fields_written_out_is_still_a_row_with_its_error(tmp_path):
    from ehrdx.data.csv_errors import blank_rows

    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n1,2020-01-01,DX//E11\n\n,,\n")
    r = run("targets", "--events", events, "--labels", "prefix:DX//", "--out", tmp_path / "t.csv")
    assert r.exit_code == 2, r.output
    assert "events.csv, column 'subject_id': empty subject ids first offending rows: row 2" in words(r.output)
    quoted = tmp_path / "quoted.csv"  # an empty line inside a quoted value is the value's
    quoted.write_text('a,b\n1,"x\n\ny"\n\n2,z\n')
    assert blank_rows(quoted) == [1]


# -- predict --format meds-eval says the codes that match the model's labels only ignoring case ------------

def test_predict_meds_eval_says_the_codes_that_match_the_model_s_labels_only_ignoring_case(tmp_path):
    """The meds-eval files' true labels come from the data's codes, as evaluate's do: `dx//e11.2` is no record of
    E11 there, which evaluate says and keeps in its JSON; predict --format meds-eval said nothing."""
    events, old_map, _ = events_with_lower_case_codes(tmp_path)
    r = run("train", "--events", events, "--labels", f"map:{old_map}", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    r = run("predict", "--model", tmp_path / "m", "--events", events, "--format", "meds-eval", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "1 event code(s) would match the model's labels if letter case were ignored (dx//e11.2;" in said
    assert "write the codes in the data as the model's labels spell them" in said
    manifest = json.loads((tmp_path / "p" / "labels.json").read_text())
    assert manifest["codes_matching_labels_only_ignoring_case"]["codes"] == ["dx//e11.2"]


# -- update: what the model alone says of --add, --labels, --init and --replay-meds is said before the data ----

@pytest.mark.parametrize(("options", "said"), [
    (["--add", "E11"], "option --add: the model already has label(s) E11: nothing to add"),
    (["--add", "E11=2020-01-01,U07.1"], "a date was given for label(s) E11 that this update does not add (the"),
    (["--add", "NOPE"], "option --add: label(s) NOPE are not among the labels of the label map"),
    (["--add", "U07.1", "--labels", "nope:x"], "option --labels: unknown label spec 'nope:x'"),
    (["--add", "U07.1", "--init", "bogus"], "unknown init 'bogus'"),
])
def test_update_refuses_what_the_model_alone_refutes_before_reading_the_events(tmp_path, options, said):
    """Each was said only after the new data's event store was built (minutes on a big dataset)."""
    r = run("update", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", *options, "--out", tmp_path / "u")
    assert r.exit_code == 2, r.output
    assert said in words(r.output)
    assert "event store:" not in r.output and not (tmp_path / "u").exists()


def test_update_refuses_replay_for_a_model_that_is_not_fine_tuned_before_reading_the_events(tmp_path):
    r = run(*_train_args(tmp_path / "m"))
    assert r.exit_code == 0, r.output
    r = run("update", "--model", tmp_path / "m", "--meds", GOLDEN / "meds", "--replay-meds", GOLDEN / "meds",
            "--out", tmp_path / "u")
    assert r.exit_code == 2, r.output
    assert "replay (--replay-meds) mixes old data into fine-tuning, and the logistic model" in words(r.output)
    assert "event store:" not in r.output


def test_update_names_the_selection_and_the_training_patients_of_a_label_never_recorded(tmp_path):
    """"label(s) K99 never recorded in the new training patients", fix "check the names against the label selection",
    said neither which selection nor how many patients, nor why a label in the data may still be missing."""
    events, _, _ = events_with_lower_case_codes(tmp_path)
    r = run("train", "--events", events, "--labels", "prefix:DX//:3", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    r = run("update", "--model", tmp_path / "m", "--events", events, "--add", "K99", "--out", tmp_path / "u")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert ("option --add: label(s) K99 never recorded in the events of the 28 new training patients, as the label "
            "selection 'prefix:DX//:3' reads their codes") in said
    assert "a label recorded only in validation or test patients, or after --until, cannot be learned" in said


# -- max_epochs=0 for a network without a pretrained encoder: refused with the settings -------------------------

@pytest.mark.parametrize("model", ["gru", "mlp", "auto", None])
def test_max_epochs_0_for_a_network_without_an_encoder_is_refused_as_a_setting(golden_store, model):
    """EHRClassifier(model="gru", max_epochs=0).fit(...) returned a model with its random start weights, as if
    trained (`--epochs 0` is refused by the command line: from Python it was not)."""
    from ehrdx.errors import ModelError

    store, (tr, va, _) = golden_store
    with pytest.raises(ModelError) as caught:
        EHRClassifier(model=model, labels=f"map:{GOLDEN / 'label_map.csv'}", max_epochs=0).fit(store, tr, va)
    said = str(caught.value)
    assert said.startswith("settings out of range: max_epochs=0 (at least 1 for the") and "untrained" in said


@pytest.mark.parametrize("settings", [{"model": "logistic"}, {"model": "gbm"}, {"model": "gru", "min_steps": 2}])
def test_max_epochs_0_stays_for_a_model_that_fits_itself_or_with_min_steps(golden_store, settings):
    store, (tr, va, _) = golden_store
    clf = EHRClassifier(**settings, labels=f"map:{GOLDEN / 'label_map.csv'}", hidden=8, max_epochs=0).fit(store, tr, va)
    assert clf.history_.steps >= settings.get("min_steps", 0)


# -- a loaded model's labels setting is the string the user gave -------------------------------------------------

def test_a_loaded_model_gives_back_its_label_map_setting_as_given_and_predicts_without_the_file(golden_store, tmp_path):
    """`get_params()["labels"]` of a loaded model was a LabelSelector object where the user had given
    "map:FILE": the settings did not round-trip (save -> load -> get_params), and printed as an object."""
    from sklearn.base import clone

    from ehrdx import load

    store, (tr, va, te) = golden_store
    label_map = tmp_path / "map.csv"
    label_map.write_text((GOLDEN / "label_map.csv").read_text())
    clf = EHRClassifier(model="logistic", labels=f"map:{label_map}").fit(store, tr, va)
    clf.save(tmp_path / "m")
    label_map.unlink()  # the model keeps the map itself: it loads and predicts without the file
    back = load(tmp_path / "m")
    assert back.get_params() == clf.get_params() and back.get_params()["labels"] == f"map:{label_map}"
    assert clone(back).get_params()["labels"] == f"map:{label_map}"
    assert back.selector_.mapping == clf.selector_.mapping
    s = clf.samples(store, te)
    np.testing.assert_allclose(back.predict_samples(store, s), clf.predict_samples(store, s), rtol=1e-6)


# -- predict_proba on a table without patient ids -------------------------------------------------------------

def test_predict_proba_on_a_table_without_patient_ids_scores_its_rows_in_order():
    """A feature table without its id column (X, as scikit-learn users pass it) was refused: "no patient id
    column: 'patient_id' is not in the file", for a table in memory, with a fix naming --id-col. The ids play no
    part in the probabilities: the rows are scored in their order."""
    import polars as pl

    from ehrdx import load

    clf = load(GOLDEN / "table_model")
    table = pl.read_csv(GOLDEN / "table.csv", schema_overrides={"patient_id": pl.Utf8}).head(6)
    with_ids = clf.predict_proba(table)
    for without in (table.drop("patient_id"), table.drop("patient_id").to_pandas(),
                    table.drop("patient_id").to_dict(as_series=False)):
        np.testing.assert_allclose(clf.predict_proba(without), with_ids, rtol=1e-6)
    assert clf.predict(table.drop("patient_id")).shape == with_ids.shape
    clf.predict_proba(table)
    assert "rows_without_patient_id_column" not in clf.last_prediction_summary_
    # an id column under a name ehrdx does not know is not read as ids, and that is said, not silent
    renamed = table.rename({"patient_id": "PatientKey"})
    np.testing.assert_allclose(clf.predict_proba(renamed), with_ids, rtol=1e-6)
    said = clf.last_prediction_summary_
    assert said["rows_without_patient_id_column"] == 6 and said["ignored_columns"] == ["PatientKey"]


def test_rows_with_empty_patient_ids_are_refused_naming_the_rows_and_both_fixes():
    import polars as pl

    from ehrdx import load
    from ehrdx.errors import DataError

    clf = load(GOLDEN / "table_model")
    table = pl.read_csv(GOLDEN / "table.csv", schema_overrides={"patient_id": pl.Utf8}).head(4)
    table = table.with_columns(pl.when(pl.int_range(4) == 2).then(None).otherwise(pl.col("patient_id"))
                               .alias("patient_id"))
    with pytest.raises(DataError) as caught:
        clf.predict_proba(table)
    said = str(caught.value)
    assert "column 'patient_id': empty patient ids" in said and "row 3" in said
    assert "or leave the id column out (the rows are then read in their order)" in said


def test_the_command_line_still_needs_patient_ids_to_write_predictions(tmp_path):
    table = tmp_path / "new.csv"
    lines = (GOLDEN / "table.csv").read_text().splitlines()[:4]
    table.write_text("\n".join(",".join(line.split(",")[1:]) for line in lines) + "\n")
    r = run("predict", table, "--model", GOLDEN / "table_model", "--out", tmp_path / "p.csv")
    assert r.exit_code == 2, r.output
    assert "no patient id column" in words(r.output) and "fix: name the id column with --id-col" in words(r.output)


def test_a_model_that_fits_in_one_go_shows_no_bar_of_epochs(tmp_path):
    """gbm on a table showed 'training 0/30' epochs it never runs; it gets its name and a spinner."""
    from cli_run import GOLDEN, run, words

    result = run("train", GOLDEN / "table.csv", "--model", "logistic", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert "training logistic" in words(result.output) and "0/30" not in result.output
