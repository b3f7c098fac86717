"""Model directories saved by an earlier ehrdx (main at 6dd76b1, see fixtures/make_golden.py) still load,
predict the same probabilities and re-save: a table MLP, a GRU event model, and an updated GRU with lineage."""

from pathlib import Path

import numpy as np
import pytest

import ehrdx
from ehrdx.events_pipeline import open_store

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
# The same weights and inputs, but another machine's BLAS kernels may round differently: 1e-6 absolute.
ATOL = 1e-6


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(meds=GOLDEN / "meds", store_dir=tmp_path_factory.mktemp("golden") / "store")


def test_golden_table_model_loads_and_predicts_the_same(tmp_path):
    clf = ehrdx.load(GOLDEN / "table_model")
    proba = clf.predict_proba(GOLDEN / "table.csv")
    np.testing.assert_allclose(proba, np.load(GOLDEN / "table_proba.npy"), atol=ATOL, rtol=0)
    clf.save(tmp_path / "again")
    np.testing.assert_allclose(ehrdx.load(tmp_path / "again").predict_proba(GOLDEN / "table.csv"), proba,
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gru", "updated"])
def test_golden_event_models_load_and_predict_the_same(name, store, tmp_path):
    clf = ehrdx.load(GOLDEN / f"{name}_model")
    samples = clf.samples(store, None, require_labels=False)
    proba = clf.predict_samples(store, samples)
    np.testing.assert_allclose(proba, np.load(GOLDEN / f"{name}_proba.npy"), atol=ATOL, rtol=0)
    clf.save(tmp_path / "again")
    back = ehrdx.load(tmp_path / "again")
    assert back.labels_ == clf.labels_
    np.testing.assert_allclose(back.predict_samples(store, samples), proba, atol=ATOL, rtol=0)


def test_golden_updated_model_keeps_its_lineage():
    clf = ehrdx.load(GOLDEN / "updated_model")
    old = ehrdx.load(GOLDEN / "gru_model")
    assert clf.labels_[: len(old.labels_)] == old.labels_ and len(clf.labels_) > len(old.labels_)
    assert clf.lineage_["added"] == clf.labels_[len(old.labels_):]
