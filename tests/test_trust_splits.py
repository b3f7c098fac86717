"""Nothing dropped silently, and settings that travel with the model: MEDS split names other than
train/tuning/held_out, predictions' unseen codes and patients without a prediction time, evaluate's
default split, and the input settings (visit gap, events columns, --until, split names) saved in the model."""

import json
import re
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

import ehrdx
from ehrdx.cli import app
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import EhrdxError
from ehrdx.input_settings import parse_split_names

runner = CliRunner()
GRU = ("--model", "gru", "--hidden", "16", "--epochs", "1")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """300 synthetic patients as MEDS (train/tuning/held_out) and as a long events table whose columns
    are named pid/when/what/val."""
    root = tmp_path_factory.mktemp("trust_splits")
    c = generate_longitudinal(300, seed=5)
    paths = write_longitudinal(c, root / "c")
    c.events.rename({"subject_id": "pid", "time": "when", "code": "what", "numeric_value": "val"}).with_columns(
        pl.col("when").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(root / "ev.csv")
    return {"root": root, "meds": paths["meds"], "label_map": paths["label_map"], "events": root / "ev.csv",
            "frame": c.events}


@pytest.fixture(scope="module")
def renamed_meds(cohort):
    """The same MEDS data with the splits named train/val/test, as many exports name them."""
    meds = cohort["root"] / "renamed"
    shutil.copytree(cohort["meds"], meds)
    path = meds / "metadata" / "subject_splits.parquet"
    pl.read_parquet(path).with_columns(pl.col("split").replace({"tuning": "val", "held_out": "test"})) \
        .write_parquet(path)
    return meds


@pytest.fixture(scope="module")
def meds_model(cohort):
    out = cohort["root"] / "meds_model"
    r = run("train", "--meds", cohort["meds"], "--labels", f"map:{cohort['label_map']}", *GRU, "--out", out)
    assert r.exit_code == 0, r.output
    return out


EVENT_COLUMNS = ("--subject-col", "pid", "--time-col", "when", "--code-col", "what", "--value-col", "val")


@pytest.fixture(scope="module")
def events_model(cohort):
    """A model trained on the renamed events table with a 90-day visit gap and 30% test patients."""
    out = cohort["root"] / "events_model"
    r = run("train", "--events", cohort["events"], *EVENT_COLUMNS, "--visit-gap", "90d", "--test-fraction", "0.3",
            "--labels", f"map:{cohort['label_map']}", *GRU, "--out", out)
    assert r.exit_code == 0, r.output
    return out


# -- split names -----------------------------------------------------------------------------------

def test_unknown_split_names_are_an_error_that_lists_them_and_the_fix(cohort, renamed_meds):
    r = run("train", "--meds", renamed_meds, "--labels", f"map:{cohort['label_map']}", *GRU,
            "--out", cohort["root"] / "never")
    assert r.exit_code == 2, r.output
    assert "'test'" in r.output and "'val'" in r.output and "--split-names" in r.output
    assert "Traceback" not in r.output
    assert not (cohort["root"] / "never" / "config.json").exists()


def test_split_names_map_every_patient_and_travel_with_the_model(cohort, renamed_meds, meds_model):
    out = cohort["root"] / "renamed_model"
    r = run("train", "--meds", renamed_meds, "--labels", f"map:{cohort['label_map']}", *GRU,
            "--split-names", "test=held_out,val=tuning", "--out", out)
    assert r.exit_code == 0, r.output
    mapped = json.loads((out / "metrics.json").read_text())["split"]
    original = json.loads((meds_model / "metrics.json").read_text())["split"]
    assert mapped["val"] > 0 and mapped["test"] > 0
    assert (mapped["train"], mapped["val"], mapped["test"]) == (original["train"], original["val"], original["test"])
    assert mapped["train"] + mapped["val"] + mapped["test"] == 300
    # report and evaluate reuse the model's mapping: the held-out patients, not zero of them
    r = run("evaluate", "--meds", renamed_meds, "--model", out, "--out", cohort["root"] / "renamed_eval.json")
    assert r.exit_code == 0, r.output
    e = json.loads((cohort["root"] / "renamed_eval.json").read_text())
    assert e["split"] == "held_out" and e["test_samples"]["patients"] > 0
    r = run("report", "--meds", renamed_meds, "--model", out, "--out", cohort["root"] / "renamed.html")
    assert r.exit_code == 0, r.output


def test_a_model_without_the_mapping_refuses_renamed_splits_and_accepts_the_option(cohort, renamed_meds, meds_model):
    r = run("report", "--meds", renamed_meds, "--model", meds_model, "--out", cohort["root"] / "r.html")
    assert r.exit_code == 2 and "--split-names" in r.output
    r = run("evaluate", "--meds", renamed_meds, "--model", meds_model, "--split-names", "val=tuning,test=held_out",
            "--out", cohort["root"] / "mapped_eval.json")
    assert r.exit_code == 0, r.output
    assert "note: --split-names" in r.output  # differs from the model's (none): said so


def test_split_names_option_is_checked():
    assert parse_split_names("test=held_out, val=tuning") == {"test": "held_out", "val": "tuning"}
    for bad in ("test", "test=heldout", "=train"):
        with pytest.raises(EhrdxError, match="--split-names"):
            parse_split_names(bad)


# -- predict counts what it cannot use -------------------------------------------------------------

def _counts(output: str) -> tuple[int, int, int]:
    """(patients without a prediction time, events with unseen codes, unseen codes) as predict prints them."""
    text = " ".join(output.split())
    no_time = re.search(r"([\d,]+) patient\(s\) with no prediction time", text)
    unseen = re.search(r"([\d,]+) event\(s\) with ([\d,]+) code\(s\) not seen in training", text)

    def num(m, i):
        return int(m.group(i).replace(",", "")) if m else 0

    return num(no_time, 1), num(unseen, 1), num(unseen, 2)


def test_predict_counts_unseen_codes_and_patients_without_a_prediction_time(cohort, meds_model):
    ev = cohort["frame"]
    first = ev.get_column("subject_id").min()
    stamp = ev.filter(pl.col("subject_id") == first).get_column("time").drop_nulls().max()
    extra = pl.DataFrame({
        "subject_id": [10_000_001, first, first],
        "time": [ev.get_column("time").drop_nulls().min(), stamp, stamp],
        "code": ["MEDS_BIRTH", "NEVER//SEEN1", "NEVER//SEEN2"],
        "numeric_value": [None, None, None],
    }).cast(ev.schema)
    before, after = cohort["root"] / "old_events.parquet", cohort["root"] / "new_events.parquet"
    ev.write_parquet(before)
    pl.concat([ev, extra]).write_parquet(after)
    r0 = run("predict", "--events", before, "--model", meds_model, "--out", cohort["root"] / "p0.csv")
    r = run("predict", "--events", after, "--model", meds_model, "--out", cohort["root"] / "p.csv")
    assert r0.exit_code == 0 and r.exit_code == 0, r.output
    base, now = _counts(r0.output), _counts(r.output)
    assert now[0] == base[0] + 1 >= 1  # the patient with only MEDS_BIRTH
    assert (now[1] - base[1], now[2] - base[2]) == (2, 2)  # two events, two codes never seen in training
    p = pl.read_csv(cohort["root"] / "p.csv")
    assert 10_000_001 not in p.get_column("subject_id").to_list()
    assert p.height == pl.read_csv(cohort["root"] / "p0.csv").height


# -- evaluate scores the held-out patients by default ----------------------------------------------

def test_evaluate_defaults_to_the_held_out_split_and_says_so(cohort, meds_model):
    trained = json.loads((meds_model / "metrics.json").read_text())
    r = run("evaluate", "--meds", cohort["meds"], "--model", meds_model, "--out", cohort["root"] / "e.json")
    assert r.exit_code == 0, r.output
    assert "held_out patients" in r.output and "MEDS subject_splits" in r.output
    e = json.loads((cohort["root"] / "e.json").read_text())
    assert e["split"] == "held_out"
    assert e["test_samples"]["patients"] == trained["test_samples"]["patients"]
    assert e["test"]["macro_auroc"] == pytest.approx(trained["test"]["macro_auroc"], abs=1e-6)
    r = run("evaluate", "--meds", cohort["meds"], "--model", meds_model, "--split", "all",
            "--out", cohort["root"] / "e_all.json")
    assert r.exit_code == 0, r.output
    e_all = json.loads((cohort["root"] / "e_all.json").read_text())
    assert e_all["split"] == "all" and e_all["test_samples"]["patients"] > 2 * e["test_samples"]["patients"]
    # given prediction times are held to the same patients, and the others counted
    times = cohort["root"] / "times.parquet"
    cohort["frame"].filter(pl.col("time").is_not_null()).group_by("subject_id").agg(
        pl.col("time").max().alias("prediction_time")).write_parquet(times)
    r = run("evaluate", "--meds", cohort["meds"], "--model", meds_model, "--times", times,
            "--out", cohort["root"] / "e_times.json")
    assert r.exit_code == 0, r.output
    held_out = pl.read_parquet(cohort["meds"] / "metadata" / "subject_splits.parquet").filter(
        pl.col("split") == "held_out").height
    m = re.search(r"(\d+) prediction time\(s\) of patients not among the held_out", " ".join(r.output.split()))
    assert m and int(m.group(1)) == 300 - held_out


def test_evaluate_without_meds_splits_scores_the_seeded_test_split_of_training(cohort, events_model):
    trained = json.loads((events_model / "metrics.json").read_text())
    r = run("evaluate", "--events", cohort["events"], "--model", events_model, "--out", cohort["root"] / "ee.json")
    assert r.exit_code == 0, r.output
    assert "seeded split of training" in r.output
    e = json.loads((cohort["root"] / "ee.json").read_text())
    # the same 30% of patients as training's test part (its fractions travel with the model)
    assert 80 <= trained["split"]["test"] <= 100  # not the default 15%
    assert e["test_samples"]["patients"] == trained["test_samples"]["patients"]
    assert e["test"]["macro_auroc"] == pytest.approx(trained["test"]["macro_auroc"], abs=1e-6)


# -- settings travel with the model ----------------------------------------------------------------

def test_input_settings_are_saved_with_the_model(events_model):
    saved = json.loads((events_model / "input.json").read_text())
    assert saved["visit_gap"] == "90d" and saved["subject_col"] == "pid" and saved["value_col"] == "val"
    assert saved["split_fractions"] == pytest.approx([0.55, 0.15, 0.3])
    config = json.loads((events_model / "config.json").read_text())
    assert "input.json" in config["sha256"]  # verified on load like every other file
    assert ehrdx.load(events_model).input_["time_col"] == "when"


def test_predict_reuses_the_visit_gap_and_columns_and_an_explicit_value_wins_with_a_note(cohort, events_model):
    r = run("predict", "--events", cohort["events"], "--model", events_model, "--out", cohort["root"] / "d.csv")
    assert r.exit_code == 0, r.output
    assert "note:" not in r.output
    r = run("predict", "--events", cohort["events"], "--model", events_model, "--visit-gap", "90d",
            "--out", cohort["root"] / "same.csv")
    assert r.exit_code == 0 and "note:" not in r.output
    r = run("predict", "--events", cohort["events"], "--model", events_model, "--visit-gap", "0",
            "--out", cohort["root"] / "gap0.csv")
    assert r.exit_code == 0, r.output
    assert "note: --visit-gap 0 given: the model was trained with 90d" in " ".join(r.output.split())
    rows = {name: pl.read_csv(cohort["root"] / name).height for name in ("d.csv", "same.csv", "gap0.csv")}
    assert rows["d.csv"] == rows["same.csv"] < rows["gap0.csv"]


@pytest.mark.parametrize("command", ["report", "explain", "targets"])
def test_every_command_reads_the_events_table_with_the_model_or_given_columns(command, cohort, events_model):
    ev = cohort["events"]
    if command == "report":
        r = run("report", "--events", ev, "--model", events_model, "--out", cohort["root"] / "e.html")
    elif command == "explain":
        pid = cohort["frame"].get_column("subject_id").min()
        r = run("explain", "--events", ev, "--model", events_model, "--patient", pid)
    else:  # no model: the columns are given
        r = run("targets", "--events", ev, *EVENT_COLUMNS, "--labels", f"map:{cohort['label_map']}",
                "--out", cohort["root"] / "t.parquet")
    assert r.exit_code == 0, r.output


def test_until_is_recorded_reported_and_not_reapplied_and_update_keeps_the_settings(cohort):
    old = cohort["root"] / "old_model"
    r = run("train", "--events", cohort["events"], *EVENT_COLUMNS, "--visit-gap", "1d", "--until", "2020-01-01",
            "--labels", f"map:{cohort['label_map']}", *GRU, "--out", old)
    assert r.exit_code == 0, r.output
    assert json.loads((old / "input.json").read_text())["until"] == "2020-01-01"
    r = run("predict", "--events", cohort["events"], "--model", old, "--out", cohort["root"] / "u.csv")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "trained on events up to 2020-01-01" in text and "this run reads all events" in text
    assert pl.read_csv(cohort["root"] / "u.csv").get_column("prediction_time").max() > "2021"
    new = cohort["root"] / "new_model"
    r = run("update", "--events", cohort["events"], "--model", old, "--out", new, "--epochs", "0", "--init", "mean")
    assert r.exit_code == 0, r.output
    saved = json.loads((new / "input.json").read_text())
    assert saved["visit_gap"] == "1d" and saved["code_col"] == "what" and saved["until"] is None


def test_resolve_reuses_the_model_settings_and_notes_what_differs():
    from ehrdx.input_settings import resolve

    saved = {"visit_gap": "6h", "omop_codes": "concept", "split_names": {"test": "held_out"}, "until": "2020-01-01",
             "split_fractions": [0.6, 0.2, 0.2]}
    settings, notes = resolve(saved, {"visit_gap": None, "omop_codes": None})
    assert (settings["visit_gap"], settings["omop_codes"], settings["split_names"]) == ("6h", "concept",
                                                                                      {"test": "held_out"})
    assert settings["until"] is None and settings["split_fractions"] == (0.6, 0.2, 0.2)
    assert len(notes) == 1 and "trained on events up to 2020-01-01" in notes[0] and "reads all events" in notes[0]
    settings, notes = resolve(saved, {"omop_codes": "source", "split_names": "test=held_out", "until": "2020-01-01"})
    assert settings["omop_codes"] == "source" and notes == [
        "--omop-codes source given: the model was trained with concept; using source"]
    settings, notes = resolve({}, {})  # a model saved before input.json: the built-in defaults, no notes
    assert (settings["visit_gap"], settings["subject_col"], settings["split_names"], notes) == ("0", "subject_id", {}, [])


def test_val_fraction_0_trains_without_validation_patients_and_says_so(tmp_path, seed_table_path):
    """A share of 0 gives no validation patient (before: one per label group); training runs every epoch,
    thresholds stay at 0.5, and metrics.json and the terminal say so."""
    r = run("train", seed_table_path, "--val-fraction", "0", "--epochs", "3", "--hidden", "8", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["split"]["val"] == 0 and m["split"]["train"] + m["split"]["test"] == 10 and m["split"]["test"] > 0
    assert m["history"]["epochs_run"] == 3 and m["history"]["val_loss"] == []
    note = ("no validation samples (0 validation patients): no early stopping, all 3 epochs ran; thresholds 0.5, "
            "none tuned")
    assert m["train_summary"]["without_validation"] == note
    assert "no validation samples" in r.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["thresholds"] == [0.5] * len(m["labels"])
