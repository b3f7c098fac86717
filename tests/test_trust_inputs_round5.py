"""Trust, round 5 (session s13): a ragged CSV row in an OMOP table, event codes that match a label only when
case is ignored, a transformer's heads checked before the store, --until before every event, subjects of
subject_splits.parquet absent from the data, and a label map's header with another separator or spaces."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ehrdx.cli import app

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def words(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_a_ragged_row_in_an_omop_csv_is_an_error_naming_file_and_row_not_a_traceback(tmp_path):
    """An unquoted `5,5` in measurement.csv gives a row one field longer than the header: polars raised its
    ComputeError where the lazily read table was first collected, a traceback (exit 1) naming neither file nor
    row. It is an error naming both and the fix (quote the value), exit 2."""
    omop = tmp_path / "omop"
    omop.mkdir()
    (omop / "person.csv").write_text("person_id,year_of_birth\n1,1960\n2,1970\n")
    (omop / "condition_occurrence.csv").write_text("person_id,condition_start_date,condition_source_value\n"
                                                   "1,2020-01-01,E11\n")
    (omop / "measurement.csv").write_text("person_id,measurement_date,measurement_source_value,value_as_number\n"
                                          "1,2020-01-01,HBA1C,6\n1,2020-01-02,HBA1C,5,5\n2,2020-01-03,HBA1C,7\n")
    r = run("targets", "--omop", omop, "--labels", "prefix:CONDITION//", "--out", tmp_path / "t.csv")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "measurement.csv" in said and "more fields than the header's 4" in said and "row 2" in said
    assert "quote such a value" in said and "Traceback" not in said
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("name", ["events.csv", "table.csv"])
def test_a_ragged_row_in_an_events_table_or_a_patient_table_is_named_with_the_fix(tmp_path, name):
    """The events and patient tables said "could not be read (ComputeError; ...)" for the same row, naming
    neither row nor fix; they say what the OMOP reader says."""
    path = tmp_path / name
    if name == "events.csv":
        path.write_text("pid,when,code\n1,2020-01-01,DX//A\n1,2020-01-02,\"DX//B,x\"\n1,2020-01-03,DX//C,5\n")
        r = run("targets", "--events", path, "--subject-col", "pid", "--time-col", "when", "--labels", "prefix:DX//",
                "--out", tmp_path / "t.csv")
    else:
        path.write_text("patient_id,age,diseases\n1,50,E11\n2,60,E11;I10\n3,5,5,I10\n")
        r = run("train", path, "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert f"{name}: a row has more fields than the header's 3 (file line 4)" in said and "row 3" in said
    assert "quote such a value" in said
