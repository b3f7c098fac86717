"""Defects found by new-user trials (session 15): what a run leaves out or ignores is said."""

import re

import numpy as np
import polars as pl
from rich.console import Console

from cli_run import run, words
from ehrdx.data.meds import normalise_events
from ehrdx.data.store import build_store
from ehrdx.estimator import EventClassifier
from ehrdx.evaluate.report import count_lines, print_events_report
from ehrdx.events_pipeline import patient_splits
from ehrdx.pipeline import baseline_is_the_model, train_and_evaluate
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.select import LabelSelector
from ehrdx.tasks.task import TaskSpec, build_samples, code_label_index, label_first_times


def _store(tmp_path, visits: dict[int, list[str]]):
    """Patients with one diagnosis per visit: {subject: [visit dates]}."""
    rows = [(s, day, "DX//I10" if k % 2 else "DX//E11", None) for s, days in visits.items()
            for k, day in enumerate(days)]
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8,
                                       "numeric_value": pl.Float64}, orient="row")
    return build_store([normalise_events(frame, "e.csv")], tmp_path / "store")


def test_a_next_visit_patient_with_one_visit_is_counted_as_a_patient_too(tmp_path):
    st = _store(tmp_path, {1: ["2020-01-01", "2020-06-01"], 2: ["2020-01-01", "2020-03-01"], 3: ["2020-01-01"]})
    selector, rows = LabelSelector.parse("prefix:DX//"), np.arange(3)
    vocab = LabelVocab.from_first_times(label_first_times(st, rows, selector), {}, infer_introduced=False)
    s = build_samples(st, rows, TaskSpec.parse("next-visit"), code_label_index(st, selector, vocab), len(vocab))
    assert len(np.unique(s.row)) == 2
    assert s.counts["samples_without_next_visit"] == 3  # each patient's last visit
    assert s.counts["patients_left_without_any_sample"] == 1  # patient 3: its one sample went
    assert "patients left without any sample: 1" in count_lines(s.counts)


def test_a_context_longer_than_every_history_is_said_to_bound_nothing(tmp_path):
    # 30 patients of 4 visits, so next-visit samples of up to 3: a context of 1 cuts a history of 3 (a
    # sequence reads up to 2 visits), a context of 2 cuts none (up to 4)
    st = _store(tmp_path, {s: ["2020-01-01", "2020-03-01", "2020-06-01", "2020-09-01"] for s in range(30)})
    splits = patient_splits(st, None, 0)
    clf, metrics = train_and_evaluate(st, EventClassifier(model="gru", hidden=8, max_epochs=1, context=2), splits)
    note = clf.fit_summary_["context_bounds_no_history"]["note"]
    assert "context of 2 visit(s) bounds no history" in note and "at most 3 visit(s)" in note
    console = Console(record=True, width=300)
    print_events_report(console, metrics)
    assert "bounds no history" in console.export_text()
    cut = EventClassifier(model="gru", hidden=8, max_epochs=1, context=1).fit(st, splits[0], splits[1])
    assert "context_bounds_no_history" not in cut.fit_summary_


def test_a_baseline_that_is_the_model_itself_is_left_out_and_said(tmp_path):
    assert baseline_is_the_model(EventClassifier(model="gbm"), "gbm", "events")
    assert not baseline_is_the_model(EventClassifier(model="gbm", gbm_params={"num_leaves": 7}), "gbm", "events")
    assert not baseline_is_the_model(EventClassifier(model="gru", hidden=8), "gru", "events")  # another size
    assert baseline_is_the_model(EventClassifier(), "auto", "events")  # the default model, named
    st = _store(tmp_path, {s: ["2020-01-01", "2020-03-01", "2020-06-01"] for s in range(30)})
    _, metrics = train_and_evaluate(st, EventClassifier(model="logistic"), patient_splits(st, None, 0),
                                    baselines=("logistic",))
    assert "baselines" not in metrics and metrics["baselines_left_out"]["names"] == ["logistic"]
    console = Console(record=True, width=300)
    print_events_report(console, metrics)
    text = console.export_text()
    assert "logistic (baseline)" not in text and "baseline(s) logistic left out: the model itself" in text


