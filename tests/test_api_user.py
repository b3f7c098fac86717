"""The Python API as a new user meets it: wrong arguments get ehrdx's own errors that say what is wrong and how
to fix it, never a traceback from deep inside numpy, polars or torch, and never a silently different result."""

import numpy as np
import polars as pl
import pytest

from ehrdx import EHRClassifier, explain_sample, open_store, patient_splits, update_model
from ehrdx.data.synth import generate_cohort
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import DataError, ModelError


@pytest.fixture(scope="module")
def table():
    return generate_cohort(200, seed=1).table


@pytest.fixture(scope="module")
def table_model(table):
    return EHRClassifier(model="logistic", seed=0).fit(table)


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    out = tmp_path_factory.mktemp("api_user")
    paths = write_longitudinal(generate_longitudinal(120, seed=5), out)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    return paths, store, patient_splits(store, paths["meds"], 0)


@pytest.fixture(scope="module")
def event_model(events):
    paths, store, (tr, va, _) = events
    return EHRClassifier(model="logistic", labels=f"map:{paths['label_map']}", seed=0).fit(store, tr, va)


@pytest.mark.parametrize("rows, said", [
    (np.array([0, 10_000]), "1 row number.* outside 0 to"),
    (np.array([-1, 2]), "1 row number.* outside 0 to"),
    (np.array([0.0, 1.5]), "whole numbers"),
    ("mask", "(?s)boolean mask.*fix: give np.flatnonzero"),
    (np.array([[0, 1]]), "one-dimensional"),
])
def test_patient_rows_that_are_not_row_numbers_are_refused(rows, said, events, event_model, table, table_model):
    # A boolean mask was read as rows 0 and 1 over and over, a fraction cut to a whole number and a negative
    # row counted from the end: predictions for other patients than asked, without a word.
    _paths, store, (_tr, va, _te) = events

    def given(n):
        return np.ones(n, dtype=bool) if isinstance(rows, str) else rows

    for data, clf in ((store, event_model), (table, table_model)):
        with pytest.raises(DataError, match=said):
            clf.predict_proba(data, given(len(clf.source(data))))
        with pytest.raises(DataError, match=said):
            clf.evaluate(data, given(len(clf.source(data))))
    with pytest.raises(DataError, match=said):
        EHRClassifier(model="logistic", labels=event_model.labels).fit(store, given(len(store)), va)
    with pytest.raises(DataError, match=said):
        EHRClassifier(model="logistic").fit(table, given(len(table)))


def test_row_numbers_as_a_list_or_any_integer_type_are_fine(events, event_model):
    _paths, store, (_tr, _va, te) = events
    expected = event_model.predict_proba(store, te)
    assert np.array_equal(event_model.predict_proba(store, [int(r) for r in te]), expected)
    assert np.array_equal(event_model.predict_proba(store, te.astype(np.int32)), expected)
    assert event_model.predict_proba(store, []).shape == (0, len(event_model.labels_))


def test_a_table_given_as_arrow_a_lazy_frame_or_a_dict_of_columns_is_read_like_the_polars_frame(table, table_model):
    # Anything but a polars DataFrame or a path ended in "expected str, bytes or os.PathLike object".
    expected = table_model.predict_proba(table)
    for given in (table.to_arrow(), table.lazy(), table.to_dict(as_series=False)):
        assert np.array_equal(table_model.predict_proba(given), expected)
    fitted = EHRClassifier(model="logistic", seed=0).fit(table.to_arrow())
    assert np.array_equal(fitted.predict_proba(table), expected)


@pytest.mark.parametrize("given", [np.zeros((5, 3)), [[1, 2], [3, 4]], 42])
def test_a_table_without_column_names_is_refused_naming_what_is_accepted(given, table_model):
    for call in (lambda: EHRClassifier().fit(given), lambda: table_model.predict_proba(given)):
        with pytest.raises(DataError, match="(?s)not a patient table.*polars or pandas DataFrame"):
            call()


