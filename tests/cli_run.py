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


def events_with_lower_case_codes(tmp_path, patients: int = 40):
    """Events whose diabetes codes are in lower case in half the patients (`dx//e11.2`), a J44 in two thirds,
    and label maps of upper-case patterns: without J44 (the model's) and with it (the update's)."""
    rows = []
    for p in range(1, patients + 1):
        dm = "DX//E11.9" if p % 2 else "dx//e11.2"
        rows += [f"{p},2020-01-01,DX//I10", f"{p},2020-03-01,{dm}", f"{p},2020-06-01,DX//{'J44.1' if p % 3 else 'I10'}",
                 f"{p},2020-09-01,{'DX//I10' if p % 4 else dm}", f"{p},2020-12-01,DX//E11.9"]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    old_map, new_map = tmp_path / "old_map.csv", tmp_path / "new_map.csv"
    old_map.write_text("code,label\nDX//E11*,E11\nDX//I10*,I10\n")
    new_map.write_text("code,label\nDX//E11*,E11\nDX//I10*,I10\nDX//J44*,J44\n")
    return events, old_map, new_map
