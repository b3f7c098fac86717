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


def test_settings_travel_with_the_model(store, tmp_path, monkeypatch):
    """save -> load -> get_params() equal, and `update --compare` retrains with the parent's settings."""
    from typer.testing import CliRunner

    from ehrdx.cli import app
    from ehrdx.estimator import EventClassifier
    from ehrdx.events_pipeline import patient_splits

    # An older directory (no saved params): its settings are read back from its model and train configs.
    older = ehrdx.load(GOLDEN / "gru_model").get_params()
    assert (older["model"], older["hidden"], older["layers"], older["max_epochs"], older["batch_size"]) == (
        "gru", 16, 1, 2, 64)
    tr, va, _ = patient_splits(store, GOLDEN / "meds", 0)
    clf = EventClassifier(model="transformer", labels=f"map:{GOLDEN / 'label_map.csv'}", hidden=16, layers=1,
                          heads=2, dropout=0.3, batch_size=16, max_epochs=1, min_code_count=2, lr=3e-3, seed=4)
    clf.fit(store, tr, va).save(tmp_path / "m")
    loaded = ehrdx.load(tmp_path / "m").get_params()
    # A label map is kept whole in the model (its file may be gone later), and its setting is the spec given
    assert loaded == clf.get_params()
    prefix = EventClassifier(model="gru", labels="prefix:DX//", hidden=8, max_epochs=1, seed=1).fit(store, tr, va)
    prefix.save(tmp_path / "p")
    assert ehrdx.load(tmp_path / "p").get_params() == prefix.get_params()

    seen = []
    fit = EventClassifier.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(self.get_params())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(EventClassifier, "fit", recording_fit)
    r = CliRunner().invoke(app, ["update", "--model", str(GOLDEN / "gru_model"), "--meds", str(GOLDEN / "meds"),
                                 "--out", str(tmp_path / "up"), "--epochs", "1", "--compare"])
    assert r.exit_code == 0, r.output
    (scratch,) = seen  # the "retrain from scratch" comparison: the parent's settings, with the label map
    assert scratch.pop("labels").spec == older.pop("labels")  # the model keeps (its file may be gone since)
    assert scratch == older


def test_a_second_update_keeps_the_first_in_its_lineage_history(store, tmp_path):
    from ehrdx.events_pipeline import patient_splits
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.update import update_model

    first = ehrdx.load(GOLDEN / "updated_model")
    label_map = tmp_path / "map.csv"
    label_map.write_text((GOLDEN / "label_map.csv").read_text() + "DX//J06.9,J06,Acute upper respiratory infection,,\n")
    second, _ = update_model(first, store, patient_splits(store, GOLDEN / "meds", 0), epochs=0,
                             selector=LabelSelector.parse(f"map:{label_map}"), init="mean")
    assert second.lineage_["added"] == ["J06"]
    assert [h["added"] for h in second.lineage_["history"]] == [first.lineage_["added"]]
    assert second.model_.head.block_sizes == [*first.model_.head.block_sizes, 1]
