"""The one estimator: scikit-learn's contract, one set of settings for tables and event streams, and models
that come from the registry (a new one is one registration, here made in the test)."""

import numpy as np
import pytest
from sklearn.base import clone

import ehrdx
from ehrdx.data.batches import MATRIX
from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.data.table import table_from_frame
from ehrdx.errors import DataError, ModelError
from ehrdx.estimator import EHRClassifier, EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.models import registry


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    out = tmp_path_factory.mktemp("est")
    paths = write_longitudinal(generate_longitudinal(300, seed=5), out)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    return paths, store, patient_splits(store, paths["meds"], 0)


@pytest.fixture(scope="module")
def table(small_cohort):
    return table_from_frame(small_cohort.table.head(600))


def test_init_stores_settings_unchanged_and_clone_gives_an_unfitted_copy(events):
    paths, store, (tr, va, _) = events
    clf = EHRClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=8, max_epochs=1, seed=3)
    assert clf.layers is None and clf.batch_size is None and clf.patience is None  # defaults resolve in fit
    clf.fit(store, tr, va)
    assert clf.layers is None and clf.batch_size is None  # still as given
    assert (clf.layers_, clf.train_config_.batch_size, clf.train_config_.patience) == (1, 64, 3)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "model_")
    with pytest.raises(ModelError, match="not fitted"):
        copy.predict_samples(store, clf.samples(store, va))
    copy.set_params(hidden=4, model="transformer")
    assert (copy.hidden, copy.model) == (4, "transformer")
    with pytest.raises(ValueError):
        copy.set_params(depth=2)  # not a setting: --depth is only the CLI's old name of --layers
    assert EventClassifier is EHRClassifier


def test_every_method_but_fit_checks_that_it_is_fitted(events, table, tmp_path):
    _paths, store, (_tr, va, _te) = events
    clf = EHRClassifier()
    calls = [lambda: clf.samples(store, va), lambda: clf.predict_proba(table), lambda: clf.evaluate(table),
             lambda: clf.save(tmp_path / "m"), lambda: clf.to("cpu"), lambda: clf.labels_,
             lambda: clf.dataset(store, None), lambda: clf.predict(table)]
    for call in calls:
        with pytest.raises(ModelError, match="not fitted"):
            call()


def test_one_name_per_setting_for_tables_and_events(table, events):
    paths, store, (tr, va, _) = events
    t = EHRClassifier(hidden=8, layers=1, max_epochs=1, seed=0).fit(table)
    e = EHRClassifier(hidden=8, layers=1, max_epochs=1, seed=0, model="mlp",
                      labels=f"map:{paths['label_map']}").fit(store, tr, va)
    assert t.model_.config.depth == e.model_.config.depth == 1
    assert t.model_name_ == e.model_name_ == "mlp" and t.source_kind_ == "table" and e.source_kind_ == "events"
    # Settings that only mean something for event streams are refused for a table, naming them.
    with pytest.raises(ModelError, match="task, new_onset apply to event streams only"):
        EHRClassifier(task="window:365d", new_onset=True).fit(table)
    with pytest.raises(ModelError, match="learns from event streams .* only"):
        EHRClassifier(model="gru").fit(table)


def test_a_table_can_use_the_logistic_model_and_it_round_trips(table, tmp_path):
    clf = EHRClassifier(model="logistic", seed=0).fit(table)
    proba = clf.predict_proba(table)
    assert proba.shape == (len(table), len(clf.labels_))
    assert clf.evaluate(table)["macro_auroc"] > 0.6
    clf.save(tmp_path / "m")
    back = ehrdx.load(tmp_path / "m")
    assert back.model_name_ == "logistic" and back.get_params() == clf.get_params()
    # The same weights on the same rows in one process: the same numbers (to rounding of float64 matmuls).
    np.testing.assert_allclose(back.predict_proba(table), proba, rtol=0, atol=1e-12)


class _Prevalence:
    """The least a model can be: each label's training prevalence among its known samples."""

    def __init__(self, n_labels: int) -> None:
        self.logit = np.zeros(n_labels)
        self.config = {"kind": "prevalence", "n_labels": n_labels}

    def fit_sets(self, train, val=None, seed=0):
        p = (train.y * train.y_mask).sum(0) / np.maximum(train.y_mask.sum(0), 1)
        p = np.clip(p, 1e-3, 1 - 1e-3)
        self.logit = np.log(p / (1 - p))
        return self

    def predict_logits(self, dataset):
        return np.tile(self.logit, (len(dataset), 1))


