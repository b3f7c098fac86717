"""Trust, round 6 (session s13): a CSV row with fewer fields than the header (OMOP, events and patient tables),
codes matching labels only when case is ignored said by update and evaluate, predict's and update's counts
said as sentences, and train and pretrain checking their options before any progress is shown."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.csv_errors import short_rows_error

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def words(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_a_short_row_in_an_omop_csv_is_an_error_naming_file_line_and_fix(tmp_path):
    """A measurement row missing its last field (`1,2020-01-02,HBA1C`) was read as a measurement without a
    value, without a word: polars fills a short row with nulls. It is an error naming the file's line, exit 2."""
    omop = tmp_path / "omop"
    omop.mkdir()
    (omop / "person.csv").write_text("person_id,year_of_birth\n1,1960\n2,1970\n")
    (omop / "condition_occurrence.csv").write_text("person_id,condition_start_date,condition_source_value\n"
                                                   "1,2020-01-01,E11\n")
    (omop / "measurement.csv").write_text("person_id,measurement_date,measurement_source_value,value_as_number\n"
                                          "1,2020-01-01,HBA1C,6\n1,2020-01-02,HBA1C\n2,2020-01-03,HBA1C,\n")
    r = run("targets", "--omop", omop, "--labels", "prefix:CONDITION//", "--out", tmp_path / "t.csv")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "measurement.csv: a row has fewer fields than the header's 4 (file line 3)" in said
    assert "row 2" in said and "row 3" not in said  # the empty last field of line 4 is a value left empty
    assert "export the table again" in said and "Traceback" not in said
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("name", ["events.csv", "table.csv"])
def test_a_short_row_in_an_events_table_or_a_patient_table_is_named_with_the_fix(tmp_path, name):
    path = tmp_path / name
    if name == "events.csv":
        path.write_text("pid,when,code,numeric_value\n1,2020-01-01,DX//A,\n1,2020-01-02,\"DX//B,x\",5\n"
                        "1,2020-01-03,LAB//C\n1,2020-01-04,LAB//C,7\n")
        r = run("targets", "--events", path, "--subject-col", "pid", "--time-col", "when", "--labels", "prefix:DX//",
                "--out", tmp_path / "t.csv")
    else:
        path.write_text("patient_id,age,sex,diseases\n1,50,F,E11\n2,60,M,E11;I10\n3,70,F\n4,40,M,\n")
        r = run("train", path, "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert f"{name}: a row has fewer fields than the header's 4 (file line 4)" in said and "row 3" in said
    assert "export the table again" in said


def test_short_rows_are_told_from_empty_last_fields_quoted_separators_and_multi_line_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,b,c\n1,"x,y",\n2,,\n3,"two\nlines",z\n\n')
    assert short_rows_error(path) is None
    path.write_text('a,b,c\n1,"x,y",\n2,"x,y"\n3,"two\nlines",z\n4,5\n')
    error = short_rows_error(path)
    assert error is not None and error.rows == [1, 3] and "(file lines 3, 6)" in str(error)
