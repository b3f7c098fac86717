"""`--model auto`, the default for event streams: candidates fitted, weights per label chosen on tuning patients
only, every candidate and the choice reported, saved, loaded, updated and explained (its GRU member)."""

import numpy as np
import pytest

import ehrdx
from ehrdx.data.synth import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.pipeline import train_and_evaluate
from ehrdx.train.mixing import best_on_tuning, choose_weights
from ehrdx.update import update_model


def _three_labels(n: int, seed: int):
    """Tuning probabilities of two members: label 0 known to member 0 only, label 1 to member 1 only, label 2
    half to each (each member sees the positives the other does not)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    noise = rng.normal(0, 1, (2, n, 3))
    good, bad = y + 0.3 * noise[0], rng.random((n, 3))
    half = y[:, 2] * (rng.random(n) < 0.5)
    p = np.stack([np.stack([good[:, 0], bad[:, 1], half + 0.2 * noise[0, :, 2]], 1),
                  np.stack([bad[:, 0], good[:, 1], (y[:, 2] - half) + 0.2 * noise[1, :, 2]], 1)])
    return p, y


def test_one_weighting_for_all_labels_the_equal_mix_unless_the_tuning_patients_clearly_prefer_another():
    rng = np.random.default_rng(0)
    n, L = 600, 4
    y = (rng.random((n, L)) < 0.2).astype(np.float32)
    good = [y + rng.normal(0, 0.6, y.shape) for _ in range(2)]
    p = np.stack([good[0], good[1], rng.random((n, L))])  # the third member knows nothing of any label
    mask = np.ones_like(y, dtype=bool)
    weights, report = choose_weights(p, y, mask, seed=0)
    # one weighting for every label, without the useless member (or almost)
    assert (weights == weights[0]).all() and weights[0, 2] <= 0.1, weights[0]
    assert {r["for"] for r in report} == {"all labels"} and report[0]["wins"] >= 0.95
    assert report[0]["chosen"] in ("member", "mix") and report[0]["tuning_auprc"] > report[0]["tuning_auprc_equal"]
    # three members alike: nothing beats the equal mix clearly, and it stays
    p = np.stack([y + rng.normal(0, 0.6, y.shape) for _ in range(3)])
    weights, report = choose_weights(p, y, mask, seed=0)
    np.testing.assert_array_equal(weights, np.full((L, 3), 1 / 3))  # exact: the equal row itself, not computed
    assert [r["chosen"] for r in report] == ["equal"] * L and "wins" not in report[0]
    # a label without a known positive keeps the shared weighting and says why
    mask[:, 0] = y[:, 0] < 0.5
    report = choose_weights(p, y, mask, seed=0)[1]
    assert report[0]["chosen"] == "equal (no positive or no negative among tuning samples)"


def test_per_label_the_equal_mix_stays_unless_the_tuning_patients_clearly_prefer_another():
    p, y = _three_labels(400, 0)
    mask = np.ones_like(y, dtype=bool)
    weights, report = choose_weights(p, y, mask, seed=0, shared=False, per_label=True)
    # a member that knows nothing of a label drags the mix down on every resampling: the other one (or a mix
    # leaning on it) replaces the equal mix; where each sees half, the equal mix is the best there is
    assert weights[0, 0] >= 0.8 and weights[1, 1] >= 0.8 and report[0]["wins"] >= 0.95
    assert report[0]["chosen"] in ("member", "mix") and report[1]["chosen"] in ("member", "mix")
    assert report[0]["for"] == "this label"
    np.testing.assert_array_equal(weights[2], [0.5, 0.5])  # exact: the equal row itself, never computed
    assert report[2]["chosen"] == "equal"
    # a slight edge on few tuning samples is not clear: the equal mix stays
    rng = np.random.default_rng(1)
    y = (rng.random((60, 1)) < 0.3).astype(np.float32)
    p = np.stack([y + rng.normal(0, 0.8, y.shape), y + rng.normal(0, 1.0, y.shape)])
    weights, report = choose_weights(p, y, np.ones_like(y, dtype=bool), seed=0, shared=False, per_label=True)
    assert report[0]["chosen"] == "equal" and weights[0, 0] == 0.5


def test_resampling_whole_patients_asks_for_more_evidence_than_their_samples_alone():
    """Ten samples per patient are not ten patients: the same scores read as one sample per patient win
    clearly, grouped by patient they do not."""
    rng = np.random.default_rng(3)
    n = 30
    y = np.repeat((rng.random((n, 1)) < 0.3).astype(np.float32), 10, axis=0)
    p = np.stack([y + np.repeat(rng.normal(0, 0.9, (n, 1)), 10, axis=0),
                  y + np.repeat(rng.normal(0, 1.6, (n, 1)), 10, axis=0)])
    per_sample = choose_weights(p, y, np.ones_like(y, dtype=bool), grid=False, seed=0)[1][0]
    grouped = choose_weights(p, y, np.ones_like(y, dtype=bool), groups=np.repeat(np.arange(n), 10), grid=False,
                             seed=0)[1][0]  # the shared test on one label: that label's
    assert per_sample["chosen"] == "member" and grouped["chosen"] == "equal", (per_sample, grouped)


def test_with_too_few_tuning_patients_to_resample_the_equal_mix_stays_and_the_report_says_why():
    """One tuning patient: every resampling is that patient, so a member better on the whole set would win
    all of them; the same scores over 40 patients still choose it."""
    from ehrdx.train.mixing import MIN_PATIENTS

    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random((n, 2)) < 0.3).astype(np.float32)
    p = np.stack([y + rng.normal(0, 0.3, y.shape), rng.random(y.shape)])  # member 0 knows, member 1 does not
    mask = np.ones_like(y, dtype=bool)
    many = choose_weights(p, y, mask, groups=np.arange(n) % 40, grid=False, seed=0)
    assert many[1][0]["chosen"] == "member" and many[0][0, 0] == 1.0
    for patients in (1, MIN_PATIENTS - 1):
        weights, report = choose_weights(p, y, mask, groups=np.arange(n) % patients, grid=False, seed=0)
        np.testing.assert_array_equal(weights, np.full((2, 2), 0.5))
        assert report[0]["chosen"] == f"equal (fewer than {MIN_PATIENTS} tuning patients: too few to resample)"


def test_the_rule_before_follows_the_member_that_ranks_each_label_best():
    """`best_on_tuning` (auto before session 10, kept for the benchmark's comparison)."""
    p, y = _three_labels(400, 0)
    mask = np.ones_like(y, dtype=bool)
    weights, report = best_on_tuning(p, y, mask)
    assert weights[0, 0] >= 0.8 and weights[1, 1] >= 0.8
    assert 0.2 <= weights[2, 0] <= 0.8
    assert report[0]["chosen"] == report[1]["chosen"] == "own"
    few = y.copy()
    few[40:, 1] = 0
    assert best_on_tuning(p, few, mask)[1][1]["chosen"] == "shared"


def test_mixes_cover_the_grid_and_auprc_is_scikit_learns():
    from sklearn.metrics import average_precision_score

    from ehrdx.train.mixing import auprc, mixes, weighted_auprc

    assert len(mixes(2)) == 9 and len(mixes(3)) == 66 - 3  # the simplex in tenths, members alone left out
    assert all(abs(w.sum() - 1) < 1e-12 and (w > 0).sum() >= 2 for w in mixes(3))
    rng = np.random.default_rng(0)
    y, s = rng.random(300) < 0.2, np.round(rng.random(300), 2)  # ties: one threshold each, as scikit-learn
    w = rng.integers(0, 3, 300).astype(float)
    got = weighted_auprc(y, s, np.stack([np.ones(300), w]))
    np.testing.assert_allclose(got, [average_precision_score(y, s), average_precision_score(y, s, sample_weight=w)],
                               rtol=1e-12)
    for n in (1, 5, 300):  # the unit-weight AP the whole-set scores use: the same, ties and no positive included
        # the same sums in the same order as the unit-weight resampled form: equal floats, not only close ones
        assert auprc(y[:n], s[:n]) == weighted_auprc(y[:n], s[:n], np.ones((1, n)))[0] or not y[:n].any()
    assert np.isnan(auprc(np.zeros(4, bool), s[:4])) and np.isnan(auprc(np.zeros(0, bool), s[:0]))


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
    assert set(metrics["candidates"]) == {"gbm", "gru", "gbm-counts"}
    per_label = metrics["ensemble"]["per_label"]
    assert [r["label"] for r in per_label] == clf.labels_
    for r in per_label:
        assert abs(sum(r["weights"].values()) - 1) < 1e-9 and r["chosen"].startswith(("equal", "member", "mix"))
        if r["chosen"].startswith("equal"):
            assert set(r["weights"].values()) == {1 / 3}
    # the terminal report: the members beside the ensemble, and a line on the weights
    from rich.console import Console

    from ehrdx.evaluate.report import ensemble_line, print_events_report

    console = Console(record=True, width=250)
    print_events_report(console, metrics)
    text = console.export_text()
    assert all(f"{name} (member)" in text for name in ("gbm", "gru", "gbm-counts"))
    line = ensemble_line(metrics["ensemble"])
    assert " ".join(line.split()) in " ".join(text.split()) and line.startswith("ensemble weights: ")
    assert ensemble_line({"members": ["a", "b"], "chosen_on": "x", "per_label": [
        {"weights": {"a": 0.5, "b": 0.5}}] * 3 + [{"weights": {"a": 1.0, "b": 0.0}}]}) == \
        "ensemble weights: a 0.5, b 0.5 (3 labels); a 1 (1 labels). Chosen on x"
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
    assert len(new.labels_) > L and new.model_.weights.shape == (len(new.labels_), 3)
    assert len(new.model_.members["gru"].head.block_sizes) == 2  # a new head block, the old one untouched
    for name in ("gbm", "gbm-counts"):  # a booster for every label, old and new
        assert len(new.model_.members[name].gbm.labels_) == len(new.labels_)
    assert len(new.model_.choices) == len(new.labels_)
    s = new.samples(store, te)
    # old labels: the same boosters, the same head block and the same weights (to float rounding of the sum)
    np.testing.assert_allclose(new.predict_samples(store, s)[:, :L], early.predict_samples(store, s), rtol=0,
                               atol=1e-12)
    assert report["new_labels_macro_auroc"] > 0.55
    from ehrdx.train.probe import PROBE_PATH

    # the GRU member's probe penalty per new label, chosen on the validation patients, is in the report
    assert sorted(report["probe_c"]) == sorted(new.labels_[L:]) and set(report["probe_c"].values()) <= set(PROBE_PATH)
    # update_report.json: each new label's weights by member and why, in metrics.json's words
    ens = report["ensemble"]
    assert ens["members"] == ["gbm", "gru", "gbm-counts"] and "labels this update adds" in ens["chosen_on"]
    assert [r["label"] for r in ens["per_label"]] == new.labels_[L:]
    for r, w, choice in zip(ens["per_label"], new.model_.weights[L:], new.model_.choices[L:]):
        assert list(r["weights"].values()) == w.tolist() and abs(sum(w) - 1) < 1e-9
        assert r["chosen"] == choice["chosen"] and r["chosen"].startswith(("equal", "member", "mix"))
        assert r["for"] in ("all labels", "this label")
        if "no positive or no negative" not in r["chosen"]:
            assert {"tuning_auprc", "tuning_auprc_equal", "tuning_positive_patients"} <= set(r)
    # without tuning patients: the equal mix for every new label, and the report says so
    bare, plain = update_model(early, store, (tr, va[:0], te), selector=clf.selector_)
    assert len(bare.model_.choices) == len(bare.labels_)  # before: none recorded for the new labels
    assert [r["chosen"] for r in plain["ensemble"]["per_label"]] == ["equal (no tuning patients)"] * (
        len(bare.labels_) - L)
    np.testing.assert_array_equal(bare.model_.weights[L:], np.full((len(bare.labels_) - L, 3), 1 / 3))
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


def test_auto_is_the_default_for_event_streams_and_without_tuning_patients_weighs_its_members_equally(fitted):
    """--val-fraction 0: no tuning patients to choose weights on, so the equal mix (as with fewer than
    MIN_PATIENTS), the GRU member runs every epoch, and the fit's summary says so."""
    _out, paths, store, splits, _clf, _ = fitted
    assert EHRClassifier().resolve_settings("events").name == "auto"
    assert EHRClassifier().resolve_settings("table").name == "mlp"  # tables keep theirs
    clf = EHRClassifier(labels=f"map:{paths['label_map']}", hidden=8, max_epochs=2, seed=0).fit(store, splits[0][:150])
    L = len(clf.labels_)
    np.testing.assert_array_equal(clf.model_.weights, np.full((L, 3), 1 / 3))  # exact: the equal row itself
    assert clf.model_.choices == [{"chosen": "equal (no tuning patients)", "for": "all labels"}] * L
    assert clf.history_.epochs_run == 2 and clf.history_.val_loss == []
    assert clf.fit_summary_["val_patients"] == 0
    assert clf.fit_summary_["without_validation"] == (
        "no validation samples (0 validation patients): the members weighted equally, the network member ran all "
        "2 epochs; thresholds 0.5, none tuned")
    np.testing.assert_array_equal(clf.thresholds_, np.full(L, 0.5))


def test_no_tuning_samples_give_the_equal_mix_and_say_why():
    weights, report = choose_weights(np.zeros((3, 0, 2)), np.zeros((0, 2), np.float32), np.zeros((0, 2), bool))
    np.testing.assert_array_equal(weights, np.full((2, 3), 1 / 3))
    assert report == [{"chosen": "equal (no tuning patients)", "for": "all labels"}] * 2


def test_an_auto_model_saved_with_two_members_still_loads_and_predicts_the_same(fitted, tmp_path):
    """auto before session 10 had members gbm and gru (weights from `best_on_tuning`), and its gbm's config
    had no feature set: such a directory loads as those two members and predicts their saved mix."""
    import copy
    import json

    from ehrdx.train.ensemble import EnsembleModel

    _out, _paths, store, splits, clf, _ = fitted
    old = copy.copy(clf)
    ens = EnsembleModel(clf.model_.n_labels, {}, ("gbm", "gru"))
    ens.members = {k: clf.model_.members[k] for k in ("gbm", "gru")}
    ens.weights = np.tile([0.7, 0.3], (ens.n_labels, 1))
    ens.weights[0] = [0.0, 1.0]
    ens.choices = [{"chosen": "own", "tuning_auprc": 0.2, "shared_auprc": 0.1}] + \
        [{"chosen": "shared", "tuning_auprc": 0.1}] * (ens.n_labels - 1)
    old.model_ = ens
    old.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    assert config["model"]["members"] == ["gbm", "gru"] and "gbm-counts.gbm.json" not in config["sha256"]
    del config["model"]["member_configs"]["gbm"]["features"]  # as older versions wrote it
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    back = ehrdx.load(tmp_path / "old")
    assert back.model_.names == ("gbm", "gru") and back.model_.weights.shape == (ens.n_labels, 2)
    s = clf.samples(store, splits[2])
    p = clf.model_.member_probabilities(clf.dataset(store, s))  # [3, N, L]: gbm, gru, gbm-counts
    expected = np.einsum("mnl,lm->nl", p[:2], ens.weights)
    got = back.predict_samples(store, s)
    np.testing.assert_array_equal(got, old.predict_samples(store, s))  # the same members and weights
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # probabilities through logits, in float32


def test_with_two_threads_the_gbm_members_fit_beside_the_gru_and_give_the_same_model(fitted, monkeypatch):
    """With 2+ torch threads the fitted members (LightGBM) run in a thread beside the GRU, each on half of the
    threads, and the threads are restored after. The gbm members are the same trees as one after the other
    (LightGBM's boosters do not depend on the thread count); the GRU, on its share of one thread here, gives
    the probabilities of the sequential fit at one thread to float rounding (the same kernels, another
    order of fits); a seed gives the same run again. An error in the thread reaches the caller."""
    import torch

    from ehrdx.models.gbm import GBMModel

    _out, _paths, store, splits, clf, _ = fitted
    tr, va, te = splits
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = EHRClassifier(**clf.get_params()).fit(store, tr, va)  # sequential: one thread
        torch.set_num_threads(2)
        seen = []
        fit = GBMModel.fit

        def spy(self, *a, **k):
            seen.append((self.num_threads, torch.get_num_threads()))
            return fit(self, *a, **k)

        monkeypatch.setattr(GBMModel, "fit", spy)
        two = EHRClassifier(**clf.get_params()).fit(store, tr, va)
        again = EHRClassifier(**clf.get_params()).fit(store, tr, va)
        assert torch.get_num_threads() == 2
        assert all(t == 1 for t, _ in seen) and len(seen) == 4  # each gbm member fits on its 1 of the 2 threads
        for name in ("gbm", "gbm-counts"):
            a, b = one.model_.members[name].gbm, two.model_.members[name].gbm
            assert [x.model_to_string().split("[num_threads")[0] for x in a.boosters_ if x] == \
                   [x.model_to_string().split("[num_threads")[0] for x in b.boosters_ if x]
            assert b.num_threads == 2  # all the threads again, for predictions
        p1, p2, p3 = (m.predict_proba(store, te) for m in (one, two, again))
        np.testing.assert_allclose(p2, p1, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(p3, p2)  # exact by construction: the same seeded run, threads and machine

        def broken(self, *a, **k):
            raise RuntimeError("gbm failed")

        monkeypatch.setattr(GBMModel, "fit", broken)
        with pytest.raises(RuntimeError, match="gbm failed"):
            EHRClassifier(**clf.get_params()).fit(store, tr, va)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_with_two_threads_a_gbm_member_that_fails_stops_the_fit_before_the_gru_trains_on(fitted, monkeypatch):
    """One after the other, a gbm member that fails stops the fit before the GRU trains at all. Beside it (2+
    threads) the error should still stop the fit soon, not after every GRU epoch (hours on a large cohort)."""
    import torch

    from ehrdx.models.gbm import GBMModel

    _out, _paths, store, splits, clf, _ = fitted
    tr, va, _te = splits
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        def broken(self, *a, **k):
            raise RuntimeError("gbm failed")

        monkeypatch.setattr(GBMModel, "fit", broken)
        epochs = []
        with pytest.raises(RuntimeError, match="gbm failed"):
            EHRClassifier(**{**clf.get_params(), "max_epochs": 4}).fit(
                store, tr, va, on_epoch=lambda e, *_: epochs.append(e))
        assert len(epochs) <= 1, f"the GRU went on for {len(epochs)} epochs after the gbm member had failed"
    finally:
        torch.set_num_threads(before)


def test_with_two_threads_an_interrupted_gru_does_not_wait_for_the_gbm_members(fitted, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) or an error in the GRU while the gbm members fit beside it: the fit should
    stop at once (at most the label in progress), not after both gbm members have finished (minutes to hours
    with 1,500 labels; a second Ctrl-C cannot help: the executor's thread is joined at exit)."""
    import time

    import torch

    from ehrdx.models.gbm import GBMModel

    _out, _paths, store, splits, clf, _ = fitted
    tr, va, _te = splits
    fit, calls = GBMModel.fit, []

    def slow(self, *a, **k):  # a gbm member that takes a while (5 s) before its boosters
        calls.append(time.perf_counter())
        time.sleep(5)
        return fit(self, *a, **k)

    monkeypatch.setattr(GBMModel, "fit", slow)
    raised = []

    def interrupt(*_):
        raised.append(time.perf_counter())
        raise KeyboardInterrupt

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            EHRClassifier(**clf.get_params()).fit(store, tr, va, on_epoch=interrupt)
        waited = time.perf_counter() - raised[0]
        assert waited < 2, f"the interrupt reached the caller {waited:.1f} s later, after {len(calls)} gbm fits"
    finally:
        torch.set_num_threads(before)
