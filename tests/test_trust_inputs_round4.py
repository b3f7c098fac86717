"""Found by trying ehrdx on messy input (session s13): values beyond the store's float32 range, text in an OMOP
value column, CSV columns whose type changes after the first rows, label maps saved by Excel, inputs with no
events or no prediction times, prediction times none of which is in the split scored."""

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.meds import iter_event_table, normalise_events
from ehrdx.data.omop import iter_omop
from ehrdx.data.store import build_store
from ehrdx.errors import DataError
from ehrdx.events_pipeline import open_store
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import read_prediction_times

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def test_a_value_beyond_float32_range_is_counted_and_set_to_null_not_stored_as_inf(tmp_path):
    """A float64 MEDS shard with a lab value of 1e300 (an export's overflow) became inf in the float32 store
    without a word; the code's mean in preprocessing.json turned inf and every value of that lab read as 0.
    It is set to null and counted, like inf itself."""
    frame = pl.DataFrame({"subject_id": [1, 1, 1], "time": [datetime(2020, 1, 1)] * 3,
                          "code": ["LAB//A", "LAB//A", "LAB//A"], "numeric_value": [1.5, 1e300, -1e300]})
    shard = normalise_events(frame, "0.parquet")
    assert shard.counts["values_beyond_float32_range_set_to_null"] == 2
    store = build_store([shard], tmp_path / "store")
    values = np.asarray(store.values)
    assert not np.isinf(values).any()
    assert np.isnan(values).sum() == 2 and np.nanmax(values) == np.float32(1.5)


def _omop(root, values):
    root.mkdir()
    (root / "person.csv").write_text("person_id,year_of_birth\n1,1960\n")
    rows = "".join(f"1,2020-01-0{i + 1},HBA1C,{v}\n" for i, v in enumerate(values))
    (root / "measurement.csv").write_text("person_id,measurement_date,measurement_source_value,value_as_number\n"
                                          + rows)
    return root


def test_text_in_an_omop_value_column_is_an_error_naming_the_rows_not_an_empty_value(tmp_path):
    """value_as_number of `<5` or `5,5` in an OMOP measurement.csv was read as an empty value, silently (a
    MEDS shard or events table with the same text is an error); it is an error naming file, column and rows.
    Spaces around a number are not text."""
    with pytest.raises(DataError, match="text, not numbers") as exc:
        list(iter_omop(_omop(tmp_path / "bad", ["6.5", "<5", "\"5,5\"", ""])))
    msg = str(exc.value)
    assert "measurement.csv" in msg and "value_as_number" in msg and "row 2, row 3" in msg and "row 4" not in msg
    shard = next(iter_omop(_omop(tmp_path / "ok", [" 6.5 ", "7", ""])))
    values = shard.frame.filter(pl.col("code") == "MEASUREMENT//HBA1C").get_column("numeric_value").to_list()
    assert values == [6.5, 7.0, None]


def test_text_in_the_value_column_after_the_first_10000_rows_names_column_and_row(tmp_path):
    """The events CSV's value column was typed from its first 10,000 rows: a text cell after them ended the run
    with "could not be read (ComputeError)", naming neither column nor row."""
    path = tmp_path / "events.csv"
    path.write_text("pid,when,code,value\n" + "1,2020-01-01,LAB//A,1.5\n" * 10_001 + "1,2020-01-02,LAB//A,high\n")
    with pytest.raises(DataError, match="text in the numeric value column") as exc:
        list(iter_event_table(path, subject_col="pid", time_col="when", code_col="code", value_col="value"))
    assert "column 'value'" in str(exc.value) and "row 10002" in str(exc.value)


