"""Numerical edge cases: no NaN loss, no crash, and a clear report, on the smallest awkward inputs."""

import math

import numpy as np
import polars as pl
import pytest
import torch

from ehrdx.data.meds import normalise_events
from ehrdx.data.store import build_store
from ehrdx.data.table import table_from_frame
from ehrdx.errors import DataError
from ehrdx.estimator import EHRClassifier, EventClassifier
from ehrdx.train.loop import masked_bce_with_logits


def test_an_all_masked_batch_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    s, n = masked_bce_with_logits(logits, torch.ones(4, 3), torch.zeros(4, 3, dtype=torch.bool))
    loss = s / n.clamp(min=1)
    loss.backward()
    assert float(loss) == 0.0 and int(n) == 0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    big = torch.tensor([[1e4, -1e4]], requires_grad=True)  # saturated logits stay finite
    s, n = masked_bce_with_logits(big, torch.tensor([[0.0, 1.0]]), torch.ones(1, 2, dtype=torch.bool))
    s.backward()
    assert math.isfinite(float(s)) and torch.isfinite(big.grad).all()


def _table(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    diseases = np.where(rng.random(n) < 0.4, "D1", "").astype(object)
    diseases[0] = "D1;ONCE"  # a label with a single positive
    return pl.DataFrame({"patient_id": np.arange(n), "age": rng.normal(50, 10, n), "constant": np.full(n, 7.0),
                         "sex": rng.choice(["F", "M"], n), "diseases": diseases})


@pytest.mark.parametrize("batch_size", [1, 3])
def test_table_with_a_single_positive_label_constant_feature_and_tiny_batches(batch_size):
    table = table_from_frame(_table(40))
    clf = EHRClassifier(hidden=8, layers=1, max_epochs=3, batch_size=batch_size, seed=0).fit(table)
    assert all(math.isfinite(x) for x in clf.history_.train_loss + clf.history_.val_loss)
    p = clf.predict_proba(table)
    assert np.isfinite(p).all() and p.shape == (40, len(clf.labels_))
    report = clf.evaluate(table)
    assert report["n_samples"] == 40
    if "ONCE" in clf.labels_:  # its one patient was drawn into training: scored like any label
        once = next(r for r in report["per_label"] if r["label"] == "ONCE")
        assert once["positives"] == 1 and math.isfinite(once["auroc"])
    else:  # drawn into validation: not learnable, and the evaluation says so
        assert report["summary"]["labels_not_in_model"] == {"ONCE": 1}


def _events(rows):
    frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8,
                                       "numeric_value": pl.Float64}, orient="row")
    return normalise_events(frame, "edge.csv")


def test_sequences_of_one_visit_give_a_clear_error_for_next_visit_and_train_with_a_window(tmp_path):
    rows = []
    for s in range(30):
        rows += [(s, "2020-01-01", "DX//E11" if s % 3 == 0 else "DX//I10", None), (s, "2020-01-01", "LAB//A", 1.0)]
    store = build_store([_events(rows)], tmp_path / "one")
    tr, va = np.arange(20), np.arange(20, 30)
    with pytest.raises(DataError, match="single visit"):
        EventClassifier(model="gru", hidden=8, max_epochs=1).fit(store, tr, va)
    # a window task over the same single visits: prediction at the visit, labels after it (none): masked,
    # never counted as negatives, so again nothing to learn, and said so
    with pytest.raises(DataError, match="no training samples"):
        EventClassifier(model="gru", task="window:30d", hidden=8, max_epochs=1).fit(store, tr, va)


def test_a_constant_lab_and_two_visit_patients_train_without_nan(tmp_path):
    rows = []
    for s in range(40):
        rows += [(s, "2020-01-01", "LAB//A", 5.0), (s, "2020-01-01", "DX//I10", None),
                 (s, "2020-06-01", "LAB//A", 5.0), (s, "2020-06-01", "DX//E11" if s % 2 else "DX//I10", None)]
    store = build_store([_events(rows)], tmp_path / "two")
    for model in ("gru", "transformer", "mlp", "logistic"):
        clf = EventClassifier(model=model, hidden=8, max_epochs=2, batch_size=1)
        clf.fit(store, np.arange(30), np.arange(30, 40))
        assert all(math.isfinite(x) for x in clf.history_.train_loss), model
        p = clf.predict_samples(store, clf.samples(store, np.arange(30, 40), require_labels=False))
        assert np.isfinite(p).all(), model