def test_a_pandas_table_is_read_with_its_index_as_a_column_and_nan_as_missing(table, table_model):
    pd = pytest.importorskip("pandas")
    frame = table.to_pandas().set_index("patient_id")  # ids in the index, as pandas users keep them
    assert isinstance(frame, pd.DataFrame)
    assert np.array_equal(table_model.predict_proba(frame), table_model.predict_proba(table))
    frame.iloc[0, frame.columns.get_loc("age")] = float("nan")  # pandas' missing value, not a broken export
    assert table_model.predict_proba(frame).shape == (len(table), len(table_model.labels_))


@pytest.mark.parametrize("setting, value", [
    ("hidden", -1), ("hidden", 0), ("hidden", "16"), ("hidden", None), ("layers", 0), ("heads", 0),
    ("batch_size", 0), ("max_epochs", 2.5), ("max_epochs", -1), ("patience", -2), ("lr", "0.01"), ("lr", -1.0),
    ("weight_decay", -1.0), ("dropout", 1.5), ("val_fraction", 1.0), ("val_fraction", 2.0), ("seed", None),
    ("seed", -1), ("seed", 1.5), ("min_code_count", -3), ("min_steps", True),
])
def test_a_setting_out_of_range_is_refused_by_fit_naming_it(setting, value, table):
    # They reached torch ("Trying to create tensor with negative dimension", "'<=' not supported between
    # 'float' and 'str'", a ZeroDivisionError) or numpy ("repeats may not contain negative values"), or were
    # silently replaced by the default (batch_size 0).
    clf = EHRClassifier(max_epochs=1).set_params(**{setting: value})
    with pytest.raises(ModelError, match=f"{setting}={value!r}"):
        clf.fit(table)
    assert not hasattr(clf, "model_")


def test_update_model_refuses_what_it_cannot_update_before_any_work(events, event_model, table_model):
    # An unfitted model and a table model ended in AttributeError ('label_vocab_', "'NoneType' object has no
    # attribute 'labels_of'"), an unknown init in a ValueError once the new labels' rows were being started.
    _paths, store, splits = events
    with pytest.raises(ModelError, match="not fitted"):
        update_model(EHRClassifier(), store, splits)
    with pytest.raises(ModelError, match="(?s)learned from a patient table.*fix: retrain"):
        update_model(table_model, store, splits)
    with pytest.raises(ModelError, match="unknown init 'foo'.*choose from auto, parent"):
        update_model(event_model, store, splits, init="foo")
    with pytest.raises(DataError, match="boolean mask"):
        update_model(event_model, store, (np.ones(len(store), bool), splits[1], splits[2]))


def test_update_model_takes_one_new_label_given_as_a_string_as_that_label(events, event_model):
    # new_labels="XYZ" was read letter by letter: "label(s) X, Y, Z never recorded".
    _paths, store, splits = events
    with pytest.raises(DataError, match="label\\(s\\) XYZ are not among the labels of the label map"):
        update_model(event_model, store, splits, new_labels="XYZ")


@pytest.fixture(scope="module")
def gru_model(events):
    paths, store, (tr, va, _) = events
    return EHRClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=8, max_epochs=1, seed=0).fit(
        store, tr, va)


def test_explain_sample_names_what_is_wrong_with_its_arguments(events, gru_model):
    # Each was an AttributeError or IndexError from inside explain.py.
    _paths, store, (_tr, _va, te) = events
    samples = gru_model.samples(store, te)
    with pytest.raises(ModelError, match="not fitted"):
        explain_sample(EHRClassifier(), store, samples, 0)
    with pytest.raises(DataError, match="(?s)samples must be.*fix: give clf.samples\\(store, rows\\)"):
        explain_sample(gru_model, store, te, 0)
    for index in (len(samples), -1, 1.0):
        with pytest.raises(DataError, match=f"sample index {index!r} .*0 to {len(samples) - 1}"):
            explain_sample(gru_model, store, samples, index)


