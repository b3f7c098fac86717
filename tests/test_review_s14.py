"""Review of session 14's changes: defects found in them, each with the test that shows it."""

import ast
import re
from pathlib import Path

import pytest

from cli_run import GOLDEN

SRC = Path(__file__).parent.parent / "src" / "ehrdx"


# -- errors said to Python (ehrdx.errors.python_text) ----------------------------------------------------------

def _messages() -> list[str]:
    """Every string literal of the library (not the command line's own modules), f-strings with {X} in their
    holes: the texts python_text may be given."""
    found = set()
    for path in sorted(SRC.rglob("*.py")):
        if "cli" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                found.add("".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values))
    return sorted(t for t in found if "--" in t)


WORD_VALUE = r"\b\w+=([a-z]+)(?![\w:/.-])"  # name=word, not name=map:FILE or name=next-visit


def test_a_word_of_prose_after_an_option_is_never_said_as_its_value():
    """"the date given with --add are masked" was said to update_model's caller as "the date given with
    new_labels=are masked" (and "--val-fraction that leave" as "val_fraction=that leave"): the word after an
    option was taken for its value unless it was one of a few listed words."""
    import ehrdx.estimator
    import ehrdx.events_pipeline
    import ehrdx.update
    from ehrdx.errors import python_text
    from ehrdx.models.registry import model_names

    values = {*model_names(), "auto", "cpu", "cuda", "none", "distill", "probe"}  # an option's lower-case values
    wrong = []
    for names in (ehrdx.estimator.PARAMETERS, ehrdx.update.PARAMETERS, ehrdx.events_pipeline.PARAMETERS):
        for text in _messages():
            said = python_text(text, names)
            before = set(re.findall(WORD_VALUE, text))
            wrong += [m for m in re.findall(WORD_VALUE, said) if m not in values and m not in before]
    assert not wrong, wrong


def test_an_option_s_letters_inside_a_path_or_a_word_are_not_rewritten():
    """python_text rewrote "--seed" wherever it stood: a file in "run--seed1/" was named "runseed=1/" to a Python
    caller, a file that does not exist."""
    from ehrdx.errors import python_text

    names = {"--seed": "seed", "--until": "open_store(until=...)"}
    text = "/data/run--seed1/events.csv: no events at or before --until 2020-01-01 (give --seed 3)"
    assert python_text(text, names) == ("/data/run--seed1/events.csv: no events at or before "
                                        "open_store(until=...) 2020-01-01 (give seed=3)")


def test_update_model_says_where_the_dates_of_new_labels_are_given(tmp_path):
    from ehrdx import load, open_store, patient_splits, update_model
    from ehrdx.errors import DataError

    store = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")
    splits = patient_splits(store, GOLDEN / "meds", 0)
    with pytest.raises(DataError) as caught:
        update_model(load(GOLDEN / "gru_model"), store, splits, new_labels=["U07.1"],
                     introduced={"U07.1": "2100-01-01"})
    said = str(caught.value)
    assert "once the entries before the date given in introduced are masked" in said, said
    assert "--" not in said and "=are" not in said


# -- a blank line in a CSV is no row: the rows named after it -------------------------------------------------

@pytest.mark.parametrize(("bad_row", "problem"), [("2,2020-01-02", "a row has fewer fields than the header's 3"),
                                                  ("2,2020-01-02,DX//I10,5,6", "a row has more fields than")])
def test_a_row_after_a_blank_line_is_counted_as_the_other_errors_count_it(tmp_path, bad_row, problem):
    """A blank line is no row (an empty subject id after one is "row 2"), but a row with fewer or more fields
    than the header after one was "row 3": the csv module's rows were counted with the blank line."""
    from ehrdx import open_store
    from ehrdx.errors import DataError

    events = tmp_path / "events.csv"
    for last, said in ((",2020-01-02,DX//I10", "empty subject ids"), (bad_row, problem)):
        events.write_text(f"subject_id,time,code\n1,2020-01-01,DX//E11\n\n{last}\n")
        with pytest.raises(DataError) as caught:
            open_store(events=events, store_dir=tmp_path / "store")
        assert said in str(caught.value) and "first offending rows: row 2\n" in str(caught.value), caught.value