def test_search_without_tuning_patients_is_refused_before_the_data_is_read(tmp_path):
    # the inputs are not even readable: the refusal comes first, without reading (or failing on) them
    bad = tmp_path / "events.csv"
    bad.write_bytes(b"\x00\xff not a table")
    for given in (["--events", bad], [bad]):
        r = run("train", *given, "--search", "3", "--val-fraction", "0", "--out", tmp_path / "m")
        assert r.exit_code == 2 and "--val-fraction 0 leaves none" in words(r.output), r.output
    # MEDS subject_splits give tuning patients whatever --val-fraction says: not refused for it
    meds = tmp_path / "meds"
    (meds / "metadata").mkdir(parents=True)
    pl.DataFrame({"subject_id": [1], "split": ["tuning"]}).write_parquet(meds / "metadata" / "subject_splits.parquet")
    r = run("train", "--meds", meds, "--search", "3", "--val-fraction", "0", "--out", tmp_path / "m2")
    assert "--val-fraction 0 leaves none" not in words(r.output)


def test_averages_over_hidden_labels_only_are_hidden_too():
    # a 1-patient test set: every label's cell is suppressed, so the averages rest on that patient alone
    from ehrdx.evaluate.privacy import suppress_small_cells

    rows = [{"label": lab, "known": 3, "positives": 1, "positive_patients": 1, "auroc": a, "auprc": 0.5,
             "status": "ok"} for lab, a in (("E11", 1.0), ("I10", 0.5))]
    metrics = {"test": {"macro_auroc": 0.75, "macro_auprc": 0.5, "micro_auroc": 0.7, "micro_auprc": 0.6,
                        "recall_at_5": 1.0, "per_label": rows}}
    out = suppress_small_cells(metrics)["test"]
    assert all(r["auroc"] is None for r in out["per_label"])
    assert out["macro_auroc"] is None and out["macro_auprc"] is None
    assert out["micro_auroc"] is None and out["recall_at_5"] is None


def test_predict_says_patients_without_a_prediction_time_once(tmp_path):
    # predict keeps every sample (no labels needed): a patient without one has no visit, which predict
    # already says as such; the total of patients without samples would say it twice
    import csv

    events = tmp_path / "events.csv"
    with events.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "time", "code"])
        for s in range(30):
            for day in ("2020-01-01", "2020-03-01", "2020-06-01"):
                w.writerow([s, day, "DX//E11" if s % 2 else "DX//I10"])
        w.writerow([99, "", "MEDS_BIRTH"])  # a static fact only: no visit
    r = run("train", "--events", events, "--model", "logistic", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    r = run("predict", "--events", events, "--model", tmp_path / "m", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    text = words(r.output)
    assert "1 patient(s) with no prediction time" in text and "patients left without any sample" not in text


def test_training_says_each_epoch_where_the_output_is_no_terminal(tmp_path):
    # a log file or a batch job's output: rich's live bar showed nothing until the run ended (minutes of
    # silence for auto, whose boosted members fit first); now a line at the start and one per epoch
    rows = [f"{p},2020-0{m}-01,DX//{'I10' if (p + m) % 3 else 'E11'}" for p in range(1, 41) for m in range(1, 7)]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    r = run("train", "--events", events, "--labels", "prefix:DX//", "--model", "gru", "--epochs", "2",
            "--patience", "5", "--hidden", "8", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    said = words(r.output)
    assert "training gru ..." in said
    assert re.search(r"training gru: epoch 1/2 train \d\.\d{4} val \d\.\d{4} \(\d+ s\)", said), said
    assert "training gru: epoch 2/2" in said


def test_report_titles_write_counts_with_thousands_separators(tmp_path):
    # '16914 prediction times' where every other line says '2,500'
    st = _store(tmp_path, {s: ["2020-01-01", "2020-03-01", "2020-06-01"] for s in range(30)})
    _, metrics = train_and_evaluate(st, EventClassifier(model="logistic"), patient_splits(st, None, 0))
    metrics["test_samples"].update(samples=16914, patients=1234)
    console = Console(record=True, width=300)
    print_events_report(console, metrics)
    assert "16,914 prediction times of 1,234 patients" in console.export_text()


def test_samples_without_a_next_visit_are_said_within_the_left_out_line():
    # 'samples without next visit: 500' then 'samples without known labels left out: 500' read as two drops
    lines = count_lines({"samples_without_next_visit": 500, "samples_without_known_labels_left_out": 512},
                        part="train")
    assert lines == ["train: samples without known labels left out: 512 (500 of them without a next visit)"]
    assert count_lines({"samples_without_next_visit": 7}) == ["samples without next visit: 7"]  # kept (predict)
