"""Trust, outputs round 5 (session s13): the event store's warnings in the HTML report; a patient table's
columns the model does not use named by predict and evaluate; prediction times before the first visit
counted under their own cause; option errors worded as options; numbers with spaces around them read.
Uses the golden fixtures read-only (copies in tmp_path)."""

import json
import shutil
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
