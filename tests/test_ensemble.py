"""`--model auto`, the default for event streams: candidates fitted, weights per label chosen on tuning patients
only, every candidate and the choice reported, saved, loaded, updated and explained (its GRU member)."""

import numpy as np
import pytest

import ehrdx
from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.errors import ModelError
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.pipeline import train_and_evaluate
from ehrdx.train.ensemble import choose_weights
from ehrdx.update import update_model


def test_weights_follow_the_member_that_ranks_each_label_best():
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    noise = rng.normal(0, 1, (2, n, 3))
    good, bad = y + 0.3 * noise[0], rng.random((n, 3))
    # label 0: member 0 knows it; label 1: member 1 knows it; label 2: each member sees half of the signal
    half = y[:, 2] * (rng.random(n) < 0.5)
    p = np.stack([np.stack([good[:, 0], bad[:, 1], half + 0.2 * noise[0, :, 2]], 1),
                  np.stack([bad[:, 0], good[:, 1], (y[:, 2] - half) + 0.2 * noise[1, :, 2]], 1)])
    mask = np.ones_like(y, dtype=bool)
    weights, report = choose_weights(p, y, mask)
    # the informative member dominates (a little of the other may be mixed in where it helps on tuning)
    assert weights[0, 0] >= 0.8 and weights[1, 1] >= 0.8
    assert 0.2 <= weights[2, 0] <= 0.8  # each member sees half of label 2: a mix
    assert report[0]["chosen"] == report[1]["chosen"] == "own"
    # masked samples do not count: hiding every positive of label 0 leaves it the shared choice
    mask[:, 0] = y[:, 0] < 0.5
    weights, report = choose_weights(p, y, mask)
    assert report[0]["chosen"].startswith("shared (no positive")
    # too few tuning positives for weights of its own: the shared choice
    few = y.copy()
    few[40:, 1] = 0
    weights, report = choose_weights(p, few, np.ones_like(y, dtype=bool))
    assert report[1]["chosen"] == "shared"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto")
    paths = write_longitudinal(generate_longitudinal(600, seed=8), out)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    splits = patient_splits(store, paths["meds"], 0)
    clf = EHRClassifier(model="auto", labels=f"map:{paths['label_map']}", hidden=16, max_epochs=2, seed=0)
    clf, metrics = train_and_evaluate(store, clf, splits)
    return out, paths, store, splits, clf, metrics


def test_auto_reports_every_candidate_and_its_choice_and_round_trips(fitted, tmp_path):
    _out, _paths, store, splits, clf, metrics = fitted
    assert set(metrics["candidates"]) == {"gbm", "gru"}
    per_label = metrics["ensemble"]["per_label"]
    assert [r["label"] for r in per_label] == clf.labels_
    for r in per_label:
        assert abs(sum(r["weights"].values()) - 1) < 1e-9 and r["chosen"].startswith(("own", "shared"))
    clf.save(tmp_path / "m")
    back = ehrdx.load(tmp_path / "m")
    s = clf.samples(store, splits[2])
    # the same members and weights on the same inputs in one process: the same numbers
    np.testing.assert_array_equal(back.predict_samples(store, s), clf.predict_samples(store, s))
    assert back.model_name_ == "auto"
    assert {k: v for k, v in back.get_params().items() if k != "labels"} == \
        {k: v for k, v in clf.get_params().items() if k != "labels"}  # a label map is kept whole


def test_the_weights_come_from_tuning_patients_only(fitted):
    """Dropping the test patients' events (and so their samples) changes neither the members nor the weights."""
    out, paths, store, splits, clf, _ = fitted
    tr, va, _te = splits
    again = EHRClassifier(**clf.get_params()).fit(store, tr, va)
    np.testing.assert_array_equal(again.model_.weights, clf.model_.weights)
    # a store without the test patients at all
    import polars as pl

    from ehrdx.data.meds import write_meds

    events = pl.read_parquet(paths["meds"] / "data" / "*" / "*.parquet")
    keep = np.asarray(store.subject_ids)[np.concatenate([tr, va])]
    sub = events.filter(pl.col("subject_id").is_in(pl.Series(keep).implode()))
    write_meds(out / "no_test", sub)
    st2 = open_store(meds=out / "no_test", store_dir=out / "no_test_store")
    rows = {int(s): i for i, s in enumerate(np.asarray(st2.subject_ids))}
    ids = np.asarray(store.subject_ids)
    tr2 = np.array([rows[int(s)] for s in ids[tr]])
    va2 = np.array([rows[int(s)] for s in ids[va]])
    third = EHRClassifier(**clf.get_params()).fit(st2, tr2, va2)
    np.testing.assert_array_equal(third.model_.weights, clf.model_.weights)


