"""A new user's edge cases of the hospital-scale features (session s15): label selections over large
vocabularies, bounded contexts, many-label reports."""

import json
import re

import pytest

from cli_run import run, words


def _events_with_short_codes(tmp_path, patients: int = 30):
    """Diagnosis codes in full (DX//E11.9, DX//I10) in every patient, the prefix alone (`DX//`) in the odd ones
    and a code shorter than three characters (`DX//E1`) in every third."""
    rows = []
    for p in range(1, patients + 1):
        rows += [f"{p},2020-01-01,DX//I10", f"{p},2020-03-01,DX//E11.9", f"{p},2020-06-01,DX//{'I10' if p % 2 else 'E11.2'}"]
        rows += [f"{p},2020-09-01,DX//"] if p % 2 else []
        rows += [f"{p},2020-10-01,DX//E1"] if p % 3 == 0 else []
        rows += [f"{p},2020-12-01,DX//E11.9"]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    return events


def test_codes_a_prefix_selection_cuts_short_are_counted_and_said(tmp_path):
    """`DX//` itself gave no label and `DX//E1` under `prefix:DX//:3` a label `E1` of its own, without a word."""
    events = _events_with_short_codes(tmp_path)
    r = run("targets", "--events", events, "--labels", "prefix:DX//:3", "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert ("2 event code(s) start with the prefix of --labels 'prefix:DX//:3' but hold fewer than the 3 characters "
            "asked after it (DX//, DX//E1; 25 events): the prefix alone is no label (15 events); a shorter code is a "
            "label of its own") in said
    r = run("targets", "--events", events, "--labels", "prefix:DX//", "--out", tmp_path / "u.csv")
    assert r.exit_code == 0 and "(DX//; 15 events): the prefix alone is no label (15 events); fix:" in words(r.output)
    assert "a shorter code" not in r.output
    r = run("train", "--events", events, "--labels", "prefix:DX//:3", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "start with the prefix of --labels 'prefix:DX//:3'" in words(r.output)
    found = json.loads((tmp_path / "m" / "metrics.json").read_text())["train_summary"]["codes_cut_short_by_the_prefix"]
    assert found["codes"] == ["DX//", "DX//E1"] and found["events_without_label"] > 0
    r = run("evaluate", "--events", events, "--model", tmp_path / "m", "--split", "all", "--out", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert "start with the prefix of the model's labels" in words(r.output)
    assert json.loads((tmp_path / "e.json").read_text())["codes_cut_short_by_the_prefix"]["count"] == 2


def test_a_suppressed_count_sorts_above_labels_without_positives():
    """A count shown as '<10' has 1 to 9 patients' positives: it sorted as 0, so a table 'of the labels with the
    most positives' showed labels with none (A13: 0) and left out labels with some (by name among all of them)."""
    from ehrdx.evaluate.report import most_positive

    rows = [{"label": "A13", "positives": 0}, {"label": "Z99", "positives": "<10"}, {"label": "B20", "positives": 0},
            {"label": "M54", "positives": 40}, {"label": "C50", "positives": "<10"}]
    shown, hidden = most_positive(rows, 3)
    assert [rows[j]["label"] for j in shown] == ["M54", "C50", "Z99"] and hidden == 2


def test_a_resume_without_an_option_the_run_had_says_it_is_left_out_not_none(tmp_path):
    """`train --context 2` stopped, resumed without --context: '(--context 2 there, None now)'."""
    from ehrdx.errors import ModelError
    from ehrdx.train.checkpoint import check_run_options, start_run

    start_run(tmp_path, {"--context": 2, "--model": "gru"})
    with pytest.raises(ModelError) as err:
        check_run_options(tmp_path, {"--context": None, "--model": "gru"})
    assert "(--context 2 there, left out now)" in str(err.value)
    with pytest.raises(ModelError) as err:
        check_run_options(tmp_path, {"--context": 2, "--model": "lstm"})
    assert "(--model 'gru' there, 'lstm' now)" in str(err.value)


def test_more_than_50_labels_with_one_class_in_training_are_counted_not_cut_to_50(tmp_path):
    """Thousands of labels on a few patients: most have no positive training sample. The first 50 names were
    printed and kept with nothing saying there were more."""
    rows = []
    for p in range(1, 21):
        rows += [f"{p},2020-01-01,DX//F{p:02d}{k}" for k in range(6)]  # first visits only: never a positive
        rows += [f"{p},2020-0{v + 2}-01,DX//L{(p * 7 + v * 13 + k) % 40:03d}" for v in range(3) for k in range(3)]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    r = run("train", "--events", events, "--labels", "prefix:DX//", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "m" / "metrics.json").read_text())["train_summary"]
    n = summary["labels_with_one_class_in_training_counts"]["no_positives"]
    assert n > 50 and len(summary["labels_with_one_class_in_training"]["no_positives"]) == 50
    assert f"{n} label(s) with no positives among the training samples" in words(r.output)
    assert f"and {n - 50} more" in words(r.output)


@pytest.mark.parametrize("shape", ["builtin", "hospital"])
def test_synth_refuses_no_patients_naming_its_option_not_a_python_parameter(tmp_path, shape):
    """`synth --patients 0` said 'n_patients must be at least 1', the generator's parameter."""
    r = run("synth", "--shape", shape, "--patients", "0", "--out", tmp_path / "s")
    assert r.exit_code == 2 and "--patients" in r.output and "n_patients" not in r.output, r.output
    assert not (tmp_path / "s").exists()


def test_synth_hospital_says_it_writes_meds_when_given_an_option_of_the_builtin_cohort(tmp_path):
    r = run("synth", "--shape", "hospital", "--patients", "2", "--format", "events", "--out", tmp_path / "s")
    assert r.exit_code == 2
    assert "--format is an option for the built-in cohort (--shape builtin), and this run writes the hospital " \
           "shape, always as MEDS" in words(r.output)


def test_codes_a_regex_matches_outside_its_group_are_counted_and_said(tmp_path):
    """`regex:^DX//(E1\\d)?` matches DX//I10 too, without its group: the label was the whole match, `DX//`, one label
    for every other diagnosis, without a word."""
    events = _events_with_short_codes(tmp_path)
    r = run("targets", "--events", events, "--labels", r"regex:^DX//(E1\d)?", "--out", tmp_path / "t.csv")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert (r"3 event code(s) match --labels 'regex:^DX//(E1\d)?' but not its group 1 (DX//, DX//E1, DX//I10; "
            "70 events): each is labelled by the whole match instead (DX//)") in said
    r = run("targets", "--events", events, "--labels", r"regex:^DX//(E1\d)", "--out", tmp_path / "u.csv")
    assert r.exit_code == 0 and "group 1" not in r.output
    r = run("train", "--events", events, "--labels", r"regex:^DX//(E1\d)?", "--model", "logistic",
            "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    found = json.loads((tmp_path / "m" / "metrics.json").read_text())["train_summary"]["codes_outside_the_regex_group"]
    assert found["labels"] == ["DX//"] and "DX//I10" in found["codes"]


def test_the_report_names_the_first_50_labels_without_a_curve_and_counts_the_rest(tmp_path):
    """Hundreds of labels on a few patients: every one is below the small-cell threshold, and the note under the
    curves listed every name (thousands of labels: a page of names)."""
    rows = []
    for p in range(1, 41):
        rows += [f"{p},2020-0{v + 1}-01,DX//L{(p * 31 + v * 17 + k * 7) % 300:03d}" for v in range(5) for k in range(10)]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    r = run("train", "--events", events, "--labels", "prefix:DX//", "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    r = run("report", "--events", events, "--model", tmp_path / "m", "--out", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    note = (tmp_path / "r.html").read_text().split("No per-label curve", 1)[1].split("</p>", 1)[0]
    n = int(note.split(" label(s)", 1)[0].removeprefix(" for ").replace(",", ""))
    assert n > 50 and len(re.findall(r"\bL\d{3}\b", note)) == 50 and f" and {n - 50:,} more." in note


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_the_help_of_context_says_how_many_visits_a_sample_reads(command):
    """It said 'at most about N of the latest visits (N to 2N)': a sample reads between N + 1 and 2N (windows.py,
    the README), more than the 'at most about N' a user sizes memory by."""
    r = run(command, "--help")
    said = words(r.output.replace("│", " ").replace("[x>=1]", " "))  # the range column wraps into the text
    assert "latest visits (between N + 1 and 2N; all of a shorter history)" in said and "at most about N" not in said
