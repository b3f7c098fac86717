"""The command line, end to end, on the seed table and a small synthetic cohort."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_seed_table_trains_evaluates_and_predicts(seed_table_path, tmp_path):
    r = run("train", seed_table_path, "--out", tmp_path / "m", "--epochs", "20")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["split"]["train"] + metrics["split"]["val"] + metrics["split"]["test"] == 10
    assert sorted(metrics["labels"]) == ["Disease_A", "Disease_B", "Disease_C"]

    r = run("predict", seed_table_path, "--model", tmp_path / "m", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    preds = pl.read_csv(tmp_path / "p.csv")
    assert preds.columns == ["patient_id", "p_Disease_A", "p_Disease_B", "p_Disease_C", "predicted"]
    assert preds.height == 10
    assert preds.select(pl.all().exclude("patient_id", "predicted")).to_numpy().min() >= 0

    r = run("evaluate", seed_table_path, "--model", tmp_path / "m", "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["n_samples"] == 10


def test_synth_then_train_with_oracle_and_parquet_predictions(tmp_path):
    r = run("synth", "--out", tmp_path / "d", "--patients", "1500", "--seed", "2", "--table-format", "csv")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "events.parquet").exists()
    r = run("train", tmp_path / "d" / "patients.csv", "--out", tmp_path / "m", "--oracle",
            tmp_path / "d" / "oracle.parquet", "--epochs", "5")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    for key in ("macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "f1_micro"):
        assert m["test"][key] is not None and m["oracle"][key] is not None
    r = run("predict", tmp_path / "d" / "patients.csv", "--model", tmp_path / "m", "--out", tmp_path / "p.parquet")
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(tmp_path / "p.parquet").schema["predicted"] == pl.List(pl.Utf8)


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("patient_id,age,diseases\n1,30,A\n1,40,B\n")
    r = run("train", p, "--out", tmp_path / "m")
    assert r.exit_code == 2
    assert "duplicated patient ids" in r.output and "bad.csv" in r.output
    assert "Traceback" not in r.output


def test_cross_validation_flag(seed_table_path, tmp_path):
    r = run("train", seed_table_path, "--out", tmp_path / "cv", "--cv", "3", "--epochs", "5")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())["k"] == 3


def test_table_demo_writes_metrics_with_model_and_oracle(tmp_path):
    r = run("demo", "--table", "--out", tmp_path / "demo", "--patients", "2000", "--epochs", "5")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    for part in ("test", "oracle"):
        assert {"macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "f1_micro"} <= set(m[part])


def test_longitudinal_demo_reports_new_onset_beside_the_oracle_and_baselines(tmp_path):
    r = run("demo", "--out", tmp_path / "demo", "--patients", "800", "--epochs", "2", "--hidden", "32")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    keys = {"macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "f1_micro", "recall_at_5",
            "recall_at_10", "recall_at_20"}
    for part in ("test", "test_new_onset", "oracle", "oracle_new_onset"):
        assert keys <= set(m[part]), part
    assert set(m["baselines"]) == {"gbm", "logistic"}
    assert m["test_samples"]["samples"] > m["test_samples"]["patients"]
    assert "new onset" in r.output and (tmp_path / "demo" / "model" / "task.json").exists()
    assert m["update"]["added"] == ["E11.2", "E11.9", "U07.1"]
    assert (tmp_path / "demo" / "model_2024" / "update_report.json").exists()


def test_meds_train_predict_evaluate(tmp_path):
    r = run("synth", "--out", tmp_path / "c", "--patients", "500", "--seed", "4", "--format", "meds")
    assert r.exit_code == 0, r.output
    meds, lm = tmp_path / "c" / "meds", tmp_path / "c" / "label_map.csv"
    r = run("train", "--meds", meds, "--labels", f"map:{lm}", "--model", "gru", "--epochs", "2", "--hidden", "32",
            "--out", tmp_path / "m", "--baselines", "logistic")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["task"] == {"task": "next-visit", "new_onset": False, "censor": True}
    assert "logistic" in metrics["baselines"]

    r = run("predict", "--meds", meds, "--model", tmp_path / "m", "--out", tmp_path / "p.parquet")
    assert r.exit_code == 0, r.output
    p = pl.read_parquet(tmp_path / "p.parquet")
    assert p.columns[:3] == ["subject_id", "prediction_time", "prior_visits"]
    assert p.height == pl.read_parquet(tmp_path / "c" / "oracle.parquet").height  # one row per visit end
    assert p.select(pl.struct("subject_id", "prediction_time").is_unique().all()).item()

    times = p.group_by("subject_id").agg(pl.col("prediction_time").first()).head(20)
    times.write_parquet(tmp_path / "times.parquet")
    r = run("predict", "--meds", meds, "--model", tmp_path / "m", "--out", tmp_path / "p2.csv",
            "--times", tmp_path / "times.parquet")
    assert r.exit_code == 0, r.output
    assert pl.read_csv(tmp_path / "p2.csv").height == 20

    r = run("evaluate", "--meds", meds, "--model", tmp_path / "m", "--split", "held_out", "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["test"]["macro_auroc"] == pytest.approx(metrics["test"]["macro_auroc"])

    r = run("predict", "--meds", meds, "--model", tmp_path / "m", "--out", tmp_path / "x.csv",
            "--times", tmp_path / "c" / "label_map.csv")
    assert r.exit_code == 2 and "prediction_time" in r.output


def test_long_events_table_with_a_window_task(tmp_path):
    from ehrdx.data.synth_visits import generate_longitudinal

    c = generate_longitudinal(400, seed=2)
    c.events.rename({"subject_id": "pid", "time": "when", "code": "what", "numeric_value": "val"}).with_columns(
        pl.col("when").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(tmp_path / "ev.csv")
    r = run("train", "--events", tmp_path / "ev.csv", "--subject-col", "pid", "--time-col", "when",
            "--code-col", "what", "--value-col", "val", "--task", "window:180d", "--new-onset",
            "--labels", "regex:^DX//(E11|I10|E78|E66)$", "--model", "mlp", "--epochs", "2", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["labels"] == ["E11", "E66", "E78", "I10"]
    assert m["task"] == {"task": "window:180d", "new_onset": True, "censor": True}
    assert m["test_samples"]["excluded"].get("censored_samples", 0) > 0


def test_bad_event_options_fail_cleanly(tmp_path):
    r = run("train", "--meds", tmp_path / "nope", "--out", tmp_path / "m")
    assert r.exit_code == 2 and "MEDS directory not found" in r.output
    (tmp_path / "meds").mkdir()  # the model is not written inside the MEDS directory it reads
    r = run("train", "--meds", tmp_path / "meds", "--task", "window:soon", "--out", tmp_path / "m")
    assert r.exit_code == 2 and "unknown task" in r.output


def test_targets_written_then_given_back_to_train(tmp_path):
    r = run("synth", "--out", tmp_path / "c", "--patients", "400", "--seed", "6", "--format", "meds")
    assert r.exit_code == 0, r.output
    meds, lm = tmp_path / "c" / "meds", tmp_path / "c" / "label_map.csv"
    r = run("targets", "--meds", meds, "--labels", f"map:{lm}", "--task", "window:365d", "--out", tmp_path / "t.parquet")
    assert r.exit_code == 0, r.output
    r = run("targets", "--meds", meds, "--labels", f"map:{lm}", "--task", "window:365d", "--format", "meds",
            "--out", tmp_path / "tasks")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "tasks" / "E11" / "labels.parquet").exists()
    # keep only two diseases: the model learns exactly those, at the given times
    t = pl.read_parquet(tmp_path / "t.parquet")
    t.filter(pl.col("label").is_null() | pl.col("label").is_in(["E11", "I10"])).write_parquet(tmp_path / "t2.parquet")
    for given in ("t2.parquet", "tasks"):
        r = run("train", "--meds", meds, "--targets", tmp_path / given, "--model", "logistic", "--out", tmp_path / ("m_" + given.replace(".", "_")))
        assert r.exit_code == 0, r.output
    m2 = json.loads((tmp_path / "m_t2_parquet" / "metrics.json").read_text())
    mt = json.loads((tmp_path / "m_tasks" / "metrics.json").read_text())
    assert m2["labels"] == ["E11", "I10"] and len(mt["labels"]) == 13
