"""Trust, round 2: outputs never overwrite what the user gave, and bad input ends in a one-paragraph error
(exit code 2) naming the file and the fix, never a traceback. Uses the golden fixtures (a table MLP, a GRU
and their data) read-only: anything a command may write goes to a copy in tmp_path."""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import ehrdx
from ehrdx.cli import app
from ehrdx.errors import DataError, ModelError

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under `path` (or of the file itself): what 'unchanged' means."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_clean_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    for needle in needles:
        assert needle in r.output, (needle, r.output)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """Copies of the golden inputs in a fresh working directory (relative paths resolve there)."""
    for name in ("table_model", "gru_model", "meds"):
        shutil.copytree(GOLDEN / name, tmp_path / name)
    shutil.copy(GOLDEN / "table.csv", tmp_path / "table.csv")
    shutil.copy(GOLDEN / "label_map.csv", tmp_path / "label_map.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def events_csv(work) -> Path:
    """The first 40 patients of the golden MEDS train split as a long events CSV."""
    frame = pl.read_parquet(work / "meds" / "data" / "train", glob=True).sort("subject_id", "time")
    frame = frame.filter(pl.col("subject_id").is_in(frame["subject_id"].unique().sort().head(40).implode()))
    path = work / "events.csv"
    frame.with_columns(pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S")).write_csv(path)
    return path


@pytest.fixture
def times_csv(work) -> Path:
    path = work / "times.csv"
    path.write_text("subject_id,prediction_time\n1,2020-06-01\n2,2020-06-01\n")
    return path


# --- Never overwrite what the user gave ---------------------------------------------------------------

@pytest.mark.parametrize("out", ["gru_model", "gru_model/v2", "./gru_model/../gru_model", "link_to_model"])
def test_update_refuses_an_output_equal_to_or_inside_the_model(work, out):
    os.symlink(work / "gru_model", work / "link_to_model")
    before = digest(work / "gru_model")
    r = run("update", "--model", "gru_model", "--meds", "meds", "--out", out, "--epochs", "0")
    assert_clean_error(r, "--out", "model directory (--model)")
    assert "is unchanged" not in r.output
    assert digest(work / "gru_model") == before
    assert not (work / "gru_model" / "update_report.json").exists()


@pytest.mark.parametrize("out", ["table.csv", "./table.csv", "sub/../table.csv", "link.csv", "hard.csv"])
def test_predict_refuses_to_overwrite_its_input_table(work, out):
    os.mkdir(work / "sub")
    os.symlink(work / "table.csv", work / "link.csv")
    os.link(work / "table.csv", work / "hard.csv")
    before = digest(work / "table.csv")
    r = run("predict", "table.csv", "--model", "table_model", "--out", out)
    assert_clean_error(r, "--out is also the input patient table", "never overwrites")
    assert digest(work / "table.csv") == before


@pytest.mark.parametrize("args, out, given", [
    (("--events", "events.csv"), "events.csv", "events table (--events)"),
    (("--meds", "meds", "--times", "times.csv"), "times.csv", "prediction times (--times)"),
    (("--meds", "meds"), "meds/data/train/predictions.parquet", "MEDS dataset (--meds)"),
    (("--meds", "meds"), "gru_model/predictions.csv", "model directory (--model)"),
])
def test_predict_on_events_refuses_an_output_over_any_input(work, events_csv, times_csv, args, out, given):
    watched = work / out.split("/")[0]
    before = digest(watched)
    r = run("predict", *args, "--model", "gru_model", "--out", out)
    assert_clean_error(r, given)
    assert digest(watched) == before


def test_train_refuses_its_input_table_as_output_instead_of_a_traceback(work):
    before = digest(work / "table.csv")
    r = run("train", "table.csv", "--out", "table.csv", "--epochs", "1")
    assert_clean_error(r, "--out is also the input patient table")
    assert digest(work / "table.csv") == before


@pytest.mark.parametrize("args, watched", [
    (("evaluate", "table.csv", "--model", "table_model", "--out", "table.csv"), "table.csv"),
    (("evaluate", "table.csv", "--model", "table_model", "--out", "table_model/metrics.json"), "table_model"),
    (("evaluate", "--meds", "meds", "--model", "gru_model", "--times", "times.csv", "--out", "times.csv"),
     "times.csv"),
    (("report", "--meds", "meds", "--model", "gru_model", "--out", "meds/report.html"), "meds"),
    (("explain", "--meds", "meds", "--model", "gru_model", "--patient", "1", "--out", "gru_model/why.json"),
     "gru_model"),
    (("targets", "--events", "events.csv", "--out", "events.csv"), "events.csv"),
    (("targets", "--meds", "meds", "--labels", "map:label_map.csv", "--format", "meds", "--out", "meds"), "meds"),
    (("train", "--meds", "meds", "--labels", "map:label_map.csv", "--out", "label_map.csv"), "label_map.csv"),
    (("train", "--meds", "meds", "--out", "meds/model"), "meds"),
])
def test_every_command_that_writes_refuses_an_output_over_an_input(work, events_csv, times_csv, args, watched):
    before = digest(work / watched)
    r = run(*args)
    assert_clean_error(r, "input")
    assert digest(work / watched) == before


def test_outputs_beside_the_inputs_are_still_fine(work):
    r = run("predict", "table.csv", "--model", "table_model", "--out", "predictions.csv")
    assert r.exit_code == 0, r.output
    assert pl.read_csv(work / "predictions.csv").height == pl.read_csv(work / "table.csv").height


# --- Errors, not tracebacks ----------------------------------------------------------------------------

def _table_with_labels(path: Path, extra_labels: list[str]) -> Path:
    frame = pl.read_csv(GOLDEN / "table.csv")
    tags = [extra_labels[i % len(extra_labels)] for i in range(frame.height)]
    frame = frame.with_columns(pl.Series("diseases", [f"{d};{t}" if d else t
                                                      for d, t in zip(frame["diseases"].fill_null(""), tags)]))
    frame.write_csv(path)
    return path


def test_labels_with_rich_markup_print_literally(work):
    _table_with_labels(work / "markup.csv", ["L[/bold]", "L[red]x"])
    r = run("train", "markup.csv", "--out", "m", "--epochs", "1", "--hidden", "8")
    assert r.exit_code == 0, r.output
    assert "L[/bold]" in r.output and "L[red]x" in r.output  # '[red]' read as markup would vanish


def test_a_path_with_rich_markup_is_read_and_printed_as_written(work):
    (work / "p[").mkdir()
    shutil.copy(work / "table.csv", work / "p[" / "bold].csv")  # the path p[/bold].csv
    r = run("train", "p[/bold].csv", "--out", "m[red]x", "--epochs", "1", "--hidden", "8")
    assert r.exit_code == 0, r.output
    assert "p[/bold].csv" in r.output and "m[red]x" in r.output
    assert (work / "m[red]x" / "config.json").exists()


def test_an_error_quoting_markup_is_printed_as_written(work):
    r = run("predict", "nope[/bold].csv", "--model", "table_model", "--out", "p.csv")
    assert_clean_error(r, "nope[/bold].csv", "not found")


def test_codes_with_rich_markup_print_literally_in_explanations(work):
    for shard in (work / "meds" / "data").rglob("*.parquet"):
        frame = pl.read_parquet(shard)
        frame.with_columns(pl.when(pl.col("code").str.starts_with("DX//")).then(pl.col("code") + "[/bold]")
                           .otherwise(pl.col("code"))).write_parquet(shard)
    r = run("explain", "--model", "gru_model", "--meds", "meds", "--patient", "1", "--top", "1",
            "--top-events", "100")
    assert r.exit_code == 0, r.output
    assert "[/bold]" in r.output


def test_an_output_in_a_read_only_directory_is_refused_before_any_work(work, monkeypatch):
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the directory read-only as a user would see it
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK
                            else real(p, mode, **kw))
    try:
        r = run("predict", "table.csv", "--model", "table_model", "--out", ro / "p.csv")
        assert_clean_error(r, "ro/p.csv", "read-only or not yours to write", "fix:")
        r = run("train", "table.csv", "--out", ro / "model", "--epochs", "1")
        assert_clean_error(r, "ro/model", "read-only")
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_a_write_that_fails_midway_is_an_error_naming_the_path(work, monkeypatch):
    def refuse(self, file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(pl.DataFrame, "write_csv", refuse)
    r = run("predict", "table.csv", "--model", "table_model", "--out", "p.csv")
    assert_clean_error(r, "p.csv", "Permission denied", "fix:")


@pytest.mark.parametrize("args", [
    ("predict", "table.csv", "--model", "table_model", "--out", "existing.csv"),
    ("evaluate", "table.csv", "--model", "table_model", "--out", "existing.csv"),
    ("report", "--meds", "meds", "--model", "gru_model", "--out", "existing.csv"),
    ("explain", "--meds", "meds", "--model", "gru_model", "--patient", "1", "--out", "existing.csv"),
])
def test_an_output_file_that_is_an_existing_directory_is_refused(work, args):
    (work / "existing.csv").mkdir()
    r = run(*args)
    assert_clean_error(r, "existing.csv", "is an existing directory, a file is expected")


@pytest.mark.parametrize("args", [
    ("train", "table.csv", "--out", "notes.txt", "--epochs", "1"),
    ("update", "--model", "gru_model", "--meds", "meds", "--out", "notes.txt", "--epochs", "0"),
    ("synth", "--out", "notes.txt", "--patients", "50"),
    ("train", "table.csv", "--out", "notes.txt/model", "--epochs", "1"),
])
def test_an_output_directory_that_is_an_existing_file_is_refused(work, args):
    (work / "notes.txt").write_text("keep me")
    r = run(*args)
    assert_clean_error(r, "notes.txt", "file")
    assert (work / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_an_event_model_given_a_patient_table_says_so(work, command):
    extra = ("--out", "p.csv") if command == "predict" else ()
    r = run(command, "table.csv", "--model", "gru_model", *extra)
    assert_clean_error(r, "gru_model is an event-stream model", "table.csv", "--meds")


@pytest.mark.parametrize("command", ["predict", "evaluate", "report", "explain", "update"])
def test_a_table_model_given_event_data_says_so(work, command):
    extra = {"predict": ("--out", "p.csv"), "evaluate": (), "report": ("--out", "r.html"),
             "explain": ("--patient", "1"), "update": ("--out", "m2")}[command]
    r = run(command, "--meds", "meds", "--model", "table_model", *extra)
    assert_clean_error(r, "table_model is a patient-table model")


@pytest.mark.parametrize("name, text, where", [
    ("map.yaml", "E11: diabetes\nI10: [hypertension\nI25: ischaemia\n", "line 3"),
    ("map.yml", "a: [b\n c: d\n", "line 2"),
    ("map.json", '{"E11": "diabetes",}', "line 1"),
])
def test_a_malformed_label_map_names_file_and_line(work, name, text, where):
    (work / name).write_text(text)
    r = run("train", "--meds", "meds", "--labels", f"map:{name}", "--out", "m", "--epochs", "1")
    assert_clean_error(r, name, "malformed", where, "fix:")


def test_loading_a_file_as_a_model_says_it_is_a_file(work):
    with pytest.raises(ModelError, match="this is a file, expected a model directory") as info:
        ehrdx.load(work / "table_model" / "config.json")
    assert "not found" not in str(info.value) and "give the folder it is in" in str(info.value)
    with pytest.raises(ModelError, match="this is a file"):
        ehrdx.load(work / "table.csv")
    r = run("predict", "table.csv", "--model", "table.csv", "--out", "p.csv")
    assert_clean_error(r, "this is a file, expected a model directory")


@pytest.mark.parametrize("threshold", ["-0.1", "1.5", "nan"])
def test_a_threshold_outside_0_1_is_refused(work, threshold):
    r = run("predict", "table.csv", "--model", "table_model", "--out", "p.csv", "--threshold", threshold)
    assert_clean_error(r, "--threshold", "from 0 to 1")
    assert not (work / "p.csv").exists()


@pytest.mark.parametrize("args", [
    ("predict", "table.csv", "--model", "table_model", "--out", "p.xlsx"),
    ("predict", "table.csv", "--model", "table_model", "--out", "p"),
    ("targets", "--meds", "meds", "--labels", "map:label_map.csv", "--out", "t.json"),
])
def test_an_output_suffix_other_than_csv_or_parquet_is_refused(work, args):
    r = run(*args)
    assert_clean_error(r, ".csv or .parquet")
    assert not Path(args[-1]).exists()


def test_check_output_in_one_place(tmp_path):
    from ehrdx.paths import check_output

    given = tmp_path / "in.csv"
    given.write_text("x\n")
    with pytest.raises(DataError, match="also the input table"):
        check_output(given, {"table": given})
    with pytest.raises(DataError, match="lies inside"):
        check_output(tmp_path / "sub" / "o.csv", {"dir": tmp_path})
    check_output(tmp_path / "o.csv", {"table": given, "nothing": None})  # beside an input: fine
    check_output(None, {"table": given})


# --- Times with a UTC offset ---------------------------------------------------------------------------

def test_event_times_with_a_utc_offset_are_converted_to_utc():
    from ehrdx.data.meds import normalise_events

    frame = pl.DataFrame({"subject_id": [1, 1, 1, 1, 1, 1],
                          "time": ["2020-01-01T10:00:00+02:00", "2020-01-01T08:00:00Z", "2020-01-01 10:00:00+0200",
                                   "2020-01-01T03:00:00.5-05:00", "2020-01-01T08:00:00", None],
                          "code": ["A", "B", "C", "D", "E", "S"]})
    out = normalise_events(frame, "events.csv").frame.sort("code")
    expected = [f"2020-01-01T{t}" for t in ("08:00:00", "08:00:00", "08:00:00", "08:00:00.500000", "08:00:00")]
    assert out["code"].to_list() == ["A", "B", "C", "D", "E", "S"]
    assert [t.isoformat() if t else None for t in out["time"].to_list()] == [*expected, None]


def test_a_time_format_with_an_offset_is_converted_to_utc_too():
    from ehrdx.data.meds import normalise_events

    frame = pl.DataFrame({"subject_id": [1, 1], "time": ["31/01/2024 10:15+0200", "31/01/2024 08:15+0000"],
                          "code": ["A", "B"]})
    out = normalise_events(frame, "events.csv", time_format="%d/%m/%Y %H:%M%z").frame.sort("code")
    assert [t.isoformat() for t in out["time"].to_list()] == ["2024-01-31T08:15:00"] * 2
    assert out["time"].dtype == pl.Datetime("us")


def test_prediction_times_file_with_a_utc_offset_parses_by_default(work, times_csv):
    from ehrdx.events_pipeline import open_store
    from ehrdx.tasks.task import read_prediction_times

    store = open_store(meds=work / "meds", store_dir=work / "store")
    times_csv.write_text("subject_id,prediction_time\n1,2020-06-01T12:00:00+02:00\n2,2020-06-01T10:00:00Z\n")
    _, seconds = read_prediction_times(times_csv, store)
    assert seconds.tolist() == [1591005600, 1591005600]  # 2020-06-01T10:00:00 UTC


@pytest.mark.parametrize("text, seconds", [
    ("2020-01-01", 1577836800),
    ("2020-01-01T10:00:00+02:00", 1577865600),
    ("2020-01-01T08:00:00Z", 1577865600),
    ("2020-01-01T08:00:00", 1577865600),
])
def test_until_and_time_accept_a_utc_offset(text, seconds):
    from ehrdx.events_pipeline import parse_until
    from ehrdx.tasks.labels import LabelVocab

    assert parse_until(text) == seconds
    vocab = LabelVocab(["A"], {"A": {"introduced_at": text}})
    assert vocab.introduced_seconds()[0] == seconds


def test_predicting_on_offset_times_matches_the_same_times_in_utc(work, events_csv):
    frame = pl.read_csv(events_csv, schema_overrides={"time": pl.Utf8})
    shifted = pl.Series(frame["time"]).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False) + pl.duration(hours=2)
    frame.with_columns(shifted.dt.strftime("%Y-%m-%dT%H:%M:%S+02:00").alias("time")).write_csv("offset.csv")
    assert run("predict", "--events", events_csv, "--model", "gru_model", "--out", "utc.csv").exit_code == 0
    r = run("predict", "--events", "offset.csv", "--model", "gru_model", "--out", "off.csv")
    assert r.exit_code == 0, r.output
    a, b = pl.read_csv("utc.csv"), pl.read_csv("off.csv")
    assert a["prediction_time"].to_list() == b["prediction_time"].to_list()
    np.testing.assert_allclose(a.drop("subject_id", "prediction_time", "predicted").to_numpy(),
                               b.drop("subject_id", "prediction_time", "predicted").to_numpy(), rtol=0, atol=0)