def test_a_times_file_with_a_late_text_cell_in_another_column_or_of_0_bytes_is_an_error_not_a_traceback(tmp_path):
    """A --times CSV with a note column holding numbers for 100 rows and then text stopped with a polars
    traceback (exit 1), and so did a times file of 0 bytes; the extra column is ignored and the empty file is
    an error naming it."""
    store = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")
    sid = int(store.subject_ids[0])
    times = tmp_path / "times.csv"
    times.write_text("subject_id,prediction_time,note\n"
                     + "".join(f"{sid},2020-01-01T00:{i // 60:02d}:{i % 60:02d},{i}\n" for i in range(150))
                     + f"{sid},2020-01-02,late\n")
    rows, _ = read_prediction_times(times, store)
    assert len(rows) == 151
    times.write_bytes(b"")
    with pytest.raises(DataError, match="the file is empty") as exc:
        read_prediction_times(times, store)
    assert "times.csv" in str(exc.value)


@pytest.mark.parametrize("name", ["map.csv", "map.json"])
def test_a_label_map_with_a_byte_order_mark_reads_and_one_not_in_utf8_is_an_error(tmp_path, name):
    """Excel's "CSV UTF-8" starts with a byte-order mark: the map was refused with "no 'code' column (columns:
    \ufeffcode, label)" (a JSON one as malformed at line 1); a Latin-1 map (Excel's plain CSV) stopped with
    a UnicodeDecodeError traceback."""
    path = tmp_path / name
    text = "code,label,description\nDX//E11*,E11,Diab\u00e8te\n" if name.endswith(".csv") else '{"DX//E11*": "E11"}'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert LabelSelector.parse(f"map:{path}").mapping == {"DX//E11*": ["E11"]}
    path.write_bytes(text.encode("latin-1"))
    if name.endswith(".csv"):
        with pytest.raises(DataError, match="not UTF-8 text") as exc:
            LabelSelector.parse(f"map:{path}")
        assert name in str(exc.value)


@pytest.mark.parametrize("rows", ["", "1,2020-01-01,,\n1,2020-01-02, ,\n"])
def test_an_events_table_with_no_events_is_an_error_naming_it_not_the_temporary_store(tmp_path, rows):
    """A header-only events CSV (or one whose every code is empty) trained into "/tmp/ehrdx_store_x: no training
    patients", naming a folder gone at exit, and predict wrote an empty predictions file as if all were well;
    both name the events file, and what was left out."""
    events = tmp_path / "events.csv"
    events.write_text("pid,when,code,value\n" + rows)
    cols = ["--events", str(events), "--subject-col", "pid", "--time-col", "when", "--value-col", "value"]
    r = CliRunner().invoke(app, ["targets", *cols, "--labels", "prefix:DX//", "--out", str(tmp_path / "t.csv")])
    assert r.exit_code == 2, r.output
    assert "events.csv: no events" in r.output and "ehrdx_store" not in r.output
    assert ("null codes excluded: 2" in r.output) == bool(rows)
    assert not (tmp_path / "t.csv").exists()


def test_a_times_file_with_a_header_only_is_an_error_not_an_empty_prediction(tmp_path):
    store = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")
    times = tmp_path / "times.csv"
    times.write_text("subject_id,prediction_time\n")
    with pytest.raises(DataError, match="no prediction times") as exc:
        read_prediction_times(times, store)
    assert "times.csv" in str(exc.value)


def test_evaluate_with_times_none_of_which_is_in_the_split_is_an_error_not_metrics_of_nothing(tmp_path):
    """`evaluate --times` of training patients scored the held-out split by default: every time was left out,
    and metrics.json of 0 samples was written, f1_micro 0.0 among the nulls. It stops naming the fix; --split
    all scores them."""
    times = tmp_path / "times.csv"
    times.write_text("subject_id,prediction_time\n1,2030-01-01\n2,2030-01-01\n")  # train patients
    args = ["evaluate", "--meds", str(GOLDEN / "meds"), "--model", str(GOLDEN / "gru_model"), "--times", str(times),
            "--out", str(tmp_path / "m.json")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "nothing to score" in r.output and "--split all" in r.output
    assert not (tmp_path / "m.json").exists()
    r = CliRunner().invoke(app, [*args, "--split", "all"])
    assert r.exit_code == 0, r.output
