"""What a new user reads (README.md, `ehrdx --help`, `ehrdx COMMAND --help`) against what the commands do."""

import json
import re
from pathlib import Path

import pytest

from cli_run import run, runner, words
from ehrdx.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def plain(text: str) -> str:
    """Help or table output as one line of words: rich's boxes and line wrapping undone."""
    return words(re.sub(r"[\u2500-\u257f]", " ", text))


def help_text(*args: str) -> str:
    """A command's --help (or output) as one line of words, rendered wide so that option columns do not
    interleave."""
    return plain(runner.invoke(app, list(args), env={"COLUMNS": "300"}).output)


def test_help_says_auto_mixes_its_members_with_one_weighting_for_all_labels():
    # The rule (train/mixing.py, README): one weighting for all labels, not weights per label.
    for args in (("train", "--help"), ("models",), ("demo", "--help")):
        said = help_text(*args)
        assert "averaged per label" not in said
        assert "one weighting for all labels" in said


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A small built-in cohort as MEDS (label map beside it) and a GRU encoder pretrained on it (out/enc)."""
    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
    from ehrdx.events_pipeline import open_store, patient_splits
    from ehrdx.pretrain import pretrain

    out = tmp_path_factory.mktemp("docs")
    paths = write_longitudinal(generate_longitudinal(120, seed=11), out)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    pretrain(store, patient_splits(store, paths["meds"], 0), hidden=16, max_epochs=1, min_count=5).save(out / "enc")
    return {**paths, "out": out, "enc": out / "enc"}


def test_train_from_an_encoder_without_model_says_it_trains_the_encoders_model(cohort, monkeypatch, tmp_path):
    # Without --model, --init trains the encoder's own model (README: Pretraining); the bar said "training auto".
    import ehrdx.cli.train as cli_train

    said = []

    class Bar(cli_train.EpochProgress):
        def __init__(self, total, description="training", **kwargs):
            said.append(description)
            super().__init__(total, description, **kwargs)

    monkeypatch.setattr(cli_train, "EpochProgress", Bar)
    r = run("train", "--meds", cohort["meds"], "--labels", f"map:{cohort['label_map']}", "--init", cohort["enc"],
            "--probe", "--epochs", "1", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert said == ["training gru"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_name"] == "gru"


@pytest.fixture(scope="module")
def logistic_model(cohort):
    """A logistic model trained on the cohort (next-visit, the label map's labels and dates)."""
    out = cohort["out"] / "logistic"
    r = run("train", "--meds", cohort["meds"], "--labels", f"map:{cohort['label_map']}", "--model", "logistic",
            "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_predict_gives_every_visit_a_row_and_prints_no_label_counts_that_read_as_rows_left_out(
        cohort, logistic_model, tmp_path):
    # It printed "samples without next visit: 120" (every patient's last visit) and the label entries masked
    # before their introduction: counts about targets, which predictions do not have; those rows are written.
    import polars as pl

    from ehrdx.events_pipeline import open_store

    r = run("predict", "--meds", cohort["meds"], "--model", logistic_model, "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    visits = len(open_store(meds=cohort["meds"], store_dir=tmp_path / "store").visit_starts)
    assert len(pl.read_csv(tmp_path / "p.csv")) == visits
    said = words(r.output)
    assert f"predicted {visits:,} (patient, time) rows" in said
    assert "without next visit" not in said and "before introduction" not in said


def test_synth_says_how_many_patients_the_table_leaves_out(tmp_path):
    # README: the table is a snapshot at 2023-01-01 and those who died before are left out, counted in
    # cohort.json; synth printed "300 patients" beside a table of fewer rows and did not say so.
    import polars as pl

    r = run("synth", "--out", tmp_path / "d", "--patients", 300)
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "d" / "cohort.json").read_text())
    died = info["excluded"]["died_before_index_date"]
    assert died > 0 and len(pl.read_parquet(tmp_path / "d" / "patients.parquet")) == 300 - died
    assert (f"patient table: {300 - died} patients at the index date 2023-01-01 (left out: {died} died before "
            "index date)") in words(r.output)