def test_a_model_registered_in_one_place_trains_saves_and_loads(events, tmp_path):
    import torch

    def save(model):
        return dict(model.config), {"logit": torch.from_numpy(model.logit)}, {}

    def load(config, state, files):
        m = _Prevalence(config["n_labels"])
        m.logit = state["logit"].numpy()
        return m

    registry.register_model(registry.ModelKind("prevalence", MATRIX, (registry.EVENTS,), "label prevalence",
                                               lambda ds, n, params: _Prevalence(n), save, load))
    try:
        assert "prevalence" in registry.model_names("events") and "prevalence" not in registry.model_names("table")
        paths, store, (tr, va, te) = events
        clf = EHRClassifier(model="prevalence", labels=f"map:{paths['label_map']}").fit(store, tr, va)
        s = clf.samples(store, te)
        p = clf.predict_samples(store, s)
        assert np.ptp(p, axis=0).max() < 1e-12  # the same for every sample
        clf.save(tmp_path / "m")
        back = ehrdx.load(tmp_path / "m")
        np.testing.assert_array_equal(back.predict_samples(store, s), p)  # same numbers through one exp
    finally:
        registry._MODELS.pop("prevalence", None)


def test_training_rows_alone_mean_no_validation(table):
    rows = np.arange(400)
    clf = EHRClassifier(hidden=8, layers=1, max_epochs=2, seed=0).fit(table, rows)
    assert clf.fit_summary_["train_patients"] == 400 and clf.fit_summary_["val_patients"] == 0
    assert np.all(clf.thresholds_ == 0.5) and clf.history_.epochs_run == 2  # nothing to stop early on


def test_a_given_task_and_table_roles_travel_with_the_model(events, small_cohort, tmp_path):
    from ehrdx.data.table import TableSchema
    from ehrdx.tasks.task import TaskSpec

    paths, store, (tr, va, _) = events
    task = TaskSpec.parse("window:365d", new_onset=True, censor=False)
    clf = EHRClassifier(model="logistic", task=task, labels=f"map:{paths['label_map']}").fit(store, tr, va)
    clf.save(tmp_path / "e")
    assert ehrdx.load(tmp_path / "e").task_ == task
    # a separate validation store is refused (validation patients are rows of the same store)
    with pytest.raises(DataError, match="separate validation source"):
        EHRClassifier(model="logistic").fit(store, val=store)
    frame = small_cohort.table.head(300)
    schema = TableSchema(id_column="patient_id", label_column="diseases")
    t = EHRClassifier(model="logistic", schema=schema).fit(frame)
    t.save(tmp_path / "t")
    back = ehrdx.load(tmp_path / "t")
    assert back.get_params()["schema"] == schema
    assert clone(back).fit(frame).labels_ == t.labels_


def test_errors_about_event_data_name_the_data_not_the_temporary_store(tmp_path):
    # every patient with one visit: no next visit, so no training sample. The error named the store's temporary
    # folder (/tmp/ehrdx_store_...), which the user never gave
    lines = ["subject_id,time,code"] + [f"{i},2020-01-0{1 + i % 5},DX//A" for i in range(12)]
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n")
    store = open_store(events=tmp_path / "events.csv")
    tr, va, _ = patient_splits(store, None, 0)
    with pytest.raises(DataError, match="no training samples with a known label") as err:
        EHRClassifier(model="gbm").fit(store, tr, va)
    assert str(err.value).startswith(f"{tmp_path / 'events.csv'}: ") and "ehrdx_store_" not in str(err.value)
    assert "window:365d" in str(err.value)
    # a MEDS dataset is named by its folder
    meds = write_longitudinal(generate_longitudinal(20, seed=1), tmp_path / "c")["meds"]
    assert EHRClassifier().source(open_store(meds=meds)).name == str(meds)


def test_a_meds_dataset_of_one_shard_or_one_split_is_named_by_its_folder(tmp_path):
    # the shards' common path was taken as the name: a dataset of one shard (data/train/0.parquet) was named by it
    import shutil

    meds = write_longitudinal(generate_longitudinal(20, seed=1), tmp_path / "c")["meds"]
    shutil.rmtree(meds / "data" / "held_out")
    shutil.rmtree(meds / "data" / "tuning")
    assert EHRClassifier().source(open_store(meds=meds)).name == str(meds)
