"""Trust, round 4 (session s13): an unreadable codes.parquet said, not ignored; ignored columns named;
explain --time after death refused as predict --times refuses it; explain, report and pretrain refuse a model
or settings they cannot use before building the event store."""

import json
import shutil

import polars as pl
import pytest

from cli_run import run, words
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.events_pipeline import open_store


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("round4")
    paths = write_longitudinal(generate_longitudinal(40, seed=3), root / "c")
    return {"root": root, "meds": paths["meds"], "label_map": paths["label_map"]}


@pytest.fixture(scope="module")
def gru(cohort):
    """A small GRU trained on the cohort (what ehrdx explain reads)."""
    out = cohort["root"] / "gru"
    r = run("train", "--meds", cohort["meds"], "--labels", f"map:{cohort['label_map']}", "--model", "gru",
            "--hidden", "8", "--epochs", "1", "--out", out)
    assert r.exit_code == 0, r.output
    return out


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


@pytest.fixture(scope="module")
def logistic(cohort):
    """A model that is no sequence model (nothing to explain event by event)."""
    out = cohort["root"] / "logistic"
    r = run("train", "--meds", cohort["meds"], "--labels", f"map:{cohort['label_map']}", "--model", "logistic",
            "--out", out)
    assert r.exit_code == 0, r.output
    return out


# -- ignored columns are named --------------------------------------------------------------------------

def test_ignored_table_columns_are_named_the_first_few_then_how_many_more(seed_table_path, tmp_path):
    """"ignored columns: 8" did not say which, so a column left out by mistake (a --ignore list too wide)
    went unnoticed. The line names the first five in the table's order, then "and K more"."""
    table = pl.read_csv(seed_table_path).with_columns(pl.lit(1.0).alias(f"extra_{i}") for i in range(7))
    table.write_csv(tmp_path / "t.csv")
    ignored = ["cholesterol", *(f"extra_{i}" for i in range(7))]
    r = run("train", tmp_path / "t.csv", "--ignore", ",".join(reversed(ignored)), "--model", "logistic",
            "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "ignored columns: 8 (cholesterol, extra_0, extra_1, extra_2, extra_3 and 3 more)" in words(r.output)
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["excluded_names"]["ignored_columns"] == ignored


def test_ignored_event_columns_are_named_once_over_shards(tmp_path):
    """An events table's or MEDS shards' extra columns are named; a column in every shard counts once
    (it was counted once per shard: two shards with `unit` said "ignored columns: 2")."""
    for k in (1, 2):
        pl.DataFrame({"subject_id": [k], "time": ["2020-01-01"], "code": ["DX//A"], "unit": ["mg"],
                      **({"ward": ["B"]} if k == 2 else {})}).write_parquet(tmp_path / f"{k}.parquet")
    from ehrdx.data.meds import normalise_events
    from ehrdx.data.store import build_store

    shards = [normalise_events(pl.read_parquet(tmp_path / f"{k}.parquet"), f"{k}.parquet") for k in (1, 2)]
    st = build_store(shards, tmp_path / "store")
    assert st.counts["ignored_columns"] == 2 and st.names["ignored_columns"] == ["unit", "ward"]
    events = tmp_path / "ev.csv"
    events.write_text("subject_id,time,code,unit,ward\n1,2020-01-01,DX//A,mg,B\n1,2020-02-01,DX//B,,B\n")
    r = run("targets", "--events", events, "--labels", "prefix:DX//", "--out", tmp_path / "t.parquet")
    assert r.exit_code == 0, r.output
    assert "ignored columns: 2 (unit, ward)" in words(r.output)


# -- explain --time after death -------------------------------------------------------------------------

def test_explain_at_a_time_after_the_patient_s_death_is_refused_as_predict_refuses_it(cohort, gru, tmp_path):
    """predict --times refuses a time after the patient's MEDS_DEATH (exit 2); explain --time explained
    the last prediction before death instead, without a word. It refuses it the same way."""
    died = pl.read_parquet(cohort["meds"] / "data").filter(pl.col("code") == "MEDS_DEATH").row(0, named=True)
    patient, death = died["subject_id"], died["time"]
    times = tmp_path / "times.csv"
    times.write_text(f"subject_id,prediction_time\n{patient},{death.year + 1}-01-01\n")
    predicted = run("predict", "--model", gru, "--meds", cohort["meds"], "--times", times, "--split", "all",
                    "--out", tmp_path / "p.csv")
    assert predicted.exit_code == 2 and "after the patient's death (MEDS_DEATH)" in words(predicted.output)
    r = run("explain", "--model", gru, "--meds", cohort["meds"], "--patient", patient, "--time",
            f"{death.year + 1}-01-01")
    assert r.exit_code == 2, r.output
    assert "--time" in r.output and "after the patient's death (MEDS_DEATH)" in words(r.output)
    before = run("explain", "--model", gru, "--meds", cohort["meds"], "--patient", patient, "--time",
                 death.date().isoformat())
    assert before.exit_code == 0, before.output


# -- refused before the event store is built ---------------------------------------------------------------

@pytest.mark.parametrize(("command", "why"), [
    (["explain", "--model", "{logistic}", "--patient", "9"], "explanations need a sequence model"),
    (["explain", "--model", "{gru}", "--patient", "9", "--labels", "NOPE"], "NOPE not in the model"),
    (["explain", "--model", "{gru}", "--patient", "9", "--time", "yesterday"], "unreadable date"),
    (["report", "--model", "{logistic}", "--explain-patients", "9", "--out", "{tmp}/r.html"],
     "explanations need a sequence model"),
    (["pretrain", "--model", "logistic", "--out", "{tmp}/enc"], "pretraining is for sequence models"),
    (["pretrain", "--model", "transformer", "--hidden", "16", "--heads", "3", "--out", "{tmp}/enc"],
     "not divisible by heads"),
])
def test_a_model_or_setting_the_command_cannot_use_is_refused_before_the_store_is_built(
        cohort, gru, logistic, tmp_path, command, why):
    """These were refused only after the events were converted into the store (minutes on big data); the
    same refusal now comes first: exit 2 and no --store written."""
    store = tmp_path / "store"
    args = [a.format(gru=gru, logistic=logistic, tmp=tmp_path) for a in command]
    r = run(*args, "--meds", cohort["meds"], "--store", store)
    assert r.exit_code == 2, r.output
    assert why in words(r.output) and "event store:" not in r.output
    assert not store.exists()
