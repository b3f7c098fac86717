"""Leakage guards: test patients cannot reach a trained model, and features never come from the future.

The property: whatever is changed about the test (held-out) patients (their events removed, shifted,
given wild values, new codes or new labels, or more test patients added), training on the same
training and validation patients gives byte-identical model files.
"""

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehrdx.data.meds import write_meds
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import LeakageError
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.tasks.task import check_features_before

MODEL_FILES = ("config.json", "labels.json", "preprocessing.json", "task.json", "model.safetensors")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("leak")
    paths = write_longitudinal(generate_longitudinal(500, seed=21), out / "c")
    events = pl.read_parquet(paths["meds"] / "data" / "*" / "*.parquet")
    splits = pl.read_parquet(paths["meds"] / "metadata" / "subject_splits.parquet")
    model_dir = _train(paths["meds"], paths["label_map"], out / "store0", out / "model0")
    return out, paths, events, splits, {name: (model_dir / name).read_bytes() for name in MODEL_FILES}


def _train(meds, label_map, store_dir, model_dir, model="gru"):
    store = open_store(meds=meds, store_dir=store_dir)
    tr, va, _ = patient_splits(store, meds, 0)
    clf = EventClassifier(model=model, labels=f"map:{label_map}", hidden=16, max_epochs=2, seed=0)
    clf.fit(store, tr, va)
    return clf.save(model_dir)


def _change(events: pl.DataFrame, test_ids: np.ndarray, kind: str, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    who = pl.col("subject_id").is_in(pl.Series(test_ids).implode())
    if kind == "drop":
        return events.filter(~who | pl.col("code").is_in(["MEDS_BIRTH"]))
    if kind == "shift":
        days = int(rng.integers(-400, 400))
        return events.with_columns(pl.when(who & pl.col("time").is_not_null())
                                   .then(pl.col("time") + pl.duration(days=days)).otherwise(pl.col("time"))
                                   .alias("time"))
    if kind == "values":
        return events.with_columns(pl.when(who & pl.col("numeric_value").is_not_null())
                                   .then(pl.col("numeric_value") * float(rng.uniform(-50, 50)))
                                   .otherwise(pl.col("numeric_value")).alias("numeric_value"))
    # new codes (a new lab, a new diagnosis under an existing label's prefix, a label never seen) for
    # some test patients, and new test patients
    sub = events.filter(who).sample(fraction=0.3, seed=seed)
    extra = sub.with_columns(pl.Series("code", rng.choice(["LAB//NEW_ASSAY", "DX//E11.65", "DX//Z99.9"], len(sub))),
                             pl.Series("numeric_value", rng.normal(0, 1e6, len(sub)), dtype=pl.Float32))
    newcomers = events.filter(who).with_columns(pl.col("subject_id") + 10_000_000)
    return pl.concat([events, extra, newcomers])


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["drop", "shift", "values", "codes"]), seed=st.integers(0, 2**16))
def test_changing_test_patients_leaves_the_model_files_byte_identical(base, kind, seed):
    out, paths, events, splits, expected = base
    test_ids = splits.filter(pl.col("split") == "held_out").get_column("subject_id").to_numpy()
    changed = _change(events, test_ids, kind, seed)
    new_ids = changed.filter(pl.col("subject_id") > 10_000_000).get_column("subject_id").unique()
    new_splits = pl.concat([splits, pl.DataFrame({"subject_id": new_ids, "split": ["held_out"] * len(new_ids)})])
    root = out / f"changed_{kind}_{seed}"
    write_meds(root / "meds", changed, splits=new_splits)
    model_dir = _train(root / "meds", paths["label_map"], root / "store", root / "model")
    for name in MODEL_FILES:
        assert (model_dir / name).read_bytes() == expected[name], f"{name} changed when only test patients did ({kind})"


def test_gradient_boosting_learns_nothing_from_test_patients(base):
    """The gbm model's files (features fitted on training patients, boosters early-stopped on tuning patients)
    are byte-identical when only test patients change."""
    out, paths, events, splits, _ = base
    test_ids = splits.filter(pl.col("split") == "held_out").get_column("subject_id").to_numpy()
    files = ("config.json", "gbm.json", "preprocessing.json", "labels.json")
    first = _train(paths["meds"], paths["label_map"], out / "gbm_store0", out / "gbm0", model="gbm")
    for kind in ("drop", "values", "codes"):
        changed = _change(events, test_ids, kind, 1)
        new_ids = changed.filter(pl.col("subject_id") > 10_000_000).get_column("subject_id").unique()
        new_splits = pl.concat([splits, pl.DataFrame({"subject_id": new_ids, "split": ["held_out"] * len(new_ids)})])
        root = out / f"gbm_changed_{kind}"
        write_meds(root / "meds", changed, splits=new_splits)
        model_dir = _train(root / "meds", paths["label_map"], root / "store", root / "model", model="gbm")
        for name in files:
            assert (model_dir / name).read_bytes() == (first / name).read_bytes(), (name, kind)


def test_the_guard_stops_features_from_after_the_prediction_time(base):
    out, paths, *_ = base
    store = open_store(meds=paths["meds"], store_dir=out / "store_guard")
    rows = np.array([0, 1, 2])
    offsets = np.asarray(store.offsets)
    times = np.asarray(store.times)
    ends = offsets[rows + 1]
    ok_time = times[ends - 1]
    check_features_before(store, rows, ok_time, ends)  # every event, at the last event's time: fine
    with pytest.raises(LeakageError, match="after their prediction time"):
        check_features_before(store, rows, ok_time - 1, ends)
    with pytest.raises(LeakageError, match="another patient"):
        check_features_before(store, rows, ok_time, ends + 1)
