"""The command line, end to end, on the seed table and a small synthetic cohort."""

import json

import polars as pl
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


def test_demo_writes_metrics_with_model_and_oracle(tmp_path):
    r = run("demo", "--out", tmp_path / "demo", "--patients", "2000", "--epochs", "5")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    for part in ("test", "oracle"):
        assert {"macro_auroc", "micro_auroc", "macro_auprc", "micro_auprc", "f1_micro"} <= set(m[part])
