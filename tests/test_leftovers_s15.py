"""Defects left from earlier rounds (session s15): errors raised to Python callers name their parameters in
their attributes too, ..."""

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
