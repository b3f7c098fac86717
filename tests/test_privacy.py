"""Privacy: no patient ids or raw cells in messages unless asked; small cells suppressed in reports."""

import json
import re

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import DataError, show_identifiers
from ehrdx.evaluate.metrics import evaluate_predictions
from ehrdx.evaluate.privacy import suppress_small_cells

OFFSET = 7_300_000_000  # subject ids that cannot be mistaken for other numbers in the output


@pytest.fixture
def hidden_ids():
    show_identifiers(False)
    yield
    show_identifiers(False)


def test_error_messages_hide_cell_values_unless_asked(hidden_ids):
    err = DataError("unparseable times", file="e.csv", column="time", rows=[4], values=["1987-02-31 Jane Doe"])
    assert "Jane" not in str(err) and "row 5" in str(err) and "show_identifiers(True)" in str(err)  # Python's way
    show_identifiers(True)
    err = DataError("unparseable times", file="e.csv", column="time", rows=[4], values=["1987-02-31 Jane Doe"])
    assert "Jane Doe" in str(err)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("priv")
    c = generate_longitudinal(700, seed=9)
    events = c.events.with_columns(pl.col("subject_id") + OFFSET)
    oracle = c.oracle.with_columns(pl.col("subject_id") + OFFSET)
    import dataclasses

    return write_longitudinal(dataclasses.replace(c, events=events, oracle=oracle), out / "c"), events


def _assert_no_ids(text: str) -> None:
    # An id is a number of its own that starts with the offset's digits; the same digits deep inside a
    # float's decimals (0.5971808667730...) are not an id.
    ids = re.findall(rf"(?<![\d.]){OFFSET // 1_000_000}\d*", text)
    assert not ids, "a patient id reached the output"


