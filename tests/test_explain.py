"""Explanations: complete (attributions add up), faithful (removing the top-attributed events lowers the
score more than removing random ones), and they find the generator's known causes more often than chance."""

import json
import re

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from ehrdx.cli import app
from ehrdx.data.sequences import SequenceSet
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import DataError
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.explain import _event_inputs, explain_sample, integrated_gradients, score_without


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # this file's fits only: under xdist the next file in this worker keeps its one thread
    out = tmp_path_factory.mktemp("explain")
    paths = write_longitudinal(generate_longitudinal(4000, seed=3), out / "c")
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    tr, va, te = patient_splits(store, paths["meds"], 0)
    clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=32, max_epochs=12, seed=0)
    clf.fit(store, tr, va)
    clf.save(out / "model")
    yield out, paths, store, clf, te
    torch.set_num_threads(threads)


def _cases(clf, store, te, n, seed=0, min_events=12):
    """(inputs, sample position, label index, sample) for n test samples with enough events."""
    rng = np.random.default_rng(seed)
    s = clf.samples(store, te, require_labels=False)
    ds = SequenceSet(store, s, clf.encoder_)
    model = clf.model_.eval()
    out = []
    for seq in rng.permutation(ds.n_sequences):
        inputs = _event_inputs(ds, int(seq))
        if len(inputs.positions) < min_events:
            continue
        idx = inputs.batch.sample_index.numpy()
        pos = len(idx) - 1  # the latest prediction time of the sequence
        with torch.no_grad():
            label = int(torch.argmax(model(inputs.batch)[pos]))
        out.append((inputs, pos, label, int(idx[pos])))
        if len(out) == n:
            break
    return out, s, model


def test_attributions_add_up_to_the_score_difference(trained):
    _, _, store, clf, te = trained
    cases, _, model = _cases(clf, store, te, 8)
    for inputs, pos, label, _ in cases:
        attr, full, empty = integrated_gradients(model, inputs, pos, label, steps=32)
        assert abs(attr.sum() - (full - empty)) < 0.02 + 0.02 * abs(full - empty)


def test_removing_the_top_events_lowers_the_score_more_than_removing_random_ones(trained):
    _, _, store, clf, te = trained
    cases, _, model = _cases(clf, store, te, 40, seed=1)
    rng = np.random.default_rng(0)
    k = 3
    top_drops, random_drops = [], []
    for inputs, pos, label, _ in cases:
        attr, full, _ = integrated_gradients(model, inputs, pos, label, steps=16)
        top = np.argsort(-attr)[:k]
        top_drops.append(full - score_without(model, inputs, pos, label, top))
        draws = [full - score_without(model, inputs, pos, label, rng.choice(len(attr), k, replace=False))
                 for _ in range(5)]
        random_drops.append(np.mean(draws))
    top_drops, random_drops = np.array(top_drops), np.array(random_drops)
    assert top_drops.mean() > 3 * max(random_drops.mean(), 0.01), (top_drops.mean(), random_drops.mean())
    assert (top_drops > random_drops).mean() >= 0.8


CAUSES = {"E11": ("LAB//HBA1C", "DX//R73.0"), "J44": ("LAB//FEV1_PCT", "DX//R05", "DX//Z72.0"),
          "I25": ("DX//R07.4",), "F32": ("DX//F41.9", "DX//G47.0")}


def test_explanations_find_the_generators_known_causes_more_often_than_chance(trained):
    """For new-onset predictions of diseases with known causes in the generator (E11 <- HbA1c and
    hyperglycaemia, J44 <- FEV1, cough and smoking, ...), the top 3 events by attribution include a
    cause more often than 3 events drawn at random from the same history would."""
    _, _, store, clf, te = trained
    s = clf.samples(store, te, require_labels=False)
    proba = clf.predict_samples(store, s)
    hits, chance = [], []
    for label, causes in CAUSES.items():
        j = clf.labels_.index(label)
        eligible = np.flatnonzero(~s.history[:, j])
        top = eligible[np.argsort(-proba[eligible, j])[:15]]  # the highest new-onset scores
        for index in top:
            e = explain_sample(clf, store, s, int(index), labels=[label], top_events=10_000)["labels"][0]
            codes = [ev["code"] for ev in e["events"]]  # all events, largest |attribution| first
            positive = [ev["code"] for ev in sorted(e["events"], key=lambda ev: -ev["attribution"])][:3]
            is_cause = np.isin(codes, causes)
            n, m = len(codes), int(is_cause.sum())
            if n < 3:
                continue
            hits.append(any(c in causes for c in positive))
            # chance that 3 events drawn at random include at least one cause
            chance.append(1 - np.prod([(n - m - i) / (n - i) for i in range(3)]))
    hits, chance = np.array(hits), np.array(chance)
    assert len(hits) >= 40
    assert hits.mean() > chance.mean() + 0.15, (hits.mean(), chance.mean())


def test_explain_command_prints_a_table_and_writes_json(trained):
    out, paths, store, _, te = trained
    subject = int(np.asarray(store.subject_ids)[te[0]])
    r = CliRunner().invoke(app, ["explain", "--model", str(out / "model"), "--meds", str(paths["meds"]),
                                 "--patient", str(subject), "--top", "2", "--out", str(out / "e.json")])
    assert r.exit_code == 0, r.output
    assert "attribution" in r.output and "without any event" in r.output
    e = json.loads((out / "e.json").read_text())
    assert len(e["labels"]) == 2 and all(lab["events"] for lab in e["labels"])
    # each label is named as train's table names it (the code alone was shown: '444814009')
    described = trained[3].label_vocab_.descriptions()
    for lab in e["labels"]:
        assert f"{lab['label']} ({described[lab['label']]}): p =" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["explain", "--model", str(out / "model"), "--meds", str(paths["meds"]),
                                 "--patient", str(subject), "--labels", "NOPE"])
    assert r.exit_code == 2 and "not in the model" in r.output
    r = CliRunner().invoke(app, ["explain", "--model", str(out / "model"), "--meds", str(paths["meds"]),
                                 "--patient", str(subject), "--time", "1990-01-01"])
    assert r.exit_code == 2 and "no prediction time" in r.output


