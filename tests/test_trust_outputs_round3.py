"""Trust, round 3 (outputs and the other commands): a model directory whose files were edited to disagree,
a model saved over another one, prediction times files given twice or without subject_id, and OMOP tables
missing a column their events need. Uses the golden fixtures read-only (copies in tmp_path)."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ehrdx
from ehrdx.errors import DataError, ModelError

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def _rehash(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["sha256"] = {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in config["sha256"]}
    (d / "config.json").write_text(json.dumps(config))


def test_labels_json_edited_to_another_number_of_labels_is_refused(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(GOLDEN / "gru_model", d)
    labels = json.loads((d / "labels.json").read_text())
    labels["labels"] = labels["labels"][:-1]  # checksums made to match: predictions would carry wrong names
    (d / "labels.json").write_text(json.dumps(labels))
    _rehash(d)
    with pytest.raises(ModelError, match="different numbers of labels"):
        ehrdx.load(d)


def test_a_file_named_in_config_but_gone_is_called_missing(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(GOLDEN / "gru_model", d)
    (d / "input.json").write_text("{}")
    config = json.loads((d / "config.json").read_text())
    config["sha256"]["input.json"] = hashlib.sha256(b"{}").hexdigest()
    (d / "config.json").write_text(json.dumps(config))
    (d / "input.json").unlink()
    with pytest.raises(ModelError, match="missing input.json"):
        ehrdx.load(d)


def test_a_model_saved_over_another_removes_the_files_of_the_one_gone(tmp_path):
    out = tmp_path / "out"
    shutil.copytree(GOLDEN / "updated_model", out)
    (out / "update_report.json").write_text("{}")  # the earlier update's table: ehrdx report would show it
    (out / "gbm.json").write_text("{}")  # an earlier gbm's boosters
    config = json.loads((out / "config.json").read_text())
    config["sha256"]["gbm.json"] = hashlib.sha256(b"{}").hexdigest()
    (out / "config.json").write_text(json.dumps(config))
    (out / "notes.txt").write_text("mine")
    ehrdx.load(GOLDEN / "gru_model").save(out)
    assert not (out / "update_report.json").exists() and not (out / "gbm.json").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not ehrdx's: kept
    ehrdx.load(out)


@pytest.fixture
def store(tmp_path):
    from ehrdx.events_pipeline import open_store

    return open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")


def test_a_prediction_time_given_twice_is_refused_naming_the_rows(tmp_path, store):
    from ehrdx.tasks.task import read_prediction_times

    sid = int(store.subject_ids[0])
    times = tmp_path / "times.csv"
    times.write_text(f"subject_id,prediction_time\n{sid},2020-01-01\n{sid},2020-01-01T02:00:00+02:00\n")
    with pytest.raises(DataError, match="more than once") as e:
        read_prediction_times(times, store)
    assert "times.csv" in str(e.value) and "row 1" in str(e.value) and "row 2" in str(e.value)


def test_a_times_file_without_subject_id_is_an_error_not_a_traceback(tmp_path, store):
    from ehrdx.tasks.task import read_prediction_times

    times = tmp_path / "times.csv"
    times.write_text("pid,prediction_time\n1,2020-01-01\n")
    with pytest.raises(DataError, match="no 'subject_id' column"):
        read_prediction_times(times, store)


@pytest.mark.parametrize("table, drop, needle", [
    ("condition_occurrence.csv", ["condition_source_value"], "no condition_source_value column"),
    ("condition_occurrence.csv", ["condition_start_date", "condition_start_datetime"], "none of its rows has a time"),
    ("measurement.parquet", ["value_as_number"], "no value_as_number column"),
])
def test_an_omop_table_missing_a_column_its_events_need_is_an_error(tmp_path, table, drop, needle):
    sys.path.insert(0, str(Path(__file__).parent))
    from ehrdx.data.omop import iter_omop
    from ehrdx.data.synth_visits import generate_longitudinal
    from test_omop import PREFIXES, write_omop

    root = write_omop(generate_longitudinal(30, seed=3).events, tmp_path / "omop")
    path = root / table
    frame = pl.read_csv(path) if path.suffix == ".csv" else pl.read_parquet(path)
    frame = frame.drop(drop)
    frame.write_csv(path) if path.suffix == ".csv" else frame.write_parquet(path)
    with pytest.raises(DataError, match=needle) as e:
        list(iter_omop(root, prefixes=PREFIXES))
    assert table in str(e.value) and "fix:" in str(e.value)


def test_pretrain_with_too_high_min_count_names_the_option_not_the_store_folder(store):
    import numpy as np

    from ehrdx.pretrain import pretrain

    rows = np.arange(len(store.subject_ids))
    with pytest.raises(DataError) as e:
        pretrain(store, (rows, rows[:0], rows[:0]), min_count=10**9, max_epochs=1)
    assert "--min-count" in str(e.value) and str(store.directory) not in str(e.value)


def test_update_add_with_a_date_after_the_data_is_refused_not_a_label_learned_from_nothing(tmp_path):
    from typer.testing import CliRunner

    from ehrdx.cli import app

    r = CliRunner().invoke(app, [str(a) for a in (
        "update", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--add", "U07.1=2100-01-01",
        "--epochs", "1", "--out", tmp_path / "new")])
    assert r.exit_code == 2, r.output
    assert "U07.1" in r.output and "no positive training sample" in r.output and "--add" in r.output
    assert not (tmp_path / "new").exists()


def test_times_file_rows_are_named_as_written_even_when_out_of_order(tmp_path, store):
    from ehrdx.tasks.task import read_prediction_times

    sid = int(store.subject_ids[-1])
    times = tmp_path / "times.csv"  # row 2 is unknown; row 3 sorts before it
    times.write_text(f"subject_id,prediction_time\n{sid},2020-01-01\n999999999,2019-01-01\n{sid},2019-01-01\n")
    with pytest.raises(DataError, match="not in the event data") as e:
        read_prediction_times(times, store)
    assert "row 2" in str(e.value) and "row 3" not in str(e.value)


def test_a_prediction_time_after_death_is_refused(tmp_path, store):
    import numpy as np

    from ehrdx.tasks.task import read_prediction_times

    death = store.code_names.index("MEDS_DEATH")
    pos = int(np.flatnonzero(np.asarray(store.codes) == death)[0])
    row = int(np.searchsorted(np.asarray(store.offsets), pos, side="right") - 1)
    sid, when = int(store.subject_ids[row]), int(np.asarray(store.times)[pos])
    iso = lambda s: np.datetime64(s, "s").astype(str)
    times = tmp_path / "times.csv"
    times.write_text(f"subject_id,prediction_time\n{sid},{iso(when)}\n{sid},{iso(when + 86400)}\n")
    with pytest.raises(DataError, match="after the patient's death") as e:
        read_prediction_times(times, store)
    assert "row 2" in str(e.value) and "row 1" not in str(e.value)
    times.write_text(f"subject_id,prediction_time\n{sid},{iso(when)}\n")  # at death: still allowed
    assert len(read_prediction_times(times, store)[0]) == 1


def test_a_table_label_with_one_class_in_training_is_named_in_the_summary_and_the_report(tmp_path):
    """Every patient has E11 (no negative), nobody has a label that only the test part would hold: the model
    cannot learn E11 and said nothing (only 'no negatives' in the test table)."""
    from typer.testing import CliRunner

    from ehrdx.cli import app

    rng = np.random.default_rng(0)
    rows = ["patient_id,age,gender,diagnosis_codes,diseases"]
    for i in range(120):
        extra = ";I10" if rng.random() < 0.4 else ""
        rows.append(f"P{i},{40 + i % 30},{'MF'[i % 2]},D{i % 7};D{(i * 3) % 11},E11{extra}")
    data = tmp_path / "t.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m"
    result = CliRunner().invoke(app, ["train", str(data), "--label-col", "diseases", "--out", str(out),
                                      "--epochs", "2", "--model", "logistic"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())["train_summary"]
    assert summary["labels_with_one_class_in_training"] == {"no_negatives": ["E11"]}
    assert "1 label(s) with no negatives among the training samples" in " ".join(result.output.split())