def test_training_output_and_metrics_carry_no_ids_and_no_small_cells(cohort, tmp_path):
    paths, _ = cohort
    r = CliRunner().invoke(app, ["train", "--meds", str(paths["meds"]), "--labels", f"map:{paths['label_map']}",
                                 "--epochs", "2", "--hidden", "16", "--device", "cpu", "--baselines", "logistic",
                                 "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    # no --model: the default for event streams, auto, whose members' and weights' reports are checked too
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_name"] == "auto"
    _assert_no_ids(r.output)
    metrics_text = (tmp_path / "m" / "metrics.json").read_text()
    _assert_no_ids(metrics_text)
    m = json.loads(metrics_text)
    assert m["small_cells"]["min_patients"] == 10
    rows = m["test"]["per_label"] + m["test_new_onset"]["per_label"]
    suppressed = [row for row in rows if row["positive_patients"] == "<10"]
    assert suppressed, "this cohort has labels with fewer than 10 test patients (U07.1 new onsets)"
    for row in rows:
        n = row["positive_patients"]
        assert n == "<10" or n == 0 or n >= 10
        if n == "<10":
            assert row["auroc"] is None and row["positives"] == "<10" and row["tuned"]["f1"] is None
    for b in m["test_by_prior_visits"]:
        assert b["patients"] == "<10" or b["patients"] >= 10
    # the rows left are printed; suppressed ones show "<10"
    assert "<10" in r.output


def test_min_cell_zero_reports_every_cell(cohort, tmp_path):
    paths, _ = cohort
    r = CliRunner().invoke(app, ["--min-cell", "0", "train", "--meds", str(paths["meds"]), "--labels",
                                 f"map:{paths['label_map']}", "--model", "gru", "--epochs", "1", "--hidden", "16", "--device", "cpu",
                                 "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert "small_cells" not in m
    assert all(isinstance(row["positive_patients"], int) for row in m["test"]["per_label"])


def test_bad_rows_are_named_by_row_number_and_ids_shown_only_with_the_flag(cohort, tmp_path, hidden_ids):
    _, events = cohort
    bad = events.head(400).with_columns(pl.col("time").dt.strftime("%Y-%m-%d %H:%M:%S"))
    bad = bad.with_columns(pl.when(pl.int_range(pl.len()) == 123).then(pl.lit("31/02/1987 Jane"))
                           .otherwise(pl.col("time")).alias("time"))
    path = tmp_path / "events.csv"
    bad.write_csv(path)
    args = ["train", "--events", str(path), "--labels", "prefix:DX//", "--out", str(tmp_path / "m")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2
    out = r.output
    assert "events.csv" in out and "time" in out and "row 124" in out
    assert "Jane" not in out
    _assert_no_ids(out)
    r = CliRunner().invoke(app, ["--show-ids", *args])
    assert "31/02/1987 Jane" in r.output and str(OFFSET // 1_000_000) in r.output


def test_suppression_counts_patients_not_prediction_times():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 5)  # 100 patients, 5 prediction times each
    y = np.zeros((500, 3), dtype=np.float32)
    y[groups < 3, 0] = 1  # label 0: 15 positive samples, but only 3 patients
    y[groups < 40, 1] = 1
    y[(groups >= 50) & (groups < 55), 2] = 1  # label 2: 5 patients
    p = rng.random((500, 3))
    r = evaluate_predictions(y, np.ones_like(y, bool), p, ["rare", "common", "rare2"], None, (), groups)
    assert [row["positive_patients"] for row in r["per_label"]] == [3, 40, 5]
    s = suppress_small_cells({"test": r})
    rare, common, _ = s["test"]["per_label"]
    assert rare["positives"] == "<10" and rare["auroc"] is None
    assert common["positives"] == 200 and common["auroc"] is not None
    assert s["test"]["macro_auroc"] == r["macro_auroc"]  # two labels hidden in it: the average stays
    assert s["small_cells"]["per_label_rows"] == 2
    # with one hidden label, the average and the labels shown would give it away: the next smallest
    # label is hidden too, and the average stays
    y3 = np.concatenate([y[:, :2], (groups >= 60)[:, None].astype(np.float32)], axis=1)  # 40 patients
    y3[:, 1] = groups < 30  # 30 patients: the smallest shown
    r2 = evaluate_predictions(y3, np.ones((500, 3), bool), p, ["rare", "mid", "big"], None, (), groups)
    s2 = suppress_small_cells({"test": r2})
    rows = {row["label"]: row for row in s2["test"]["per_label"]}
    assert rows["rare"]["auroc"] is None and rows["mid"]["auroc"] is None and rows["big"]["auroc"] is not None
    assert rows["mid"]["positives"] == 150 and "complementary" in rows["mid"]["status"]
    assert s2["test"]["macro_auroc"] == r2["macro_auroc"]


def test_auto_weights_report_hides_the_tuning_auprc_of_a_label_from_few_tuning_patients():
    """metrics.json's `ensemble` rows give each label's tuning AUPRC: a label whose tuning positives come from
    1 to 9 patients keeps its weights and loses its counts and AUPRCs, like any per-label row."""
    from ehrdx.train.mixing import choose_weights

    rng = np.random.default_rng(0)
    patient = np.repeat(np.arange(100), 4)  # 100 tuning patients, 4 samples each
    y = np.zeros((400, 2), np.float32)
    y[patient < 40, 0] = 1  # label 0: 40 positive patients
    y[patient < 3, 1] = 1  # label 1: 3 positive patients (12 samples)
    p = np.stack([y + rng.normal(0, 0.5, y.shape) for _ in range(2)])
    choices = choose_weights(p, y, np.ones_like(y, dtype=bool), groups=patient, seed=0)[1]
    assert [c["tuning_positive_patients"] for c in choices] == [40, 3]
    rows = [{"label": lab, "weights": {"a": 0.5, "b": 0.5}, **c} for lab, c in zip(("big", "small"), choices)]
    out = suppress_small_cells({"ensemble": {"members": ["a", "b"], "per_label": rows}})["ensemble"]["per_label"]
    assert out[0]["tuning_auprc"] == choices[0]["tuning_auprc"] and out[0]["tuning_positive_patients"] == 40
    assert out[1]["tuning_auprc"] is None and out[1]["tuning_auprc_equal"] is None
    assert out[1]["tuning_positive_patients"] == "<10" and out[1]["weights"] == {"a": 0.5, "b": 0.5}


def test_update_compare_rows_hide_the_macro_averages_the_report_hides():
    """`update --compare` copies the update's new-label macro AUROC into its table: where every new label is
    a small cell, the report's average is hidden and so is the copy (and unprotected fine-tuning's, on the
    same labels and patients)."""
    rows = [{"label": "A", "new": False, "train_positives": 50, "train_positive_patients": 20,
             "test_positives": 40, "test_positive_patients": 20, "auroc_before": 0.8, "auroc_after": 0.8},
            {"label": "N", "new": True, "train_positives": 5, "train_positive_patients": 3,
             "test_positives": 4, "test_positive_patients": 2, "auroc_before": None, "auroc_after": 0.7}]
    compare = {"update (distill)": {"seconds": 1.0, "old_labels_macro_auroc_after": 0.8, "new_labels_macro_auroc": 0.7},
               "fine-tune, no protection": {"seconds": 1.0, "old_labels_macro_auroc_after": 0.79,
                                            "new_labels_macro_auroc": 0.69}}
    report = {"per_label": rows, "old_labels_macro_auroc_after": 0.8, "new_labels_macro_auroc": 0.7,
              "compare": compare}
    out = suppress_small_cells(report)
    assert out["new_labels_macro_auroc"] is None
    assert out["compare"]["update (distill)"]["new_labels_macro_auroc"] is None
    assert out["compare"]["fine-tune, no protection"]["new_labels_macro_auroc"] is None
    assert out["compare"]["update (distill)"]["old_labels_macro_auroc_after"] == 0.8  # shown in the report too
