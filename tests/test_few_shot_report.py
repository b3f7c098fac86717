"""A new label learned from few patients looks as uncertain as it is: the update report counts its training
patients and warns below a minimum; the HTML report gives every label a bootstrap interval over patients."""

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EventClassifier
from ehrdx.evaluate.html import build_report
from ehrdx.evaluate.metrics import bootstrap_label_intervals, weighted_ranking
from ehrdx.evaluate.privacy import suppress_small_cells
from ehrdx.evaluate.report import MIN_TRAIN_POSITIVE_PATIENTS, few_positive_labels
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.ranking import label_ranking
from ehrdx.train.probe import PROBE_C, PROBE_MARGIN, PROBE_PATH, choose_on_path, fit_rows
from ehrdx.update import update_model

INTERVAL = re.compile(r"\d\.\d{3} \((\d\.\d{3})–(\d\.\d{3})\)")


def scored_patients(n_patients: int, positive_patients: dict[str, int], seed: int = 0):
    """Three prediction times per patient; label j is positive at every time of its first
    `positive_patients[j]` patients, scored higher when positive; a patient's times score alike (a patient's
    own risk, plus a little noise), rounded so that there are ties."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), 3)
    y = np.stack([(groups < n) for n in positive_patients.values()], 1).astype(np.float32)
    risk = rng.random((n_patients, y.shape[1]))[groups]
    proba = np.round(np.clip(0.25 * y + 0.7 * risk + 0.05 * rng.random(y.shape), 0, 1), 2)
    return y, np.ones_like(y, dtype=bool), proba, groups


def test_weighted_ranking_with_unit_weights_is_label_rankings_auroc_and_average_precision():
    y, mask, proba, _ = scored_patients(200, {"a": 30, "b": 120})
    mask[::7, 0] = False
    rank = label_ranking(y, mask, proba)
    for j in range(2):
        k = mask[:, j]
        auroc, auprc = weighted_ranking(y[k, j] > 0.5, proba[k, j].astype(float), np.ones((1, k.sum()), np.int32))
        assert abs(auroc[0] - rank.auroc[j]) < 1e-9 and abs(auprc[0] - rank.auprc[j]) < 1e-9
    # weights are patients drawn several times: weight 2 is the sample taken twice
    k = mask[:, 0]
    w = np.ones((1, k.sum()), np.int32)
    w[0, :40] = 2
    doubled = np.r_[np.flatnonzero(k), np.flatnonzero(k)[:40]]
    auroc, auprc = weighted_ranking(y[k, 0] > 0.5, proba[k, 0].astype(float), w)
    twice = label_ranking(y[doubled][:, :1], mask[doubled][:, :1], proba[doubled][:, :1])
    assert abs(auroc[0] - twice.auroc[0]) < 1e-9 and abs(auprc[0] - twice.auprc[0]) < 1e-9


def test_intervals_hold_the_point_estimate_and_are_the_same_on_every_run():
    y, mask, proba, groups = scored_patients(300, {"common": 150, "middle": 40, "rare": 12})
    rank = label_ranking(y, mask, proba)
    ci = bootstrap_label_intervals(y, mask, proba, groups, draws=100, seed=3)
    for m, point in (("auroc", rank.auroc), ("auprc", rank.auprc)):
        assert np.all(ci[f"{m}_low"] <= point) and np.all(point <= ci[f"{m}_high"])
        assert np.all(ci[f"{m}_high"] - ci[f"{m}_low"] > 0)
    again = bootstrap_label_intervals(y, mask, proba, groups, draws=100, seed=3)
    for key in ci:  # the same draws and the same arithmetic: equal by construction
        np.testing.assert_array_equal(ci[key], again[key])
    other = bootstrap_label_intervals(y, mask, proba, groups, draws=100, seed=4)
    assert not np.array_equal(ci["auroc_low"], other["auroc_low"])


def test_a_label_with_few_positive_patients_gets_a_wide_interval_and_one_without_any_gets_none():
    y, mask, proba, groups = scored_patients(400, {"many": 200, "few": 6, "none": 0})
    ci = bootstrap_label_intervals(y, mask, proba, groups, draws=200)
    width = ci["auroc_high"] - ci["auroc_low"]
    assert width[1] > 0.2 and width[1] > 3 * width[0], width
    assert np.isnan(ci["auroc_low"][2]) and np.isnan(ci["auprc_high"][2])  # no positive: no AUROC, no interval
    mask[:, 1] = False  # a label with no known sample at all (introduced after every window): none either
    ci = bootstrap_label_intervals(y, mask, proba, groups, draws=20)
    assert np.isnan(ci["auroc_low"][1]) and not np.isnan(ci["auroc_low"][0])
    assert all(np.isnan(v).all() for v in weighted_ranking(np.zeros(0, bool), np.zeros(0), np.ones((3, 0), np.int32)))


def test_new_labels_below_the_minimum_of_training_patients_are_warned_about_fewest_first():
    report = {"per_label": [
        {"label": "OLD", "new": False, "train_positive_patients": 3, "train_positives": 5},
        {"label": "A", "new": True, "train_positive_patients": 31, "train_positives": 70},
        {"label": "B", "new": True, "train_positive_patients": "<10", "train_positives": "<10"},  # as released
        {"label": "C", "new": True, "train_positive_patients": 32, "train_positives": 90},
        {"label": "D", "new": True, "train_positive_patients": 12, "train_positives": 12}]}
    warned = few_positive_labels(report)
    assert MIN_TRAIN_POSITIVE_PATIENTS == 32
    assert [w["label"] for w in warned] == ["B", "D", "A"]  # C has the minimum; old labels are not warned about
    assert warned[2] == {"label": "A", "train_positive_patients": 31, "train_positives": 70, "minimum": 32}
    assert [w["label"] for w in few_positive_labels(report, minimum=10)] == ["B"]  # "<10": 9 at most
    # below 9 or not, "<10" cannot say (and a warning must not give the hidden count away)
    assert [w["label"] for w in few_positive_labels(report, minimum=9)] == []


@pytest.fixture(scope="module")
def updated(tmp_path_factory):
    """A logistic model trained on the data as of 2020, updated with the labels that came later (E11.2, E11.9,
    U07.1): a few hundred patients, so some new labels have few positive training patients."""
    out = tmp_path_factory.mktemp("few")
    paths = write_longitudinal(generate_longitudinal(400, seed=5), out)
    old_store = open_store(meds=paths["meds"], store_dir=out / "old", until="2020-01-01")
    store = open_store(meds=paths["meds"], store_dir=out / "new")
    old = EventClassifier(model="logistic", labels=f"map:{paths['label_map']}").fit(
        old_store, *patient_splits(old_store, paths["meds"], 0)[:2])
    splits = patient_splits(store, paths["meds"], 0)
    new, report = update_model(old, store, splits)
    return paths, store, splits, new, report


def test_the_update_report_counts_each_new_labels_training_patients(updated):
    _, store, splits, new, report = updated
    s = new.samples(store, splits[0])
    for row in report["per_label"]:
        j = new.labels_.index(row["label"])
        positive = (s.y[:, j] > 0.5) & s.mask[:, j]
        assert row["train_positive_patients"] == len(np.unique(s.row[positive]))
        assert row["train_positives"] == int(positive.sum())
    released = suppress_small_cells(report, 10)
    warned = {w["label"] for w in few_positive_labels(released)}
    expected = {r["label"] for r in report["per_label"] if r["new"] and r["train_positive_patients"] < 32}
    assert warned == expected and warned  # at 400 patients at least one new label has fewer than 32
    for r in released["per_label"]:  # a small cell hides its patients as its prediction times
        if r["label"] in warned and isinstance(r["train_positive_patients"], str):
            assert r["train_positives"] == "<10" and r["auroc_after"] is None


def test_the_html_report_gives_intervals_only_to_the_cells_it_shows_and_warns_about_few_positives(updated):
    _, store, splits, new, report = updated
    s = new.samples(store, splits[2])
    proba = new.predict_samples(store, s)
    page = build_report(title="t", samples=s, proba=proba, labels=new.labels_, thresholds=new.thresholds_,
                        update_report=report, min_cell=2, bootstrap_draws=50)
    per_label = page.split("id='per-label'")[1].split("id='by-visits'")[0]
    intervals = INTERVAL.findall(per_label)
    assert intervals and all(float(lo) <= float(hi) for lo, hi in intervals)
    assert "resamplings of the patients" in per_label
    for w in few_positive_labels(suppress_small_cells(report, 2)):
        assert f"<b>{w['label']}</b>: {w['train_positive_patients']} positive training patients, fewer than 32" in page
    assert not INTERVAL.search(build_report(title="t", samples=s, proba=proba, labels=new.labels_,
                                            thresholds=new.thresholds_, bootstrap_draws=0))
    # every label suppressed as a small cell: no metric, so no interval to give it away
    assert not INTERVAL.search(build_report(title="t", samples=s, proba=proba, labels=new.labels_,
                                            thresholds=new.thresholds_, min_cell=100_000, bootstrap_draws=50))


def test_ehrdx_update_prints_and_saves_the_warning(updated, tmp_path):
    paths = updated[0]
    run = CliRunner().invoke
    r = run(app, ["train", "--meds", str(paths["meds"]), "--labels", f"map:{paths['label_map']}", "--until",
                  "2020-01-01", "--model", "logistic", "--out", str(tmp_path / "old")])
    assert r.exit_code == 0, r.output
    r = run(app, ["update", "--model", str(tmp_path / "old"), "--meds", str(paths["meds"]), "--out",
                  str(tmp_path / "new")])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "new" / "update_report.json").read_text())
    assert saved["new_labels_few_positives"] == few_positive_labels(saved)  # the CLI's list is the library's
    assert saved["new_labels_few_positives"]
    text = " ".join(r.output.split())
    for w in saved["new_labels_few_positives"]:
        assert f"new label {w['label']}: {w['train_positive_patients']} positive training patients" in text
    r = run(app, ["report", "--model", str(tmp_path / "new"), "--meds", str(paths["meds"]), "--out",
                  str(tmp_path / "r.html"), "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    assert INTERVAL.search(page) and "over 20 resamplings of the patients" in page


def test_the_probe_chooses_each_labels_penalty_on_the_validation_samples():
    rng = np.random.default_rng(0)
    H, Hv = rng.normal(size=(300, 48)).astype(np.float32), rng.normal(size=(300, 48)).astype(np.float32)
    weak = H[:, 0] + rng.normal(size=300) > 2.6  # 9 positives in 48 dimensions: C = 1 fits them, not the signal
    yv = np.stack([Hv[:, 0] + rng.normal(size=300) > 2.0, np.zeros(300, bool), np.zeros(300, bool)], 1)
    y = np.stack([weak, H[:, 1] > 1.0, H[:, 2] > 1.0], 1).astype(np.float32)  # 1, 2: strong
    yv[0, 1], Hv[0, 1] = True, 50.0  # label 1: one validation positive, first under every C (a tie)
    m, mv = np.ones_like(y, bool), np.ones_like(yv, bool)  # label 2: no validation positive at all
    rows, bias, chosen = choose_on_path(H, y, m, Hv, yv, mv)
    path = sorted({*PROBE_PATH, PROBE_C})
    aurocs = []
    for c in path:  # label 0 on its own, one C at a time: the best validation AUROC is the one kept
        w, b = fit_rows(H, y[:, :1], m[:, :1], C=c)
        s = Hv @ w[0].numpy() + float(b[0])
        aurocs.append(label_ranking(yv[:, :1].astype(np.float32), mv[:, :1], s[:, None]).auroc[0])
    default = path.index(PROBE_C)
    assert max(aurocs) > aurocs[default] + PROBE_MARGIN  # the data make another C clearly better ...
    assert chosen[0] == path[int(np.argmax(aurocs))] != PROBE_C  # ... so it is kept
    w, b = fit_rows(H, y[:, :1], m[:, :1], C=chosen[0])
    torch.testing.assert_close(rows[0], w[0])
    torch.testing.assert_close(bias[0], b[0])
    assert chosen[1] == PROBE_C  # every C ranks its one positive first: none beats the default
    assert chosen[2] == PROBE_C  # nothing to choose by
    # labels that start from pretrained rows choose their pull towards them the same way
    start = (torch.ones(3, 48) / 7, torch.zeros(3), torch.tensor([True, False, True]))
    rows_s, _, chosen_s = choose_on_path(H, y, m, Hv, yv, mv, start=start)
    assert chosen_s[2] == PROBE_C and chosen_s[1] == PROBE_C
    w, _ = fit_rows(H, y, m, start=start, C=chosen_s[0])
    torch.testing.assert_close(rows_s[0], w[0])


def test_an_update_without_validation_samples_probes_every_new_label_at_the_default_penalty(monkeypatch):
    """`probe_new_rows` (update and the auto ensemble's network member): with validation samples each
    label's penalty is chosen on them; with none, or an empty set, every label gets PROBE_C."""
    from ehrdx.train import probe

    rng = np.random.default_rng(1)
    states = {"train": rng.normal(size=(200, 16)).astype(np.float32),
              "val": rng.normal(size=(150, 16)).astype(np.float32), "empty": np.zeros((0, 16), np.float32)}
    monkeypatch.setattr(probe, "sample_states", lambda model, dataset: states[dataset])
    H = states["train"]
    y = np.stack([H[:, 0] > 1.0, H[:, 1] + rng.normal(size=200) > 2.4], 1).astype(np.float32)
    m = np.ones_like(y, bool)
    yv = np.stack([states["val"][:, 0] > 1.0, states["val"][:, 1] > 2.0], 1)
    mv = np.ones_like(yv, bool)
    for val in (None, ("empty", yv[:0], mv[:0])):
        rows, bias, chosen = probe.probe_new_rows(None, "train", y, m, val)
        assert chosen == [PROBE_C, PROBE_C]
        w, b = fit_rows(H, y, m, C=PROBE_C)
        torch.testing.assert_close(rows, w)
        torch.testing.assert_close(bias, b)
    rows, bias, chosen = probe.probe_new_rows(None, "train", y, m, ("val", yv, mv))
    want = choose_on_path(H, y, m, states["val"], yv, mv)
    assert chosen == want[2] and chosen != [PROBE_C, PROBE_C]  # the validation samples chose a penalty
    torch.testing.assert_close(rows, want[0])