def test_explain_sample_takes_one_label_given_as_a_string_as_that_label(events, gru_model):
    _paths, store, (_tr, _va, te) = events
    samples = gru_model.samples(store, te)
    label = gru_model.labels_[0]
    one = explain_sample(gru_model, store, samples, 0, labels=label)  # was read letter by letter
    assert [entry["label"] for entry in one["labels"]] == [label]


def test_predict_takes_rows_as_predict_proba_does_and_a_threshold_by_name(events, event_model, table, table_model):
    # predict(store, rows) read the rows as a threshold: "could not broadcast input array from shape (n,)".
    _paths, store, (_tr, _va, te) = events
    sets = event_model.predict(store, te)
    assert np.array_equal(sets, event_model.predict_proba(store, te) >= event_model.thresholds_[None, :])
    at = event_model.predict(store, te, threshold=0.3)
    assert np.array_equal(at, event_model.predict_proba(store, te) >= 0.3)
    assert table_model.predict(table).shape == (len(table), len(table_model.labels_))
    for threshold in (2.0, -0.1, "0.5"):  # 2.0 made every prediction negative without a word
        with pytest.raises(ModelError, match="threshold .* probability from 0 to 1"):
            event_model.predict(store, te, threshold=threshold)


def test_changing_context_after_fit_changes_neither_predictions_nor_the_saved_model(events, tmp_path):
    """Prediction read the `context` setting, not what the model was fitted with: set_params(context=2) after
    fit changed probabilities by up to 0.19 without a word, and saving wrote the new value. A fitted model reads
    `context_`, set at fit."""
    import ehrdx

    paths, store, (tr, va, te) = events
    clf = EHRClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=16, max_epochs=1, seed=0)
    clf.fit(store, tr, va)
    before = clf.predict_proba(store, te)
    clf.set_params(context=2)
    assert clf.context_ is None
    np.testing.assert_array_equal(clf.predict_proba(store, te), before)  # exact: the same model, inputs and threads
    loaded = ehrdx.load(clf.save(tmp_path / "m"))
    assert loaded.context_ is None and loaded.context is None
    np.testing.assert_allclose(loaded.predict_proba(store, te), before, rtol=1e-6, atol=1e-7)
    with pytest.raises(DataError):  # a refit that fails on its input leaves the fitted model as it was
        clf.fit(store, np.array([10**9]), va)
    assert clf.context_ is None
    np.testing.assert_array_equal(clf.predict_proba(store, te), before)  # exact: the same model, inputs and threads
    refit = EHRClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=16, max_epochs=1, seed=0,
                          context=2).fit(store, tr, va)
    assert refit.context_ == 2  # a context given before fit is the one read


def test_a_folder_given_to_fit_or_predict_says_to_open_it_as_a_store(tmp_path, table_model):
    """A MEDS folder passed where a patient table is read used to fail with "unsupported file type ''"."""
    (tmp_path / "data").mkdir()
    for call in (lambda: EHRClassifier(model="gru").fit(str(tmp_path / "data")),
                 lambda: table_model.predict_proba(tmp_path / "data")):
        with pytest.raises(DataError, match="a folder, not a patient table") as err:
            call()
        assert "open_store(meds=" in str(err.value) and str(tmp_path / "data") in str(err.value)


def test_an_event_model_given_an_events_file_says_to_open_it_as_a_store(events, event_model, tmp_path):
    # the file was read as a patient table and refused for want of a label column, "fix: ... with --label-col"
    paths, store, _ = events
    events_file = tmp_path / "events.parquet"
    pl.read_parquet(sorted(paths["meds"].glob("data/**/*.parquet"))).write_parquet(events_file)
    for given in (events_file, str(events_file), pl.read_parquet(events_file)):
        with pytest.raises(DataError, match="learned from event streams") as err:
            event_model.predict_proba(given)
        assert "open_store(events=FILE)" in str(err.value) and "label-col" not in str(err.value)
    assert event_model.predict_proba(store).shape[1] == len(event_model.labels_)  # the store, as the fix says
