"""Trust, round 6 (session s13): a CSV row with fewer fields than the header (OMOP, events and patient tables),
codes matching labels only when case is ignored said by update and evaluate, predict's and update's counts
said as sentences, and train and pretrain checking their options before any progress is shown."""


import pytest

from cli_run import GOLDEN, events_with_lower_case_codes, run, small_omop, words
from ehrdx.data.csv_errors import short_rows_error


def test_a_short_row_in_an_omop_csv_is_an_error_naming_file_line_and_fix(tmp_path):
    """A measurement row missing its last field (`1,2020-01-02,HBA1C`) was read as a measurement without a
    value, without a word: polars fills a short row with nulls. It is an error naming the file's line, exit 2."""
    omop = small_omop(tmp_path, "1,2020-01-01,HBA1C,6\n1,2020-01-02,HBA1C\n2,2020-01-03,HBA1C,\n")
    r = run("targets", "--omop", omop, "--labels", "prefix:CONDITION//", "--out", tmp_path / "t.csv")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert "measurement.csv: a row has fewer fields than the header's 4 (file line 3)" in said
    assert "row 2" in said and "row 3" not in said  # the empty last field of line 4 is a value left empty
    assert "export the table again" in said and "Traceback" not in said
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("name", ["events.csv", "table.csv"])
def test_a_short_row_in_an_events_table_or_a_patient_table_is_named_with_the_fix(tmp_path, name):
    path = tmp_path / name
    if name == "events.csv":
        path.write_text("pid,when,code,numeric_value\n1,2020-01-01,DX//A,\n1,2020-01-02,\"DX//B,x\",5\n"
                        "1,2020-01-03,LAB//C\n1,2020-01-04,LAB//C,7\n")
        r = run("targets", "--events", path, "--subject-col", "pid", "--time-col", "when", "--labels", "prefix:DX//",
                "--out", tmp_path / "t.csv")
    else:
        path.write_text("patient_id,age,sex,diseases\n1,50,F,E11\n2,60,M,E11;I10\n3,70,F\n4,40,M,\n")
        r = run("train", path, "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    said = words(r.output)
    assert f"{name}: a row has fewer fields than the header's 4 (file line 4)" in said and "row 3" in said
    assert "export the table again" in said


def test_short_rows_are_told_from_empty_last_fields_quoted_separators_and_multi_line_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,b,c\n1,"x,y",\n2,,\n3,"two\nlines",z\n\n')
    assert short_rows_error(path) is None
    path.write_text('a,b,c\n1,"x,y",\n2,"x,y"\n3,"two\nlines",z\n4,5\n')
    error = short_rows_error(path)
    assert error is not None and error.rows == [1, 3] and "(file lines 3, 6)" in str(error)


# -- codes that match a label only when case is ignored: said by update and evaluate ----------------------

@pytest.fixture(scope="module")
def lower_case_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("case")
    events, old_map, new_map = events_with_lower_case_codes(tmp)
    r = run("train", "--events", events, "--labels", f"map:{old_map}", "--model", "logistic", "--out", tmp / "m")
    assert r.exit_code == 0, r.output
    return tmp, events, new_map


def test_update_with_a_label_map_says_the_codes_it_matches_only_ignoring_case(lower_case_model, tmp_path):
    """`update --labels map:...` selected the new labels from codes without saying that `dx//e11.2` is no record
    of E11 (as targets and train say). It says so, and keeps it in update_report.json."""
    import json

    tmp, events, new_map = lower_case_model
    r = run("update", "--model", tmp / "m", "--events", events, "--labels", f"map:{new_map}", "--out", tmp_path / "u")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "event code(s) would match --labels if letter case were ignored (dx//e11.2;" in said
    assert "write the label map's codes as the data spells them" in said
    report = json.loads((tmp_path / "u" / "update_report.json").read_text())
    assert report["codes_matching_labels_only_ignoring_case"]["codes"] == ["dx//e11.2"]


def test_evaluate_says_the_codes_that_match_the_model_s_labels_only_ignoring_case(lower_case_model, tmp_path):
    """evaluate reads the targets from the data's codes: `dx//e11.2` is not a record of E11 there, unsaid."""
    import json

    tmp, events, _ = lower_case_model
    r = run("evaluate", "--model", tmp / "m", "--events", events, "--split", "all", "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "1 event code(s) would match the model's labels if letter case were ignored (dx//e11.2;" in said
    assert "write the codes in the data as the model's labels spell them" in said
    found = json.loads((tmp_path / "e.json").read_text())["codes_matching_labels_only_ignoring_case"]
    assert found["codes"] == ["dx//e11.2"]


# -- counts said as sentences, their JSON keys unchanged ------------------------------------------------------

def test_predict_evaluate_and_update_say_labels_the_model_lacks_as_one_sentence(lower_case_model, tmp_path):
    """predict printed `label not in model:J44: 1`, one raw key per label; evaluate `test: label not in
    model:J44: 1`; update `train: label not in model:K21: 1`. Each says one sentence naming the labels; the JSON
    outputs keep the keys."""
    import json

    _, events, _ = lower_case_model
    later = tmp_path / "events.csv"  # J44 (June) and K21 (November) are recorded after --until only
    later.write_text(events.read_text() + "".join(f"{p},2020-11-01,DX//K21.0\n" for p in range(1, 41, 2)))
    r = run("train", "--events", later, "--labels", "prefix:DX//:3", "--until", "2020-05-01", "--model", "logistic",
            "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    lacks = "label(s) recorded in the data are not among the model's labels:"
    r = run("predict", "--model", tmp_path / "m", "--events", later, "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert f"2 {lacks} J44, K21 (the model has no output for them: left out)" in words(r.output)
    assert "not in model" not in r.output
    r = run("evaluate", "--model", tmp_path / "m", "--events", later, "--split", "all", "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert f"all patients: 2 {lacks} J44, K21" in words(r.output) and "not in model" not in r.output
    assert json.loads((tmp_path / "e.json").read_text())["test_samples"]["excluded"]["label_not_in_model:K21"] == 1
    r = run("report", "--model", tmp_path / "m", "--events", later, "--split", "all", "--bootstrap", 0,
            "--out", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    assert "not among the model&#x27;s labels (J44, K21): left out" in page and "not in model" not in page
    r = run("update", "--model", tmp_path / "m", "--events", later, "--add", "J44", "--out", tmp_path / "u")
    assert r.exit_code == 0, r.output
    assert f"train: 1 {lacks} K21" in words(r.output) and "not in model" not in r.output
    report = json.loads((tmp_path / "u" / "update_report.json").read_text())
    assert report["train_excluded"]["label_not_in_model:K21"] == 1


# -- train checks its inputs before the events are read, and shows its bar only once they are checked -------

def test_train_shows_no_training_bar_before_an_error_about_its_labels(lower_case_model, tmp_path):
    """`--labels prefix:NOPE//` matches no code: train showed "training logistic 0/30" and then the error, as
    update did before; the bar starts once the labels and samples are checked."""
    _, events, _ = lower_case_model
    r = run("train", "--events", events, "--labels", "prefix:NOPE//", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert "no label code of --labels 'prefix:NOPE//'" in words(r.output)
    assert "training logistic" not in r.output and not r.output.startswith("\n")


@pytest.mark.parametrize("option", ["--baselines", "--oracle", "--targets", "--init"])
def test_train_refuses_a_bad_option_file_before_reading_the_events(lower_case_model, tmp_path, option):
    """A typo in --baselines failed after the model was trained; an --oracle that is not Parquet was a traceback
    after the event store was built; a bad --targets or --init was said after it. Each is said first."""
    _, events, _ = lower_case_model
    bad = tmp_path / "targets.csv"
    bad.write_text("subject_id,prediction_time,label,value\n1,2020-01-01,E11,true\n1,2020-02-01,E11,true,x\n")
    value, said = {"--baselines": ("nope", "option --baselines: unknown model 'nope'"),
                   "--oracle": (events, "option --oracle: could not be read as Parquet"),
                   "--targets": (bad, "targets.csv: a row has more fields than the header's 4 (file line 3)"),
                   "--init": (tmp_path / "enc", "not a complete ehrdx model directory")}[option]
    (tmp_path / "enc").mkdir()  # a folder that is no encoder (and that --out is not inside)
    r = run("train", "--events", events, "--labels", "prefix:DX//:3", "--model", "gru", option, value,
            "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert said in words(r.output) and "Traceback" not in r.output
    assert "event store:" not in r.output and not (tmp_path / "m").exists()


def test_train_on_a_table_refuses_an_unreadable_oracle_before_reading_the_table(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("patient_id,age,diseases\n1,50,E11\n2,60,I10\n")
    r = run("train", table, "--model", "logistic", "--oracle", table, "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert "table.csv, option --oracle: could not be read as Parquet" in words(r.output)
    assert "read 2 patients" not in r.output


# -- pretrain: bad option values refused at once, its bar shown once the target codes are checked -------------

def test_pretrain_shows_no_bar_before_an_error_about_its_target_codes(lower_case_model, tmp_path):
    """`--min-count 1000` leaves no target code: pretrain showed "pretraining gru 0/10" and then the error."""
    _, events, _ = lower_case_model
    r = run("pretrain", "--events", events, "--min-count", 1000, "--out", tmp_path / "enc")
    assert r.exit_code == 2, r.output
    assert "option --min-count: no code is recorded at visits of 1000 or more training patients" in words(r.output)
    assert "pretraining gru" not in r.output and not (tmp_path / "enc").exists()


@pytest.mark.parametrize(("option", "value"), [("--epochs", 0), ("--max-targets", 0), ("--patience", -1)])
def test_pretrain_refuses_option_values_that_make_no_sense_before_reading_the_events(lower_case_model, tmp_path,
                                                                                    option, value):
    """`--epochs 0` wrote an untrained encoder as if pretrained; `--max-targets 0` failed after the bar blaming
    --min-count; `--patience -1` was taken as 0. Each is refused as the option's value, first."""
    _, events, _ = lower_case_model
    r = run("pretrain", "--events", events, option, value, "--out", tmp_path / "enc")
    assert r.exit_code == 2, r.output
    assert option in r.output and "event store:" not in r.output and not (tmp_path / "enc").exists()


@pytest.mark.parametrize("option", ["--batch-size", "--workers"])
def test_a_zero_batch_size_or_worker_count_is_refused_not_read_as_the_default(tmp_path, option):
    """`--batch-size 0` and `--workers 0` silently meant the defaults; they are refused before any work."""
    r = run("train", "--meds", GOLDEN / "meds", "--labels", f"map:{GOLDEN / 'label_map.csv'}", "--model", "logistic",
            option, "0", "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert option in words(r.output) and not (tmp_path / "m").exists()


@pytest.mark.parametrize("rows, said", [
    ("1,2020-01-01T00:00:00,a,b\n", "more fields than the header's 2 (file line 3)"),
    ("1\n", "fewer fields than the header's 2 (file line 3)"),
])
def test_a_ragged_row_in_a_times_file_is_named(tmp_path, rows, said):
    """A --times CSV with a row longer than its header gave only "could not be read (ComputeError ...)"; a short
    row was read with an empty prediction time. Both name the file's line now, as the other CSV inputs do."""
    times = tmp_path / "times.csv"
    times.write_text("subject_id,prediction_time\n1,2019-06-01T00:00:00\n" + rows)
    r = run("predict", "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--times", times,
            "--out", tmp_path / "p.csv")
    assert r.exit_code == 2, r.output
    assert "times.csv" in words(r.output) and said in words(r.output) and not (tmp_path / "p.csv").exists()


def test_the_masked_entries_per_date_rule_are_said_within_the_totals_line():
    """`ehrdx demo` printed "label entries before introduction masked:label map: 160,155" under the total of the
    same number: a raw key, and a line repeating another. The rules are said in the total's line."""
    from ehrdx.evaluate.report import count_lines

    key = "label_entries_before_introduction_masked"
    lines = count_lines({key: 5, f"{key}:label map": 3, f"{key}:update --add": 2, "samples_without_next_visit": 7},
                        part="train")
    said = "train: label entries before introduction masked: 5 (introduction dates from: label map 3, update --add 2)"
    assert lines == [said, "train: samples without next visit: 7"]
    # without the total (not written so today), a rule's count is still said
    assert count_lines({f"{key}:label map": 3}) == ["label entries before introduction masked:label map: 3"]