def test_update_grows_every_member_and_explain_uses_the_gru_member(fitted, tmp_path):
    _out, _paths, store, splits, clf, _ = fitted
    tr, va, te = splits
    # the model as of a date, then updated with the labels that appear later (as `ehrdx update` does)
    early = EHRClassifier(**{**clf.get_params(), "labels": "regex:^DX//(E11|I10|E78|J44|F32)$"}).fit(store, tr, va)
    L = len(early.labels_)
    new, report = update_model(early, store, splits, selector=clf.selector_)
    assert len(new.labels_) > L and new.model_.weights.shape == (len(new.labels_), 2)
    assert len(new.model_.members["gru"].head.block_sizes) == 2  # a new head block, the old one untouched
    s = new.samples(store, te)
    # old labels: the same boosters, the same head block and the same weights (to float rounding of the sum)
    np.testing.assert_allclose(new.predict_samples(store, s)[:, :L], early.predict_samples(store, s), rtol=0,
                               atol=1e-12)
    assert report["new_labels_macro_auroc"] > 0.55
    from ehrdx.train.probe import PROBE_PATH

    # the GRU member's probe penalty per new label, chosen on the validation patients, is in the report
    assert sorted(report["probe_c"]) == sorted(new.labels_[L:]) and set(report["probe_c"].values()) <= set(PROBE_PATH)
    new.save(tmp_path / "u")
    np.testing.assert_array_equal(ehrdx.load(tmp_path / "u").predict_samples(store, s), new.predict_samples(store, s))
    from ehrdx.explain import explain_sample

    one = clf.samples(store, te[:1], require_labels=False)
    result = explain_sample(clf, store, one, 0)
    assert result["model"].startswith("the gru member of the auto ensemble") and result["labels"][0]["events"]


def test_gbm_member_stops_on_training_patients_so_tuning_patients_stay_unseen(fitted):
    _out, _paths, store, splits, clf, _ = fitted
    from ehrdx.data.batches import HISTORY
    from ehrdx.train.ensemble import inner_split

    s = clf.samples(store, splits[0])
    train = clf.dataset(store, s)[HISTORY]
    fit_part, stop_part = inner_split(train, seed=0)
    a, b = set(fit_part.samples.row), set(stop_part.samples.row)
    assert not a & b and a | b == set(s.row) and len(fit_part) + len(stop_part) == len(s)  # by patient
    assert 0.05 < len(b) / len(a | b) < 0.2  # about a tenth of the training patients
    np.testing.assert_array_equal(stop_part.y, stop_part.samples.y)  # exact: 0/1 targets copied, not computed
    assert not set(stop_part.samples.row) & set(splits[1])  # none of them a tuning patient


def test_a_split_sequence_set_keeps_its_context(fitted):
    _out, _paths, store, splits, clf, _ = fitted
    from ehrdx.data.sequences import SequenceSet
    from ehrdx.train.ensemble import subset_set

    s = clf.samples(store, splits[0])
    ds = SequenceSet(store, s, clf.encoder_, context=2)
    part = subset_set(ds, np.arange(len(s) // 2))
    assert part.context == 2 and int(part.seq_nv.max()) <= 4  # windows of at most 2N visits


def test_auto_is_the_default_for_event_streams_and_needs_tuning_patients(fitted):
    _out, paths, store, splits, _clf, _ = fitted
    assert EHRClassifier().resolve_settings("events").name == "auto"
    assert EHRClassifier().resolve_settings("table").name == "mlp"  # tables keep theirs
    with pytest.raises(ModelError, match=r"(?s)auto model \(the default for event streams\).*there are none.*fix: give "
                                         "validation rows"):
        EHRClassifier(labels=f"map:{paths['label_map']}").fit(store, splits[0])
