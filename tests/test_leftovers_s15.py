"""Defects left from earlier rounds (session s15): errors raised to Python callers name their parameters in
their attributes too, ..."""

import inspect

import pytest

from cli_run import GOLDEN, run, words

# -- an error raised to Python names its parameters: the message, its `column`, the note on hidden ids ---------


@pytest.fixture(scope="module")
def golden_store(tmp_path_factory):
    from ehrdx import open_store, patient_splits

    store = open_store(meds=GOLDEN / "meds", store_dir=tmp_path_factory.mktemp("golden") / "store")
    return store, patient_splits(store, GOLDEN / "meds", 0)


@pytest.mark.parametrize(("given", "column", "said"), [
    ({"new_labels": ["NOPE"]}, "new_labels", "parameter new_labels: label(s) NOPE are not among"),
    ({"introduced": {"ZZZ": "2020-01-01"}}, "introduced", "parameter introduced: a date was given for label(s) ZZZ"),
    ({"new_labels": ["U07.1"], "introduced": {"U07.1": "someday"}}, "introduced",
     ("parameter introduced: unreadable introduction date 'someday'\n  fix: give introduced={LABEL: DATE} with ISO "
      "dates, e.g. introduced={'U07.1': '2020-03-01'}")),
])
def test_update_model_errors_name_the_parameter_in_their_column_and_message(golden_store, given, column, said):
    """update_model(..., new_labels=["NOPE"]) raised a DataError whose `column` was "--add", the command's option;
    an unreadable date in `introduced` said "parameter new_labels: unreadable introduction date" with the fix
    "write LABEL=DATE"."""
    from ehrdx import load, update_model
    from ehrdx.errors import DataError

    store, splits = golden_store
    with pytest.raises(DataError) as caught:
        update_model(load(GOLDEN / "gru_model"), store, splits, epochs=0, **given)
    assert caught.value.column == column
    assert said in str(caught.value) and "--" not in str(caught.value), caught.value


def test_open_store_s_error_column_is_its_parameter():
    from ehrdx import open_store
    from ehrdx.errors import DataError

    with pytest.raises(DataError) as caught:
        open_store(meds=GOLDEN / "meds", until="someday")
    assert caught.value.column == "until"


def test_an_introduction_date_on_the_command_line_still_names_add(tmp_path):
    r = run("update", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--add", "U07.1=someday",
            "--out", tmp_path / "u")
    assert r.exit_code == 2, r.output
    assert "option --add: unreadable introduction date 'someday'" in words(r.output)
    assert "fix: write LABEL=DATE with an ISO date" in words(r.output)


def test_hidden_values_are_shown_by_a_call_to_python_and_by_an_option_on_the_command_line(tmp_path):
    """A Python caller was told "(patient ids and cell values hidden; run with ehrdx --show-ids to see them)": a
    flag of a command they did not run."""
    from ehrdx import open_store
    from ehrdx.errors import DataError

    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n1,2020-01-01,DX//E11\n2,Jane Doe,DX//I10\n")
    with pytest.raises(DataError) as caught:
        open_store(events=events)
    said = str(caught.value)
    assert "Jane" not in said and "call ehrdx.errors.show_identifiers(True) to see them" in said, said
    assert "--" not in said, said
    r = run("targets", "--events", events, "--out", tmp_path / "t.csv")
    assert r.exit_code == 2, r.output
    assert "Jane" not in r.output and "run with ehrdx --show-ids to see them" in words(r.output), r.output


# -- a model used on a store whose visits are split at another gap: warned, naming both -----------------------

