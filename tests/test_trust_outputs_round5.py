"""Trust, outputs round 5 (session s13): the event store's warnings in the HTML report; a patient table's
columns the model does not use named by predict and evaluate; prediction times before the first visit
counted under their own cause; option errors worded as options; numbers with spaces around them read.
Uses the golden fixtures read-only (copies in tmp_path)."""

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli_run import GOLDEN, run, words

# -- the store's warnings in the report -------------------------------------------------------------------

def test_the_store_s_warnings_are_in_the_html_report(tmp_path):
    """An unreadable codes.parquet is said in the terminal and metrics.json; the report, the page that is
    shared, left it out. It is now a note beside the cohort's exclusions."""
    meds = tmp_path / "meds"
    shutil.copytree(GOLDEN / "meds", meds)
    (meds / "metadata" / "codes.parquet").write_bytes(b"\x00not a parquet file\xff" * 10)
    r = run("report", "--model", GOLDEN / "gru_model", "--meds", meds, "--bootstrap", 0,
            "--out", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    cohort = page[page.index("id='cohort'"):page.index("id='metrics'")]
    assert "codes.parquet: not a readable parquet file" in cohort and "code descriptions left out" in cohort


# -- a table's columns the model does not use -------------------------------------------------------------

def table_with_extra_columns(tmp_path) -> Path:
    table = pl.read_csv(GOLDEN / "table.csv").with_columns(pl.lit("B").alias("ward"), pl.lit(1.0).alias("note"))
    table.write_csv(tmp_path / "t.csv")
    return tmp_path / "t.csv"


def test_predict_on_a_table_names_the_columns_the_model_does_not_use(tmp_path):
    """train says "ignored columns: N (a, b)"; predict read the same extra columns without a word."""
    r = run("predict", table_with_extra_columns(tmp_path), "--model", GOLDEN / "table_model",
            "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert "ignored columns: 2 (ward, note)" in words(r.output)


def test_evaluate_on_a_table_names_the_columns_the_model_does_not_use_and_writes_them(tmp_path):
    r = run("evaluate", table_with_extra_columns(tmp_path), "--model", GOLDEN / "table_model",
            "--out", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    assert "ignored columns: 2 (ward, note)" in words(r.output)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["excluded"]["ignored_columns"] == 2  # the keys train's metrics.json uses
    assert metrics["excluded_names"]["ignored_columns"] == ["ward", "note"]


def test_a_table_without_a_column_the_model_needs_is_refused_naming_it(tmp_path):
    """(already so: checked, not changed)"""
    pl.read_csv(GOLDEN / "table.csv").drop("hba1c").write_csv(tmp_path / "t.csv")
    r = run("predict", tmp_path / "t.csv", "--model", GOLDEN / "table_model", "--out", tmp_path / "p.csv")
    assert r.exit_code == 2
    assert "columns the model was trained on are missing: hba1c" in words(r.output) and "fix:" in r.output


def test_evaluate_on_a_table_says_unseen_values_once(tmp_path):
    """The count of values unseen in training was printed twice, in two wordings."""
    pl.read_csv(GOLDEN / "table.csv").with_columns(pl.lit("X").alias("sex")).write_csv(tmp_path / "t.csv")
    r = run("evaluate", tmp_path / "t.csv", "--model", GOLDEN / "table_model")
    assert r.exit_code == 0, r.output
    assert words(r.output).count("300 category sex value(s)") == 1


# -- prediction times before the first visit --------------------------------------------------------------

def test_a_time_before_the_first_visit_is_counted_under_its_own_cause_not_as_no_visit(tmp_path):
    """Patient 2 has visits; its one time (1900) is before them. predict said the patient had "no visit,
    e.g. only MEDS_BIRTH", the wrong cause. A patient with no visit at all still gets that line."""
    meds = tmp_path / "meds"
    shutil.copytree(GOLDEN / "meds", meds)
    shard = next((meds / "data" / "train").glob("*.parquet"))  # one patient with only a birth
    frame = pl.read_parquet(shard)
    birth = frame.filter(pl.col("code") == "MEDS_BIRTH").head(1).with_columns(pl.lit(999_999, pl.Int64).alias("subject_id"))
    pl.concat([frame, birth]).write_parquet(shard)
    times = tmp_path / "times.csv"
    times.write_text("subject_id,prediction_time\n2,1900-01-01\n3,2019-06-01\n999999,2019-06-01\n")
    r = run("predict", "--model", GOLDEN / "gru_model", "--meds", meds, "--times", times, "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "1 prediction time(s) before the patient's first visit: nothing to predict from" in said
    assert "1 patient(s) with no prediction time (no visit" in said  # 999999 only
    assert "prediction times of patients without visits: 1" in said
    assert pl.read_csv(tmp_path / "p.csv")["subject_id"].to_list() == [3]


# -- errors about options are worded as options -------------------------------------------------------------

def test_an_error_about_an_option_names_the_option_not_a_column():
    """`column '--add'` read as if a file had a column named --add. A file's column keeps its wording."""
    from ehrdx.errors import DataError

    assert str(DataError("unreadable date", column="--add")).startswith("option --add: unreadable date")
    assert str(DataError("bad", file="t.csv", column="age")).startswith("t.csv, column 'age': bad")


@pytest.mark.parametrize(("add", "why"), [("U07.1=01/02/2018", "unreadable introduction date"),
                                          ("NOPE", "label(s) NOPE are not among the labels of the label map"),
                                          ("=2020-03-01", "'=2020-03-01' has no label before '='")])
def test_update_refuses_a_bad_add_as_an_option_before_any_progress_bar(tmp_path, add, why):
    """update --add with an unreadable date showed "fine-tuning 0/1" and then "column '--add': ..."."""
    r = run("update", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--add", add, "--epochs", 1,
            "--out", tmp_path / "u")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert f"option --add: {why}" in said and "column '--add'" not in said
    assert "fine-tuning" not in said and "fix:" in said
    assert not (tmp_path / "u").exists()


# -- numbers with spaces around them --------------------------------------------------------------------------

def events_with_values(values: list[str]) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame({"subject_id": [1] * n, "time": [f"2020-01-0{i + 1}" for i in range(n)],
                         "code": ["LAB//X"] * n, "numeric_value": values})


@pytest.mark.parametrize("kind", ["events_csv", "meds"])
def test_a_number_with_spaces_around_it_is_read_as_a_number(tmp_path, kind):
    """Times, codes and OMOP values with spaces around them were read; " 5.5 " in a MEDS shard or an events
    CSV was refused as text. Only the whitespace is stripped; a cell of spaces only is an empty value."""
    from ehrdx.events_pipeline import open_store

    frame = events_with_values([" 5.5 ", "\t7", "  ", "8", None])
    if kind == "meds":
        (tmp_path / "meds" / "data").mkdir(parents=True)
        frame.with_columns(pl.col("time").str.to_datetime()).write_parquet(tmp_path / "meds" / "data" / "0.parquet")
        st = open_store(meds=tmp_path / "meds", store_dir=tmp_path / "store")
    else:
        frame.write_csv(tmp_path / "ev.csv")
        st = open_store(events=tmp_path / "ev.csv", store_dir=tmp_path / "store")
    values = np.asarray(st.values)
    assert values[[0, 1, 3]].tolist() == pytest.approx([5.5, 7.0, 8.0]) and np.isnan(values[[2, 4]]).all()


def test_text_in_the_value_column_is_still_an_error_naming_file_row_and_column(tmp_path):
    from ehrdx.errors import DataError
    from ehrdx.events_pipeline import open_store

    events_with_values(["5", " high "]).write_csv(tmp_path / "ev.csv")
    with pytest.raises(DataError, match="text in the numeric value column") as e:
        open_store(events=tmp_path / "ev.csv", store_dir=tmp_path / "store")
    assert "ev.csv" in str(e.value) and "row 2" in str(e.value) and "column 'numeric_value'" in str(e.value)
