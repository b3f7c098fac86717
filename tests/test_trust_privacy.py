"""Privacy, round 2: a header row that is data, identifier-like columns kept out of models, explanations
without exact dates or values, and temporary stores removed when a run is stopped by a signal."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import ehrdx
from ehrdx.cli import app
from ehrdx.data.meds import normalise_events
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.data.table import TableSchema, header_looks_like_data, read_table, table_from_frame
from ehrdx.errors import DataError, show_identifiers
from ehrdx.estimator import EHRClassifier
from ehrdx.tempdirs import remove_temporary_directories, temporary_directory

SRC = str(Path(__file__).resolve().parents[1] / "src")


# -- temporary stores on SIGTERM / Ctrl-C --------------------------------------------------------------

@pytest.fixture(scope="module")
def small_meds(tmp_path_factory):
    return write_longitudinal(generate_longitudinal(300, seed=5), tmp_path_factory.mktemp("sig") / "c")


def test_a_train_stopped_by_sigterm_removes_its_temporary_store(small_meds, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ehrdx", "train", "--meds", str(small_meds["meds"]), "--labels",
           f"map:{small_meds['label_map']}", "--model", "gru", "--hidden", "16", "--epochs", "500",
           "--patience", "500", "--out", str(tmp_path / "m")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # wait until the store is complete (its meta file is written last) so training is under way
        while not list(tmp.glob("ehrdx_store_*/meta.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no temporary store appeared"
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143
    assert list(tmp.glob("ehrdx_store_*")) == []


def test_ctrl_c_removes_temporary_directories_and_still_interrupts():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh `ehrdx` process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    path = temporary_directory("ehrdx_store_")
    (path / "subject_ids.bin").write_bytes(b"\x01" * 8)
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes
        assert not path.exists()
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
        remove_temporary_directories()


# -- a CSV without a header row ----------------------------------------------------------------------

FIRST_ROW = "987654321,68,M,123.4567,D1;D2"


def _headerless_csv(path, n=25):
    rows = [FIRST_ROW] + [f"{987654321 + i},{40 + i % 30},{'MF'[i % 2]},{100 + i * 0.37:.4f},D{1 + i % 3}"
                          for i in range(1, n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_csv_without_a_header_row_is_refused_without_printing_its_first_row(tmp_path):
    show_identifiers(False)
    path = _headerless_csv(tmp_path / "no_header.csv")
    with pytest.raises(DataError) as err:
        read_table(path)
    msg = str(err.value)
    assert "no header row" in msg and str(path) in msg and "add a first row naming the columns" in msg
    shown = msg.replace(str(path), "")  # the temporary path may hold digits (pytest-68): not a cell
    for cell in ("987654321", "123.4567", "68", "D1;D2"):
        assert cell not in shown
    r = CliRunner().invoke(app, ["train", str(path), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "no header row" in r.output and "987654321" not in r.output


def test_no_header_names_are_shown_with_show_ids(tmp_path, show_ids):
    with pytest.raises(DataError) as err:
        read_table(_headerless_csv(tmp_path / "no_header.csv"))
    assert "no header row" in str(err.value) and "987654321" in str(err.value)


def test_other_errors_hide_column_names_that_look_like_data(tmp_path):
    show_identifiers(False)
    path = _headerless_csv(tmp_path / "no_header.csv")
    frame = pl.read_csv(path)
    schema = TableSchema(id_column="patient_id", label_column="diseases", numeric=["age"])
    with pytest.raises(DataError) as err:  # predict with a trained model's schema
        table_from_frame(frame, source=str(path), schema=schema, fixed_schema=True)
    msg = str(err.value)
    assert "no header row" in msg and "987654321" not in msg
    with pytest.raises(DataError) as err:  # an events table without a header
        normalise_events(pl.DataFrame({"1": [1], "2020-01-01": ["2020-01-01"], "DX//E11": ["x"], "7.1": [1.0]}),
                         "events.csv")
    assert "2020-01-01" not in str(err.value) and "names hidden" in str(err.value)


def test_a_real_header_with_some_numeric_names_is_still_a_header():
    assert header_looks_like_data(["987654321", "68", "M", "123.4567", "D1;D2"])
    assert header_looks_like_data(["2020-01-31", "E11", "7.5"])
    assert not header_looks_like_data(["patient_id", "2019", "2020", "2021"])  # an id name: a header
    assert not header_looks_like_data(["mrn", "age", "sex", "2020", "diseases"])
    assert not header_looks_like_data(["person", "age", "sex", "x1"])


# -- identifier-like columns ---------------------------------------------------------------------------

def _table_with_identifiers(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "patient_id": [f"P{i:03d}" for i in range(n)],
        "mrn": [f"MRN{int(x):08d}" for x in rng.choice(10**8, n, replace=False)],  # text, unique per patient
        "record_no": rng.choice(np.arange(10**6, 10**7), n, replace=False),  # 7-digit integers, unique
        "age": rng.integers(30, 80, n),  # integers, repeated
        "cholesterol": rng.choice(np.arange(120, 320), n, replace=False),  # integer lab, unique but < 10,000
        "creatinine": rng.normal(1.0, 0.2, n).round(4),  # a measurement, unique
        "sex": rng.choice(["F", "M"], n),
        "diseases": [f"D{1 + i % 3}" + (";D4" if i % 5 == 0 else "") for i in range(n)],
    })


def test_columns_unique_per_patient_are_left_out_of_the_features_and_counted():
    table = table_from_frame(_table_with_identifiers())
    assert table.schema.identifier_like == ["mrn", "record_no"]
    assert table.schema.numeric == ["age", "cholesterol", "creatinine"]
    assert table.schema.categorical == ["sex"]
    assert table.notes["identifier_like_columns"] == 2 and "ignored_columns" not in table.notes
    small = table_from_frame(_table_with_identifiers(n=15))  # too few rows to tell: a category
    assert small.schema.identifier_like == [] and "mrn" in small.schema.categorical


def test_no_identifier_value_reaches_the_model_directory(tmp_path):
    frame = _table_with_identifiers()
    clf = EHRClassifier(hidden=8, max_epochs=1, seed=0).fit(frame)
    assert clf.fit_summary_["identifier_like_columns"] == ["mrn", "record_no"]
    clf.save(tmp_path / "model")
    stored = "".join(p.read_text() for p in (tmp_path / "model").glob("*.json"))
    assert not any(m in stored for m in frame.get_column("mrn").to_list())
    assert not any(str(r) in stored for r in frame.get_column("record_no").to_list())
    again = ehrdx.load(tmp_path / "model")  # the columns stay out at prediction time too
    assert again.encoder_.schema.identifier_like == ["mrn", "record_no"]
    np.testing.assert_allclose(again.predict_proba(frame), clf.predict_proba(frame), atol=1e-6)


def test_train_reports_identifier_like_columns_and_refuses_them_as_declared_categories(tmp_path):
    frame = _table_with_identifiers()
    frame.write_csv(tmp_path / "t.csv")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--epochs", "1",
                                 "--hidden", "8"])
    assert r.exit_code == 0, r.output
    assert "identifier-like" in r.output and "2 column(s): mrn, record_no" in r.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["excluded"]["identifier_like_columns"] == 2
    assert metrics["train_summary"]["identifier_like_columns"] == ["mrn", "record_no"]
    show_identifiers(False)
    r = CliRunner().invoke(app, ["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m2"),
                                 "--categorical", "mrn,sex", "--epochs", "1"])
    assert r.exit_code == 2 and "declared categorical" in r.output and "column 'mrn'" in r.output
    assert not any(m in r.output for m in frame.get_column("mrn").to_list())