def test_an_omop_table_drops_only_the_rows_its_blank_lines_make(tmp_path):
    """The OMOP reader dropped the rows the csv module counts as blank lines without checking that polars' rows
    there are empty, as the other readers do: a lone carriage return inside a field (polars: part of the value;
    the csv module: a line break) shifted the count, and person 2's condition was dropped without a word while
    the empty row stayed (counted as a condition of a person not in person)."""
    from ehrdx import open_store

    omop = tmp_path / "omop"
    omop.mkdir()
    (omop / "person.csv").write_text("person_id,year_of_birth\n1,1960\n2,1970\n3,1980\n")
    (omop / "condition_occurrence.csv").write_bytes(b"person_id,condition_start_date,condition_source_value\n"
                                                    b"1,2020-01-01,E1\r1\n\n2,2020-01-02,E11\n3,2020-01-03,E11\n")
    store = open_store(omop=omop, store_dir=tmp_path / "store")
    assert store.meta["visits"] == 3, store.meta  # every person's condition


# -- the store folder's lock ----------------------------------------------------------------------------------

def test_a_store_folder_on_a_file_system_without_locks_still_converts(tmp_path, monkeypatch):
    """open_store locks the store folder (one conversion at a time); on a file system without file locks (NFS
    mounted with nolock, Lustre without flock: ENOLCK, ENOSYS) the lock itself failed, an OSError that stopped
    every conversion, where before the lock they converted."""
    import errno
    import fcntl

    from ehrdx import open_store

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    store = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")
    assert len(store) > 0


# -- train --resume: options that do not change the run ------------------------------------------------------

def test_a_resume_giving_the_defaults_it_ran_with_resumes(tmp_path, monkeypatch):
    """A run started without --patience or --batch-size (their defaults: 3 and logistic's 256) was refused on a
    resume that gave them ("--patience None there, 3 now"): the same run, said another way."""
    from cli_run import run, words
    from ehrdx import EHRClassifier

    args = ("train", "--meds", GOLDEN / "meds", "--labels", f"map:{GOLDEN / 'label_map.csv'}", "--model", "logistic",
            "--out", tmp_path / "m")

    class Stopped(Exception):
        pass

    def stop(*a, **k):
        raise Stopped

    with monkeypatch.context() as patch:  # stopped after fitting, before saving: the checkpoint stays
        patch.setattr(EHRClassifier, "save", stop)
        r = run(*args)
    assert isinstance(r.exception, Stopped), r.output
    r = run(*args, "--resume", "--patience", 4)  # another patience is another run
    assert r.exit_code == 2 and "(--patience 3 there, 4 now)" in words(r.output), r.output
    r = run(*args, "--resume", "--patience", 3, "--batch-size", 256)
    assert r.exit_code == 0, r.output
    assert "resumed: the fitted model was read from the checkpoint" in words(r.output)


def test_an_omop_table_is_scanned_for_blank_lines_once_not_once_per_chunk_of_persons(tmp_path, monkeypatch):
    """Each chunk of persons scans the tables again, and each scan looked for blank lines again: a pass over the
    whole file per chunk, and with a blank line in it the csv module's pass (about 1.3 s per 3M rows: hours on a
    large export read in many chunks)."""
    import ehrdx.data.omop as omop_module
    from cli_run import small_omop

    omop = small_omop(tmp_path, "1,2020-01-01,LAB1,5\n\n2,2020-01-02,LAB1,6\n")
    calls = []
    blank_rows = omop_module.blank_rows
    monkeypatch.setattr(omop_module, "blank_rows", lambda path, *a: calls.append(path) or blank_rows(path, *a))
    shards = list(omop_module.OmopReader(omop, persons_per_shard=1).shards())
    assert len(shards) == 2
    assert calls.count(omop / "measurement.csv") == 1, calls
