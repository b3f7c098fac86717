"""ehrdx reads a slice of data no one on the team wrote (tests/fixtures/external: 30 clinosim patients
converted to MEDS by benchmarks/external), and the benchmark's bootstrap metrics agree with
scikit-learn's."""

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ehrdx.data.store import STATIC_TIME
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from external.bootstrap import auroc_auprc, patient_weights
from external.meds_io import check_invariants

FIXTURE = Path(__file__).parent / "fixtures" / "external" / "clinosim"


@pytest.fixture(scope="module")
def events():
    return pl.concat([pl.read_parquet(f) for f in sorted((FIXTURE / "data").glob("*/*.parquet"))])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(meds=FIXTURE, store_dir=tmp_path_factory.mktemp("ext") / "store", visit_gap_seconds=86400)


def test_the_conversion_keeps_the_meds_types_and_its_invariants(events):
    schema = pq.read_schema(next((FIXTURE / "data").glob("train/*.parquet")))
    assert [str(schema.field(c).type) for c in ("subject_id", "time", "code", "numeric_value")] == [
        "int64", "timestamp[us]", "string", "float"]
    sizes = check_invariants(events)  # times sorted per patient, nothing after death, no empty code
    assert sizes["patients"] == 30 and sizes["numeric_events"] > 1000
    assert events.filter(pl.col("code") == "MEDS_DEATH").height >= 1  # the slice keeps patients who died
    codes = pl.read_parquet(FIXTURE / "metadata" / "codes.parquet").get_column("code")
    assert set(events.get_column("code").unique()) <= set(codes)


def test_the_store_holds_every_event_in_time_order(store, events):
    assert store.meta["patients"] == 30
    assert store.meta["events"] + sum(v for k, v in store.counts.items() if k == "duplicate_events") == events.height
    times, offsets = np.asarray(store.times), np.asarray(store.offsets)
    for p in range(len(store)):
        t = times[offsets[p]:offsets[p + 1]]
        t = t[t != STATIC_TIME]
        assert (np.diff(t) >= 0).all()


def test_a_logistic_model_fits_the_next_year_task_on_the_fixture(store, tmp_path):
    cands = pl.read_parquet(FIXTURE / "metadata" / "label_candidates.parquet")
    # each candidate code its own label (ICD10CM//E11.9): not ICD-shaped, so the fit does not load the
    # ICD-10-CM table (seconds), which the benchmark's 3-character labels (E11) do
    (tmp_path / "labels.csv").write_text("code,label\n" + "".join(f"{c},{c}\n" for c in cands.get_column("code")))
    tr, va, te = patient_splits(store, FIXTURE, 0)
    splits = pl.read_parquet(FIXTURE / "metadata" / "subject_splits.parquet")  # the converter's split
    ids = np.asarray(store.subject_ids)
    for rows, name in ((tr, "train"), (va, "tuning"), (te, "held_out")):
        assert set(ids[rows]) == set(splits.filter(pl.col("split") == name).get_column("subject_id"))
    clf = EventClassifier(model="logistic", task="window:365d", labels=f"map:{tmp_path / 'labels.csv'}")
    clf.fit(store, tr, va)
    samples = clf.samples(store, te)
    proba = clf.predict_samples(store, samples)
    assert len(clf.labels_) >= 5 and proba.shape == (len(samples), len(clf.labels_)) and len(samples) > 20
    assert ((proba > 0) & (proba < 1)).all()
    # censoring: windows that run past a patient's last event leave the negatives unknown
    assert samples.counts.get("censored_samples", 0) > 0 and not samples.mask.all()


def test_bootstrap_metrics_with_unit_weights_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.2
    score = np.round(rng.random(300) + 0.5 * y, 2)  # rounded: ties, which both must share one point
    auroc, auprc = auroc_auprc(y, score, np.ones((1, 300)))
    assert auroc[0] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert auprc[0] == pytest.approx(average_precision_score(y, score), abs=1e-12)


def test_a_patient_drawn_twice_weighs_as_its_rows_repeated():
    rng = np.random.default_rng(1)
    rows = np.repeat(np.arange(40), 3)  # 40 patients, 3 prediction times each
    y = rng.random(120) < 0.3
    score = rng.random(120) + 0.3 * y
    w = patient_weights(rows, 5, seed=0)
    assert w.shape == (6, 120) and (w[0] == 1).all() and (w[1:].reshape(5, 40, 3).sum((1, 2)) == 120).all()
    auroc, auprc = auroc_auprc(y, score, w)
    for d in range(1, 6):
        rep = np.repeat(np.arange(120), w[d].astype(int))
        assert auroc[d] == pytest.approx(roc_auc_score(y[rep], score[rep]), abs=1e-12)
        assert auprc[d] == pytest.approx(average_precision_score(y[rep], score[rep]), abs=1e-12)


def test_protocol_prepares_the_slice(tmp_path):
    """The benchmark's protocol runs on the slice: the most frequent labels (by training patients), in name
    order, the same columns in every split, positives only where the label is known."""
    from external.protocol import prepare

    p = prepare("clinosim", FIXTURE, tmp_path, n_labels=3, min_patients=1, years=10, times_mode="visits")
    assert len(p.labels) == 3 and p.labels == sorted(p.labels)
    for part, s in p.samples.items():
        assert s.y.shape == (len(s), 3), part
        assert not ((s.y > 0.5) & ~s.mask).any(), part
        assert np.isin(s.row, p.rows[part]).all(), part
    train = p.samples["train"]
    assert (((train.y > 0.5) & train.mask).sum(0) > 0).all()
