"""What the command-line tests share: run `ehrdx` in-process, read its output without rich's wrapping, and the
golden fixtures' folder."""

from pathlib import Path

from typer.testing import CliRunner

from ehrdx.cli import app

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def words(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def small_omop(tmp_path: Path, measurement_rows: str) -> Path:
    """A two-person OMOP export with one condition; `measurement_rows`: measurement.csv's data lines."""
    omop = tmp_path / "omop"
    omop.mkdir()
    (omop / "person.csv").write_text("person_id,year_of_birth\n1,1960\n2,1970\n")
    (omop / "condition_occurrence.csv").write_text("person_id,condition_start_date,condition_source_value\n"
                                                   "1,2020-01-01,E11\n")
    (omop / "measurement.csv").write_text("person_id,measurement_date,measurement_source_value,value_as_number\n"
                                          + measurement_rows)
    return omop