def test_evaluate_prints_its_headline_titles_on_one_line_and_names_the_patients_it_scored(
        cohort, logistic_model, seed_table_path, tmp_path):
    # One model column is narrower than the title: rich wrapped it into six lines of the column's width.
    r = run("evaluate", "--meds", cohort["meds"], "--model", logistic_model)
    assert r.exit_code == 0, r.output
    before_table = words(r.output.split("┏")[0])  # the text above the first table's top edge
    assert re.search(rf"{re.escape(str(cohort['meds']))}: held_out patients \(\d+, MEDS subject_splits\), "
                     r"all labels: [\d,]+ prediction times of [\d,]+ patients, [\d,]+ labels$", before_table), r.output
    # A table is evaluated whole: its per-label table said "test set".
    assert run("train", seed_table_path, "--out", tmp_path / "m", "--epochs", 2).exit_code == 0
    r = run("evaluate", seed_table_path, "--model", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert words(r.output.split("┏")[0]).endswith(f"{seed_table_path}: 10 patients, 3 labels"), r.output
    said = plain(r.output)
    assert "Per label (this table;" in said and "test set" not in said


def test_batch_size_and_layers_help_give_each_commands_real_defaults():
    # pretrain trains gru, lstm or transformer only: its help spoke of tables and MLP layers. train's said
    # "patients ... 64 for event streams", but mlp, logistic and gbm batch rows (256) there too.
    from ehrdx.models.registry import get_model

    said = help_text("pretrain", "--help")
    assert "tables" not in said and "MLP" not in said and "mlp" not in said
    assert "Patients per training batch (default 64" in said
    assert {get_model(m, "events").default_batch_size for m in ("gru", "lstm", "transformer", "auto")} == {64}
    assert {get_model(m, "events").default_batch_size for m in ("mlp", "logistic", "gbm")} == {256}
    said = help_text("train", "--help")
    assert "patients for gru, lstm, transformer and auto (default 64" in said and "rows (default 256)" in said


def test_the_demo_is_described_with_the_baselines_it_fits():
    # README and demo --help spoke of an MLP on counts ("count baselines"); the demo fits gbm and logistic.
    from ehrdx.demo import BASELINES

    assert BASELINES == ("gbm", "logistic")
    assert "beside the gbm (gradient boosting on history features) and logistic baselines" in help_text(
        "demo", "--help")
    shows = words(README.split("## What the demo shows")[1].split("`ehrdx demo --table`")[0])
    assert "baselines (`gbm`, gradient boosting on history features, and a logistic regression" in shows
    assert "MLP" not in shows


def test_the_architecture_section_names_every_top_level_and_command_module():
    package = Path(__file__).resolve().parents[1] / "src" / "ehrdx"
    architecture = README.split("## Architecture")[1]
    for path in [*package.glob("*.py"), *(package / "cli").glob("*.py")]:
        if path.stem not in ("__init__", "__main__"):
            assert f"{path.name}" in architecture, f"README's Architecture does not name {path.relative_to(package)}"


def readme_python() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_the_readmes_python_snippets_run_as_written(cohort, seed_table_path, tmp_path, monkeypatch):
    """Each ```python block of the README, run as a script in a folder that holds the files it names: the
    10-patient example table as train.csv, new.csv and test.csv, and a small built-in cohort as long/."""
    import runpy
    import shutil

    import numpy as np

    table, events = readme_python()
    for name in ("train.csv", "new.csv", "test.csv"):
        shutil.copy(seed_table_path, tmp_path / name)
    (tmp_path / "long").mkdir()
    shutil.copytree(cohort["meds"], tmp_path / "long" / "meds")
    shutil.copy(cohort["label_map"], tmp_path / "long" / "label_map.csv")
    monkeypatch.chdir(tmp_path)

    (tmp_path / "table.py").write_text(table)
    ran = runpy.run_path("table.py")
    clf, proba, sets, report = ran["clf"], ran["proba"], ran["sets"], ran["report"]
    assert proba.shape == sets.shape == (10, len(clf.labels_)) and sets.dtype == bool
    assert np.array_equal(sets, proba >= clf.thresholds_[None, :])  # loaded back, the same thresholds
    assert 0 <= report["macro_auroc"] <= 1 and (tmp_path / "model" / "config.json").exists()

    (tmp_path / "events.py").write_text(events)
    ran = runpy.run_path("events.py")
    clf, samples, proba, metrics = ran["clf"], ran["samples"], ran["proba"], ran["metrics"]
    assert proba.shape == (len(samples), len(clf.labels_)) and len(samples) > 0
    assert {"all", "new_onset", "by_prior_visits"} <= set(metrics)
    assert metrics["all"]["n_samples"] == len(samples)


def test_new_onset_help_says_at_or_before_and_fits_targets_too():
    # A label recorded at the prediction time itself is history (tasks/positives.py: t >= k), as the README
    # says; the help said "before", and "train on" in targets --help, which trains nothing.
    for command in ("train", "targets"):
        said = help_text(command, "--help")
        assert "new onsets only: a label already recorded at or before the prediction time is masked" in said
        assert "train on new onsets" not in said


def test_the_readme_names_every_command_that_takes_device():
    sentence = words(README.split("## GPUs and several processes")[1].split("take `--device")[0])
    for command in ("train", "pretrain", "update", "evaluate", "predict", "report", "explain", "targets", "synth"):
        takes = "--device" in help_text(command, "--help")
        assert (f"`{command}`" in sentence) == takes, command


def test_evaluate_names_the_patients_it_scored_in_its_counts(cohort, logistic_model):
    # `evaluate --split all` printed "test: samples without next visit: 120" for every patient's last visit.
    r = run("evaluate", "--meds", cohort["meds"], "--model", logistic_model, "--split", "all")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "all patients: samples without known labels left out: 120 (120 of them without a next visit)" in said
    assert "test: " not in said
