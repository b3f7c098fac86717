"""Options that apply to one kind of input say so in --help, and are refused for the other kind: exit 2 with
a message naming the flags, before any data is read or any model loaded."""

import pytest
import typer
from typer.testing import CliRunner

from ehrdx.cli import app

runner = CliRunner()


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "patients.csv"
    path.write_text("patient_id,age,diagnoses\np1,50,E11\np2,60,\n")
    return path


REFUSED = [  # (arguments after the command, the flags named, the kind they are for)
    (["train", "{table}", "--visit-gap", "6h"], "--visit-gap is an option", "event streams"),
    (["train", "{table}", "--task", "window:365d", "--store", "{tmp}/st"], "--task, --store are options", "event streams"),
    (["train", "{table}", "--heads", "2"], "--heads is an option", "event streams"),
    (["train", "--meds", "{tmp}/meds", "--id-col", "pid"], "--id-col is an option", "a patient table"),
    (["train", "--meds", "{tmp}/meds", "--cv", "3"], "--cv is an option", "a patient table"),
    (["train", "--events", "{tmp}/ev.csv", "--label-col", "dx"], "--label-col is an option", "a patient table"),
    (["predict", "--meds", "{tmp}/meds", "--id-col", "pid"], "--id-col is an option", "a patient table"),
    (["predict", "{table}", "--times", "{tmp}/t.csv"], "--times is an option", "event streams"),
    (["evaluate", "{table}", "--split", "train"], "--split is an option", "event streams"),
    (["evaluate", "{table}", "--subject-col", "pid"], "--subject-col is an option", "event streams"),
    (["evaluate", "--omop", "{tmp}/omop", "--id-col", "pid"], "--id-col is an option", "a patient table"),
    (["demo", "--out", "{tmp}/d", "--depth", "3"], "--depth is an option", "the patient-table demo"),
    (["demo", "--out", "{tmp}/d", "--table", "--model", "lstm"], "--model is an option", "the event-stream demo"),
]


@pytest.mark.parametrize("args, flags, kind", REFUSED, ids=[" ".join(a[:1] + a[2:3]) for a, _, _ in REFUSED])
def test_an_option_for_the_other_kind_of_input_is_refused(tmp_path, table, args, flags, kind):
    r = runner.invoke(app, [a.format(table=table, tmp=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert f"{flags} for {kind}" in r.output
    assert "fix: leave" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "d").exists() and not (tmp_path / "st").exists()  # stopped before any work


def test_an_option_left_at_its_default_value_is_not_refused_when_typed(tmp_path, table):
    """Only options the user gave count: the refusal does not fire for the table's own options."""
    r = runner.invoke(app, ["train", str(table), "--cv", "0", "--depth", "2", "--out", str(tmp_path / "m"),
                            "--epochs", "1", "--val-fraction", "0.5", "--test-fraction", "0"])
    assert "is an option for" not in r.output and "are options for" not in r.output


def test_a_model_for_the_other_kind_of_input_is_refused_by_the_registry(table, tmp_path):
    r = CliRunner().invoke(app, ["train", str(table), "--model", "lstm", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2, r.output
    assert "model 'lstm' learns from event streams" in r.output and "logistic, mlp" in r.output
    r = CliRunner().invoke(app, ["train", str(table), "--model", "lstmm", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "unknown model 'lstmm': choose from" in r.output


def test_help_says_which_kind_of_input_an_option_is_for():
    group = typer.main.get_command(app)
    helps = {(name, p.name): p.help for name, cmd in group.commands.items() for p in cmd.params}
    for option in ("task", "labels", "visit_gap", "store", "heads", "split_names", "workers",
                   "targets", "infer_introduced", "until"):
        assert helps[("train", option)].startswith("Event streams"), option
    for option in ("id_col", "label_col", "numeric", "categorical", "codes", "ignore", "cv"):
        assert helps[("train", option)].startswith("Patient table"), option
    # One name for both kinds: --model (from the registry) and --layers; --depth is --layers' old name.
    assert "Event streams" in helps[("train", "model")] and "patient table" in helps[("train", "model")]
    assert "MLP" in helps[("train", "layers")] and helps[("train", "depth")].startswith("Old name of --layers")
    for command in ("evaluate", "predict"):
        assert helps[(command, "id_col")].startswith("Patient table")
        assert helps[(command, "times")].startswith("Event streams")
        for option in ("visit_gap", "subject_col", "time_format", "until", "store"):
            assert helps[(command, option)].startswith(("Event streams", "Events table")), (command, option)
