"""Patient ids are kept as given, end to end: 007 is not 7, in patient tables and in events tables (whose
text ids are mapped to the store's int64 ids and back)."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.meds import iter_event_table
from ehrdx.data.store import EventStore, build_store
from ehrdx.data.table import read_table
from ehrdx.errors import DataError

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- patient tables ------------------------------------------------------------------------------
TABLE_IDS = ["007", "7", "A-12", "0001", "1", *(f"P{i:03d}" for i in range(35))]


def write_table(path, ids=TABLE_IDS, id_name="patient_id"):
    rng = np.random.default_rng(0)
    n = len(ids)
    age = rng.integers(20, 80, n)
    diseases = [("Disease_A" if a > 50 else "Disease_B") + (";Disease_C" if i % 3 == 0 else "")
                for i, a in enumerate(age)]
    frame = pl.DataFrame({id_name: ids, "age": age, "sex": rng.choice(["F", "M"], n), "diseases": diseases})
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
    return path


@pytest.fixture(scope="module")
def table_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("table_ids")
    data = write_table(d / "patients.csv")
    r = run("train", data, "--out", d / "m", "--epochs", "2", "--hidden", "8")
    assert r.exit_code == 0, r.output
    return d, data


def test_a_csv_table_keeps_ids_as_written_and_007_is_not_7(tmp_path):
    t = read_table(write_table(tmp_path / "p.csv"))
    assert t.patient_ids == TABLE_IDS  # no duplicate error: 007 and 7 (and 0001 and 1) are four patients
    assert t.id_series().to_list() == TABLE_IDS


def test_007_round_trips_through_train_and_predict(table_model, tmp_path):
    d, data = table_model
    r = run("predict", data, "--model", d / "m", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    preds = pl.read_csv(tmp_path / "p.csv", infer_schema=False)
    assert preds.get_column("patient_id").to_list() == TABLE_IDS
    r = run("predict", data, "--model", d / "m", "--out", tmp_path / "p.parquet")
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(tmp_path / "p.parquet").get_column("patient_id").to_list() == TABLE_IDS
    # the model directory holds no patient id
    for f in (d / "m").iterdir():
        if f.suffix == ".json":
            assert "A-12" not in f.read_text() and "P034" not in f.read_text(), f.name


def test_integer_ids_from_parquet_stay_integers(table_model, tmp_path):
    d, _ = table_model
    data = write_table(tmp_path / "ints.parquet", ids=list(range(100, 140)))
    r = run("predict", data, "--model", d / "m", "--out", tmp_path / "p.parquet")
    assert r.exit_code == 0, r.output
    ids = pl.read_parquet(tmp_path / "p.parquet").get_column("patient_id")
    assert ids.dtype == pl.Int64 and ids.to_list() == list(range(100, 140))


def test_predict_and_evaluate_take_id_col_or_infer_the_id_column(table_model, tmp_path):
    d, _ = table_model
    mrn = write_table(tmp_path / "mrn.csv", id_name="mrn")
    r = run("predict", mrn, "--model", d / "m", "--out", tmp_path / "p.csv")
    assert r.exit_code == 2 and "--id-col" in r.output and "Traceback" not in r.output
    r = run("predict", mrn, "--model", d / "m", "--out", tmp_path / "p.csv", "--id-col", "mrn")
    assert r.exit_code == 0, r.output
    assert pl.read_csv(tmp_path / "p.csv", infer_schema=False).get_column("mrn").to_list() == TABLE_IDS
    r = run("evaluate", mrn, "--model", d / "m", "--id-col", "mrn", "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["n_samples"] == len(TABLE_IDS)
    # a usual id name other than the trained one is found as in training
    subj = write_table(tmp_path / "subj.csv", id_name="subject_id")
    r = run("predict", subj, "--model", d / "m", "--out", tmp_path / "q.csv")
    assert r.exit_code == 0, r.output
    assert pl.read_csv(tmp_path / "q.csv", infer_schema=False).get_column("subject_id").to_list() == TABLE_IDS


# -- events tables ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_events(tmp_path_factory):
    """The same small cohort twice: integer ids, and text ids (two of them 007 and 7), plus a GRU trained
    on the text version."""
    from ehrdx.data.synth_visits import generate_longitudinal

    d = tmp_path_factory.mktemp("event_ids")
    c = generate_longitudinal(250, seed=3)
    ints = c.events.get_column("subject_id").unique().sort().to_list()
    text = {s: f"P-{s:05d}" for s in ints} | {ints[0]: "007", ints[1]: "7"}
    events = c.events.with_columns(pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    events.write_csv(d / "ints.csv")
    events.with_columns(pl.col("subject_id").replace_strict(text, return_dtype=pl.Utf8)).write_csv(d / "text.csv")
    c.label_map.write_csv(d / "label_map.csv")
    r = run("train", "--events", d / "text.csv", "--labels", f"map:{d / 'label_map.csv'}", "--model", "gru",
            "--hidden", "16", "--epochs", "1", "--out", d / "m", "--store", d / "store")
    assert r.exit_code == 0, r.output
    return d, text


def test_text_ids_in_an_events_table_are_mapped_in_sorted_order_and_stored(text_events):
    d, text = text_events
    store = EventStore(d / "store")
    assert store.meta["subject_id_map"]["file"] == "subject_ids.parquet"
    originals = sorted(text.values())
    assert store.subject_ids.tolist() == list(range(len(originals)))
    assert store.original_ids(np.asarray(store.subject_ids)).to_list() == originals
    assert store.store_ids(["7", "007"], "test").tolist() == [originals.index("7"), originals.index("007")]
    with pytest.raises(DataError, match="1 row\\(s\\) for subjects not in the event data"):
        store.store_ids(["0007"], "test")
    # the model directory holds no subject id, mapped or not
    for f in (d / "m").iterdir():
        assert f.name != "subject_ids.parquet"
        if f.suffix == ".json":
            assert "P-0" not in f.read_text(), f.name


def test_integer_ids_need_no_mapping_and_text_never_names_an_integer_subject(text_events, tmp_path):
    d, _ = text_events
    store = build_store(iter_event_table(d / "ints.csv"), tmp_path / "s")
    assert "subject_id_map" not in store.meta and not (tmp_path / "s" / "subject_ids.parquet").exists()
    first = int(store.subject_ids[0])
    assert store.original_ids(np.asarray(store.subject_ids[:1])).to_list() == [first]
    assert store.store_ids([str(first)], "test").tolist() == [first]
    with pytest.raises(DataError, match="not in the event data"):
        store.store_ids([f"00{first}"], "test")


def test_predictions_from_text_ids_carry_the_original_ids(text_events, tmp_path):
    d, text = text_events
    for name in ("text", "ints"):
        r = run("predict", "--events", d / f"{name}.csv", "--model", d / "m", "--out", tmp_path / f"{name}.csv")
        assert r.exit_code == 0, r.output
    by_text = pl.read_csv(tmp_path / "text.csv", schema_overrides={"subject_id": pl.Utf8})
    by_int = pl.read_csv(tmp_path / "ints.csv").with_columns(
        pl.col("subject_id").replace_strict(text, return_dtype=pl.Utf8))
    assert {"007", "7"} <= set(by_text.get_column("subject_id").to_list())
    key = ["subject_id", "prediction_time"]
    joined = by_int.join(by_text, on=key, how="full", suffix="_text", coalesce=True)
    assert joined.height == by_text.height == by_int.height  # the same (patient, time) rows, ids as given
    p = [c for c in by_int.columns if c.startswith("p_")]
    np.testing.assert_allclose(joined.select(p).to_numpy(), joined.select([f"{c}_text" for c in p]).to_numpy(),
                               atol=1e-5)


def test_a_times_file_and_explain_use_the_ids_as_written(text_events, tmp_path):
    d, _ = text_events
    pl.DataFrame({"subject_id": ["007", "7"], "prediction_time": ["2030-01-01", "2030-01-01"]}).write_csv(
        tmp_path / "times.csv")
    r = run("predict", "--events", d / "text.csv", "--model", d / "m", "--out", tmp_path / "p.csv",
            "--times", tmp_path / "times.csv")
    assert r.exit_code == 0, r.output
    p = pl.read_csv(tmp_path / "p.csv", schema_overrides={"subject_id": pl.Utf8})
    assert p.get_column("subject_id").to_list() == ["007", "7"]
    assert p.get_column(p.columns[3]).n_unique() == 2  # two patients, two histories
    pl.DataFrame({"subject_id": ["0007"], "prediction_time": ["2030-01-01"]}).write_csv(tmp_path / "bad.csv")
    r = run("predict", "--events", d / "text.csv", "--model", d / "m", "--out", tmp_path / "p.csv",
            "--times", tmp_path / "bad.csv")
    assert r.exit_code == 2 and "not in the event data" in r.output and "0007" not in r.output

    r = run("explain", "--events", d / "text.csv", "--model", d / "m", "--patient", "007", "--top", "1")
    assert r.exit_code == 0, r.output
    r = run("explain", "--events", d / "text.csv", "--model", d / "m", "--patient", "0007")
    assert r.exit_code == 2 and "not in the event data" in r.output


def test_targets_keep_text_ids_and_read_back(text_events, tmp_path):
    d, _ = text_events
    lm = f"map:{d / 'label_map.csv'}"
    r = run("targets", "--events", d / "text.csv", "--labels", lm, "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    ids = set(pl.read_csv(tmp_path / "t.csv", infer_schema=False).get_column("subject_id").to_list())
    assert {"007", "7"} <= ids and all(not i.isdigit() or i in ("007", "7") for i in ids)
    r = run("evaluate", "--events", d / "text.csv", "--model", d / "m", "--targets", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    r = run("targets", "--events", d / "text.csv", "--labels", lm, "--format", "meds", "--out", tmp_path / "tasks")
    assert r.exit_code == 2 and "--format long" in r.output


@pytest.mark.usefixtures("show_ids")
def test_meds_subject_ids_must_still_be_integers():
    from datetime import datetime

    from ehrdx.data.meds import normalise_events

    frame = pl.DataFrame({"subject_id": ["x"], "time": [datetime(2020, 1, 1)], "code": ["A"]})
    with pytest.raises(DataError, match="subject ids must be integers"):
        normalise_events(frame, "data/train/0.parquet")
    assert normalise_events(frame, "events.csv", text_ids=True).subject_map.get_column(
        "original_subject_id").to_list() == ["x"]
