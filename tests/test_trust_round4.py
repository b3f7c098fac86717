"""Trust, round 4 (session s13): an unreadable codes.parquet said, not ignored."""

import json
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.events_pipeline import open_store

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def words(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("round4")
    paths = write_longitudinal(generate_longitudinal(40, seed=3), root / "c")
    return {"meds": paths["meds"], "label_map": paths["label_map"]}


def meds_with_codes_file(cohort, tmp_path, kind: str):
    meds = tmp_path / "meds"
    shutil.copytree(cohort["meds"], meds)
    path = meds / "metadata" / "codes.parquet"
    if kind == "garbage":
        path.write_bytes(b"\x00not a parquet file\xff" * 10)
    else:  # a parquet, but not MEDS code metadata
        pl.DataFrame({"concept": ["DX//I10"], "name": ["High blood pressure"]}).write_parquet(path)
    return meds


@pytest.mark.parametrize(("kind", "why"), [("garbage", "not a readable parquet file"),
                                           ("wrong_schema", "no 'code' or 'description' column")])
def test_an_unreadable_codes_parquet_is_said_naming_the_file_and_why(cohort, tmp_path, kind, why):
    """codes.parquet only names codes, so the run goes on without it, but says so: the store keeps a
    warning naming the file, why and the fix (before, the file was skipped without a word)."""
    meds = meds_with_codes_file(cohort, tmp_path, kind)
    st = open_store(meds=meds, store_dir=tmp_path / "store")
    assert st.code_descriptions() == {}
    [warning] = st.warnings
    assert str(meds / "metadata" / "codes.parquet") in warning and why in warning and "fix:" in warning


def test_an_unreadable_codes_parquet_is_said_in_the_terminal_and_in_metrics_json(cohort, tmp_path):
    meds = meds_with_codes_file(cohort, tmp_path, "garbage")
    r = run("train", "--meds", meds, "--labels", f"map:{cohort['label_map']}", "--model", "logistic",
            "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "codes.parquet: not a readable parquet file" in words(r.output)
    [warning] = json.loads((tmp_path / "m" / "metrics.json").read_text())["warnings"]
    assert "codes.parquet" in warning and "code descriptions left out" in warning