def test_the_report_explains_chosen_patients_without_their_ids(trained):
    out, paths, store, _, te = trained
    subjects = [int(x) for x in np.asarray(store.subject_ids)[te[:2]]]
    from ehrdx.errors import show_identifiers

    show_identifiers(False)
    r = CliRunner().invoke(app, ["report", "--model", str(out / "model"), "--meds", str(paths["meds"]), "--out",
                                 str(out / "r.html"), "--explain-patients", ",".join(map(str, subjects))])
    assert r.exit_code == 0, r.output
    text = (out / "r.html").read_text()
    assert "id='examples'" in text and "Example 2" in text and "attribution" in text
    examples = text.split("id='examples'")[1]  # no calendar dates without --show-ids, days instead
    assert " d</td>" in examples and not re.search(r"\d{4}-\d\d-\d\d", examples)


def test_explain_shows_no_exact_dates_or_values_without_show_ids(trained):
    """README, Privacy: without --show-ids event times are days from the prediction time and values are
    rounded to 2 significant digits, in the terminal and in --out; --show-ids gives the exact ones."""
    from ehrdx.errors import show_identifiers
    from ehrdx.explain import round_significant

    out, paths, store, _, te = trained
    subject = int(np.asarray(store.subject_ids)[te[1]])
    args = ["explain", "--model", str(out / "model"), "--meds", str(paths["meds"]), "--patient", str(subject),
            "--top", "3", "--top-events", "50"]
    show_identifiers(False)
    r = CliRunner().invoke(app, [*args, "--out", str(out / "hidden.json")])
    assert r.exit_code == 0, r.output
    assert not re.search(r"\d{4}-\d\d-\d\d", r.output) and " d " in r.output
    hidden = json.loads((out / "hidden.json").read_text())
    try:
        r = CliRunner().invoke(app, ["--show-ids", *args, "--out", str(out / "exact.json")])
    finally:
        show_identifiers(False)
    assert r.exit_code == 0, r.output
    assert re.search(r"\d{4}-\d\d-\d\d", r.output)
    exact = json.loads((out / "exact.json").read_text())
    assert "prediction_time" not in hidden and "prediction_time" in exact
    assert "exact_dates_and_values" not in exact
    valued = 0
    for lab_h, lab_e in zip(hidden["labels"], exact["labels"]):
        assert len(lab_h["events"]) == len(lab_e["events"]) > 0
        for ev_h, ev_e in zip(lab_h["events"], lab_e["events"]):
            assert "time" not in ev_h and ev_h["code"] == ev_e["code"]
            assert ev_h["days_from_prediction"] == round((ev_e["time"] - exact["prediction_time"]) / 86400) <= 0
            if ev_e["value"] is not None:
                valued += 1
                assert ev_h["value"] == round_significant(ev_e["value"]) == float(f"{ev_e['value']:.2g}")
    assert valued > 0


def test_how_many_to_show_must_be_positive_and_unseen_codes_are_counted(tmp_path):
    """--top -1 explained every label but one (a slice [:-1]) and --top 0 none, exit 0; and events whose codes the
    model never saw, each read as the one unknown code, were explained with no word of it."""
    paths = write_longitudinal(generate_longitudinal(60, seed=1), tmp_path / "c")
    store = open_store(meds=paths["meds"])
    tr, va, te = patient_splits(store, paths["meds"], 0)
    clf = EventClassifier(model="gru", hidden=8, max_epochs=1, seed=0).fit(store, tr, va)
    s = clf.samples(store, te)
    for bad in ({"top_labels": -1}, {"top_labels": 0}, {"top_events": -2}):
        with pytest.raises(DataError, match="at least 1"):
            explain_sample(clf, store, s, 0, **bad)
    assert explain_sample(clf, store, s, 0)["events_with_unseen_codes"] == 0
    events = pl.read_parquet(sorted(paths["meds"].glob("data/**/*.parquet")))
    recoded = events.with_columns(code=pl.when(pl.col("code").str.starts_with("MEDS_")).then(pl.col("code"))
                                  .otherwise("OTHER//" + pl.col("code")))
    recoded.write_parquet(tmp_path / "recoded.parquet")
    other = open_store(events=tmp_path / "recoded.parquet")
    e = explain_sample(clf, other, clf.samples(other, np.arange(len(other)), require_labels=False), 0)
    assert e["events_with_unseen_codes"] == e["events_read"] > 0
    clf.save(tmp_path / "m")
    subject = str(int(np.asarray(other.subject_ids)[0]))
    r = CliRunner().invoke(app, ["explain", "--model", str(tmp_path / "m"), "--events",
                                 str(tmp_path / "recoded.parquet"), "--patient", subject])
    assert r.exit_code == 0 and "have a code not seen in training" in " ".join(r.output.split()), r.output
    r = CliRunner().invoke(app, ["explain", "--model", str(tmp_path / "m"), "--events",
                                 str(tmp_path / "recoded.parquet"), "--patient", subject, "--top", "-1"])
    assert r.exit_code == 2