def test_a_model_fitted_from_python_warns_when_a_store_splits_visits_at_another_gap(golden_store, tmp_path):
    """A model fitted on visits split at 6 hours predicted silently on a store split at 0 (same timestamp): the
    visits it reads, and a next-visit task's prediction times, are not those it learned from. It now records its
    store's gap (input.json, as the command line does) and a Python caller is warned, with both values."""
    import warnings

    from ehrdx import EHRClassifier, load, open_store

    store_6h = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "s6h", visit_gap_seconds=6 * 3600)
    store_0, (tr, va, te) = golden_store
    clf = EHRClassifier(model="logistic", labels=f"map:{GOLDEN / 'label_map.csv'}").fit(store_6h, tr, va)
    clf.save(tmp_path / "m")
    model = load(tmp_path / "m")
    assert model.input_["visit_gap"] == "6h"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the store it was fitted on's gap: no warning
        model.predict_proba(store_6h, te)
    with pytest.warns(UserWarning) as caught:
        model.predict_proba(store_0, te)
    said = str(caught[0].message)
    assert "the store's visits are split at a gap of 0 s (0), the model's at 21,600 s (6h)" in said
    assert "open_store(..., visit_gap_seconds=21600)" in said
    r = run("predict", "--model", tmp_path / "m", "--meds", GOLDEN / "meds", "--visit-gap", "0",
            "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert "--visit-gap 0 given: the model was trained with 6h; using 0" in words(r.output)


# -- given targets with fractions of a second: counted, as events and --times are -----------------------------

EVENTS = "subject_id,time,code\n1,2020-01-01,DX//E11\n1,2020-02-01,DX//I10\n2,2020-01-01,DX//I10\n2,2020-03-01,DX//E11\n"


def test_targets_with_fractions_of_a_second_are_counted_and_two_times_in_one_second_refused(tmp_path):
    """train --targets cut 2020-01-15T00:00:00.5 to the second and said nothing (events and --times count it);
    two times of a patient within one second became one prediction time, each taking the other's labels."""
    events = tmp_path / "events.csv"
    events.write_text(EVENTS)
    targets = tmp_path / "targets.csv"
    targets.write_text("subject_id,prediction_time,label,value\n1,2020-01-15T00:00:00.5,E11,true\n"
                       "1,2020-01-15T00:00:00.5,I10,\n2,2020-02-01,I10,true\n")
    r = run("train", "--events", events, "--targets", targets, "--model", "logistic", "--val-fraction", 0,
            "--test-fraction", 0, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert f"{targets}: times with a fraction of a second cut to the second: 1" in words(r.output)
    targets.write_text("subject_id,prediction_time,label,value\n2,2020-02-01,I10,true\n"
                       "1,2020-01-15T00:00:00.2,E11,true\n1,2020-01-15T00:00:00.7,I10,true\n")
    r = run("train", "--events", events, "--targets", targets, "--model", "logistic", "--val-fraction", 0,
            "--test-fraction", 0, "--out", tmp_path / "m2")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "1 prediction time(s) of a patient are given more than once within one second (2 different times)" in said
    assert "first offending rows: row 2, row 3" in said and "Traceback" not in r.output


def test_meds_task_folders_count_their_fractions_of_a_second(tmp_path):
    import datetime as dt

    import polars as pl

    from ehrdx.data.meds import FRACTION_CUT
    from ehrdx.tasks.targets import read_targets

    for label in ("E11", "I10"):
        (tmp_path / label).mkdir()
        pl.DataFrame({"subject_id": [1, 2], "prediction_time": [dt.datetime(2020, 1, 15, 0, 0, 0, 500_000),
                                                                dt.datetime(2020, 2, 1)],
                      "boolean_value": [True, False]}).write_parquet(tmp_path / label / "labels.parquet")
    assert read_targets(tmp_path).counts == {FRACTION_CUT: 1}  # one prediction time, in both files


# -- report and evaluate score the same part by default, by MEDS's name for it ---------------------------------

def test_report_and_evaluate_default_to_the_held_out_split_and_take_test_as_well(tmp_path):
    """report --split defaulted to 'test' (and titled the report "test patients") while evaluate defaulted to
    'held_out', MEDS's name of the same part."""
    from ehrdx.cli.predict import evaluate
    from ehrdx.cli.report import report

    for command in (report, evaluate):
        assert inspect.signature(command).parameters["split"].default == "held_out", command
    r = run("report", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--bootstrap", 0,
            "--out", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    assert "scoring held_out patients" in words(r.output)
    assert "(held_out patients)" in (tmp_path / "r.html").read_text()
    r = run("report", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--split", "test",
            "--bootstrap", 0, "--out", tmp_path / "r2.html")
    assert r.exit_code == 0 and "scoring test patients" in words(r.output), r.output
    r = run("report", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--split", "heldout",
            "--out", tmp_path / "r3.html")
    assert r.exit_code == 2 and "--split must be held_out (or test), tuning, train or all, not 'heldout'" in words(
        r.output), r.output
    assert "event store:" not in r.output  # refused before the events are read
