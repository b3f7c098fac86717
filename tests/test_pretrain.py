"""Pretraining on every frequent code (ehrdx pretrain), and models that start from the encoder (--init)."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import ehrdx
import ehrdx.update
from ehrdx.cli import app
from ehrdx.errors import DataError, ModelError
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import patient_splits
from ehrdx.pretrain import next_visit_samples, pretrain, target_codes
from ehrdx.pretrained import load_encoder, patient_hashes
from ehrdx.tasks.task import LabelIndex, TaskSpec, build_samples, codes_of_labels
from ehrdx.train.probe import PROBE_C, PROBE_PATH, fit_from_start
from ehrdx.update import update_model


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(pretrained_cohort):
    made = pretrained_cohort("pretrain", 500, 3)
    return {**made, "enc": made["encoders"]["gru"]}


def _labels(data) -> str:
    return f"map:{data['paths']['label_map']}"


def test_next_visit_targets_are_the_codes_of_the_next_visit_as_the_task_finds_them(data):
    store, (tr, _, _) = data["store"], data["splits"]
    codes, patients = target_codes(store, tr, 5, None)
    assert (np.diff(patients) <= 0).all() and patients.min() >= 5  # most patients first
    target_of = np.full(len(store.code_names), -1)
    target_of[codes] = np.arange(len(codes))
    s = next_visit_samples(store, tr, target_of, len(codes), time_targets=True)
    # The same targets through the supervised next-visit task, with one "label" per target code.
    ptr = np.concatenate([[0], np.cumsum(target_of >= 0)])
    task = build_samples(store, tr, TaskSpec.parse("next-visit"), LabelIndex(ptr, target_of[target_of >= 0]),
                         len(codes))
    np.testing.assert_array_equal(s.row, task.row)
    np.testing.assert_array_equal(s.time, task.time)
    np.testing.assert_array_equal(s.y_bits[:, : len(codes)], task.y_bits[:])
    # time targets are cumulative (within 7d implies within 30d ...) and every entry is known
    t = s.y_bits[:, len(codes):]
    assert (t[:, :-1] <= t[:, 1:]).all() and t[:, -1].any()
    assert s.mask_bits[:].all() and not s.history_bits[:].any()
    assert s.mask_bits.packed.strides[0] == 0  # the all-known mask holds one row's bytes, whatever the samples


def test_pretraining_loss_falls_and_the_encoder_directory_round_trips(data):
    enc, store, (tr, va, te) = data["enc"], data["store"], data["splits"]
    assert enc.history["train_loss"][-1] < enc.history["train_loss"][0]
    assert enc.history["val_loss"][-1] < enc.history["val_loss"][0]
    back = load_encoder(data["out"] / "gru")
    assert back.targets == enc.targets and back.model_name == "gru" and back.sizes == {"hidden": 16, "layers": 1,
                                                                                          "heads": 4}
    assert back.targets[-4:] == ["@next_visit_within_7d", "@next_visit_within_30d", "@next_visit_within_90d",
                                 "@next_visit_within_365d"]
    assert all(torch.equal(back.state[k], v) for k, v in enc.state.items())
    assert back.input_encoder.codes == enc.input_encoder.codes
    ids = np.asarray(store.subject_ids)
    assert back.patients["train"] == patient_hashes(ids[tr]) and back.patients["tuning"] == patient_hashes(ids[va])
    assert not set(patient_hashes(ids[te])) & set(back.patients["train"] + back.patients["tuning"])
    config = json.loads((data["out"] / "gru" / "config.json").read_text())
    assert config["family"] == "encoder" and config["ehrdx_version"] == ehrdx.__version__
    assert config["model"]["encoder"] == "gru" and config["model"]["hidden"] == 16


def test_a_tampered_encoder_or_a_model_directory_is_refused(data, tmp_path):
    import shutil

    d = shutil.copytree(data["out"] / "gru", tmp_path / "enc")
    targets = json.loads((d / "targets.json").read_text())
    targets["targets"][0] = "DX//X99"
    (d / "targets.json").write_text(json.dumps(targets))
    with pytest.raises(ModelError, match="checksum"):
        load_encoder(d)
    with pytest.raises(ModelError, match="unknown model family 'encoder'"):
        ehrdx.load(data["out"] / "gru")  # not a model: ehrdx predict and friends refuse it


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_init_copies_the_encoder_body_and_keeps_its_output_rows(data, kind):
    (tr, va, _), enc = data["splits"], load_encoder(data["out"] / kind)
    clf = EHRClassifier(labels=_labels(data), init=str(data["out"] / kind), hidden=None, heads=None, max_epochs=0)
    clf.fit(data["store"], tr, va)
    assert clf.model_name_ == kind and clf.model_.config.hidden == 16
    assert clf.encoder_.codes == enc.input_encoder.codes  # the encoder's vocabulary: embeddings line up
    body = clf.model_.body_state()
    assert set(body) == {k for k in enc.state if not k.startswith("head.")}
    for k, v in body.items():
        assert torch.equal(v, enc.state[k]), k
    torch.testing.assert_close(clf.model_.pretrained_rows, enc.state["head.label_embedding"], rtol=0, atol=0)
    assert clf.model_.config.pretrained_targets == enc.targets


def test_init_starts_each_labels_row_from_the_pretrained_rows_of_its_codes(data, tmp_path):
    store, (tr, va, _) = data["store"], data["splits"]
    few = pretrain(store, data["splits"], hidden=16, max_epochs=1, min_count=5, max_targets=30)  # rarer codes out
    few.save(tmp_path / "few")
    clf = EHRClassifier(labels=_labels(data), init=str(tmp_path / "few"), hidden=None, max_epochs=0)
    clf.fit(store, tr, va)
    index = {code: i for i, code in enumerate(few.targets)}
    W = few.state["head.label_embedding"]
    codes = codes_of_labels(store, clf.selector_, tr)
    rows = clf.model_.head.rows().detach()
    started = []
    for j, lab in enumerate(clf.labels_):
        ids = [index[c] for c in codes[lab] if c in index]
        if ids:  # the mean of the rows of the label's codes (E11: of E11 and E11.9; E11.2 is not a target)
            torch.testing.assert_close(rows[j], W[ids].mean(0))
            started.append(lab)
        else:  # no code of the label was a pretraining target: the default start, not a pretrained row
            assert not any(torch.allclose(rows[j], w) for w in W)
    assert 0 < len(started) < len(clf.labels_) and "E11" in started and "E11.2" not in started
    assert clf.pretrained_["labels_from_encoder"] == len(started)
    assert clf.fit_summary_["pretrained"]["labels_from_encoder"] == len(started)  # metrics.json's train_summary
    # the biases are each label's prevalence, as in any fit (a next-visit code's rate is not the label's)
    e11, b = clf.labels_.index("E11"), few.state["head.label_bias"]
    assert abs(float(clf.model_.head.label_bias[e11]) - float(b[[index["DX//E11"], index["DX//E11.9"]]].mean())) > 0.1


def test_a_refit_without_the_encoder_keeps_no_record_of_it(data, tmp_path):
    store, (tr, va, _) = data["store"], data["splits"]
    clf = EHRClassifier(labels=_labels(data), init=str(data["out"] / "gru"), hidden=None, max_epochs=0)
    clf.fit(store, tr, va)
    assert clf.pretrained_["labels_from_encoder"] > 0 and "pretrained" in clf.fit_summary_
    clf.set_params(init=None, hidden=16, max_epochs=1).fit(store, tr, va)  # the same object, now from scratch
    assert clf.pretrained_ is None and "pretrained" not in clf.fit_summary_
    clf.save(tmp_path / "m")
    assert "pretrained" not in json.loads((tmp_path / "m" / "config.json").read_text())
    assert not hasattr(clf.model_, "pretrained_rows")


def test_pretraining_with_a_bounded_context_and_a_fine_tune_that_reads_the_same(data, tmp_path):
    store, (tr, va, _) = data["store"], data["splits"]
    enc = pretrain(store, data["splits"], hidden=16, max_epochs=1, min_count=5, context=2)
    enc.save(tmp_path / "ctx")
    back = load_encoder(tmp_path / "ctx")
    assert back.context == 2 and "prior_proj.weight" in back.state  # the summary of the visits before the window
    assert data["enc"].context is None
    clf = EHRClassifier(labels=_labels(data), init=str(tmp_path / "ctx"), hidden=None, context=2, max_epochs=0)
    clf.fit(store, tr, va)
    assert torch.equal(clf.model_.prior_proj.weight, enc.state["prior_proj.weight"])
    assert clf.predict_proba(store, va[:5]).shape[1] == len(clf.labels_)
    for context, said in ((None, "this model would read whole histories"), (3, "this model would read context 3")):
        with pytest.raises(DataError, match=f"pretrained reading context 2 and {said}"):
            EHRClassifier(labels=_labels(data), init=str(tmp_path / "ctx"), hidden=None, context=context).fit(
                store, tr, va)
    with pytest.raises(DataError, match="pretrained reading whole histories and this model would read context 2"):
        EHRClassifier(labels=_labels(data), init=str(data["out"] / "gru"), hidden=None, context=2).fit(store, tr, va)
    with pytest.raises(DataError, match="context must be a positive number"):
        pretrain(store, data["splits"], hidden=16, max_epochs=1, context=0)


def test_the_command_line_pretrains_with_a_context_and_train_takes_it(data, tmp_path):
    meds = data["paths"]["meds"]
    r = run("pretrain", "--meds", meds, "--out", tmp_path / "enc", "--epochs", "1", "--hidden", "16", "--min-count",
            "5", "--max-targets", "30", "--context", "2")
    assert r.exit_code == 0, r.output
    assert "(context 2)" in r.output
    r = run("train", "--meds", meds, "--labels", _labels(data), "--out", tmp_path / "m", "--init", tmp_path / "enc",
            "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert "context 2" in r.output and "labels started from the pretrained rows of their codes" in r.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["params"]["context"] == 2 and config["pretrained"]["labels_from_encoder"] > 0
    assert ehrdx.load(tmp_path / "m").context == 2  # predictions read the same windows
    r = run("train", "--meds", meds, "--labels", _labels(data), "--out", tmp_path / "m2", "--init", tmp_path / "enc",
            "--context", "4")
    assert r.exit_code == 2 and "pretrained reading context 2 and this model would read context 4" in r.output


def test_probe_trains_the_head_only_and_the_saved_model_keeps_the_rows(data, tmp_path):
    (tr, va, _), enc = data["splits"], data["enc"]
    clf = EHRClassifier(labels=_labels(data), init=str(data["out"] / "gru"), probe=True, hidden=None, max_epochs=2)
    clf.fit(data["store"], tr, va)
    for k, v in clf.model_.body_state().items():
        assert torch.equal(v, enc.state[k]), k  # frozen
    assert clf.history_.steps > 0 and all(p.requires_grad for p in clf.model_.parameters())  # trainable again
    clf.save(tmp_path / "m")
    back = ehrdx.load(tmp_path / "m")
    assert back.model_.config.pretrained_targets == enc.targets and back.init == str(data["out"] / "gru")
    assert torch.equal(back.model_.pretrained_rows, enc.state["head.label_embedding"])
    assert back.pretrained_["probe"] and back.pretrained_["directory"] == str(data["out"] / "gru")


def test_a_fine_tune_refuses_an_encoder_of_other_sizes_or_one_pretrained_on_its_patients(data, tmp_path):
    store, (tr, va, te) = data["store"], data["splits"]
    with pytest.raises(DataError, match="hidden 32 .encoder 16."):
        EHRClassifier(labels=_labels(data), init=str(data["out"] / "gru"), hidden=32).fit(store, tr, va)
    with pytest.raises(DataError, match="the encoder is a gru and the model asked for is a transformer"):
        EHRClassifier(labels=_labels(data), init=str(data["out"] / "gru"), model="transformer",
                      hidden=None).fit(store, tr, va)
    with pytest.raises(ModelError, match="probe"):
        EHRClassifier(labels=_labels(data), probe=True).fit(store, tr, va)
    everyone = pretrain(store, (np.concatenate([tr, te]), va, np.zeros(0, np.int64)), hidden=16, max_epochs=1,
                        min_count=5)
    everyone.save(tmp_path / "everyone")
    # its tuning patients are this run's validation patients: allowed (they only stopped pretraining early)
    EHRClassifier(labels=_labels(data), init=str(tmp_path / "everyone"), hidden=None, max_epochs=0).fit(store, tr, va)
    # ... but a validation patient it trained on is refused, and counted
    with pytest.raises(DataError, match=f"{len(te)} of this run's {len(te)} validation patients were pretraining"):
        EHRClassifier(labels=_labels(data), init=str(tmp_path / "everyone"), hidden=None).fit(store, tr, te)


def test_an_update_starts_new_labels_from_the_pretrained_rows_of_their_codes(data, monkeypatch):
    meds, enc = data["paths"]["meds"], data["enc"]
    otr, ova, _ = patient_splits(data["old_store"], meds, 0)
    old = EHRClassifier(labels=_labels(data), init=str(data["out"] / "gru"), hidden=None, max_epochs=1)
    old.fit(data["old_store"], otr, ova)
    seen = {}
    real = ehrdx.update.probe_new_rows  # the penalty chosen on the validation patients

    def spy(*args, start=None, **kwargs):
        seen["start"] = start
        return real(*args, start=start, **kwargs)

    monkeypatch.setattr(ehrdx.update, "probe_new_rows", spy)
    new, report = update_model(old, data["store"], data["splits"], epochs=0)
    assert set(report["probe_c"]) == set(report["added"]) and new.lineage_["probe_c"] == report["probe_c"]
    assert set(report["probe_c"].values()) <= {*PROBE_PATH, PROBE_C}
    rows, bias, found = seen["start"]
    index = {code: i for i, code in enumerate(enc.targets)}
    W, b = enc.state["head.label_embedding"], enc.state["head.label_bias"]
    assert "U07.1" in report["added"]
    for j, lab in enumerate(report["added"]):
        ids = [index[c] for c in new.label_vocab_.info[lab]["codes"] if c in index]
        assert bool(found[j]) == bool(ids)
        if ids:  # the mean of the rows of the codes that define the label
            torch.testing.assert_close(rows[j], W[ids].mean(0))
            torch.testing.assert_close(bias[j], b[ids].mean())
            assert new.lineage_["init"][lab] == "pretrained+probe"
    assert found.any()
    # the update's own split is checked against the encoder's patients, read again from its directory
    tr, va, te = data["splits"]
    with pytest.raises(DataError, match=f"{len(tr)} of this run's {len(tr)} test patients were pretraining"):
        update_model(old, data["store"], (te, va, tr), epochs=0)


def test_an_update_refuses_a_model_whose_encoder_is_gone_or_changed(data, tmp_path):
    import shutil

    shutil.copytree(data["out"] / "gru", tmp_path / "enc")
    meds = data["paths"]["meds"]
    otr, ova, _ = patient_splits(data["old_store"], meds, 0)
    old = EHRClassifier(labels=_labels(data), init=str(tmp_path / "enc"), hidden=None, max_epochs=0)
    old.fit(data["old_store"], otr, ova)
    config = tmp_path / "enc" / "config.json"
    config.write_text(config.read_text().replace('"hidden"', '"hidden" ', 1))
    with pytest.raises(DataError, match="no longer there as it was"):
        update_model(old, data["store"], data["splits"], epochs=0)
    shutil.rmtree(tmp_path / "enc")
    with pytest.raises(DataError, match="no longer there as it was"):
        update_model(old, data["store"], data["splits"], epochs=0)


def test_the_probe_starts_from_the_given_row():
    rng = np.random.default_rng(0)
    H = rng.normal(size=(50, 4)).astype(np.float32)
    y = (H[:, :1] > 0).astype(np.float32)
    w0, b0 = torch.tensor([[0.5, -1.0, 2.0, 0.0]]), torch.tensor([0.3])
    # no known sample: nothing moves the row from its start (the penalty's minimum)
    w, b = fit_from_start(H, y, np.zeros((50, 1), bool), w0, b0)
    torch.testing.assert_close(w, w0)
    torch.testing.assert_close(b, b0)
    # with data, the fit moves towards the signal (feature 0) and, with little data, stays near its start
    w, _ = fit_from_start(H, y, np.ones((50, 1), bool), w0, b0)
    assert w[0, 0] > w0[0, 0] + 1.0


def test_the_command_line_pretrains_fine_tunes_and_refuses(data, tmp_path):
    meds = data["paths"]["meds"]
    r = run("pretrain", "--meds", meds, "--out", tmp_path / "enc", "--epochs", "1", "--hidden", "16", "--min-count",
            "5", "--max-targets", "40")
    assert r.exit_code == 0, r.output
    assert "encoder saved to" in r.output and len(load_encoder(tmp_path / "enc").targets) == 44
    r = run("train", "--meds", meds, "--labels", _labels(data), "--out", tmp_path / "m", "--init", tmp_path / "enc",
            "--probe", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["hidden"] == 16
    # an encoder pretrained on every patient (all of them in "train"): the run's test patients are refused
    everyone = tmp_path / "everyone_meds"
    import shutil

    shutil.copytree(meds, everyone)
    split_file = everyone / "metadata" / "subject_splits.parquet"
    pl.read_parquet(split_file).with_columns(pl.lit("train").alias("split")).write_parquet(split_file)
    r = run("pretrain", "--meds", everyone, "--out", tmp_path / "enc_all", "--epochs", "1", "--hidden", "16")
    assert r.exit_code == 0, r.output
    r = run("train", "--meds", meds, "--labels", _labels(data), "--out", tmp_path / "m2", "--init",
            tmp_path / "enc_all")
    assert r.exit_code == 2 and "validation patients were pretraining patients" in r.output
    assert "patients.json" in r.output
    r = run("train", "--meds", meds, "--out", tmp_path / "m3", "--init", tmp_path / "m")  # a model, not an encoder
    assert r.exit_code == 2 and "not a pretrained encoder" in r.output
    r = run("train", "--meds", meds, "--out", tmp_path / "m4", "--init", tmp_path / "enc", "--hidden", "64")
    assert r.exit_code == 2 and "hidden 64 (encoder 16)" in r.output
    r = run("train", "--meds", meds, "--out", tmp_path / "m5", "--probe")  # a probe of what?
    assert r.exit_code == 2 and "--init" in r.output
    r = run("pretrain", "--out", tmp_path / "enc2")
    assert r.exit_code == 2 and "--meds" in r.output


def test_an_init_path_that_is_no_directory_points_at_pretrain_not_train(tmp_path):
    """`--init` takes an encoder: a missing path or a file is answered with pretrain's output, not train's."""
    (tmp_path / "a_file").write_text("x")
    for path in (tmp_path / "missing", tmp_path / "a_file"):
        with pytest.raises(DataError) as e:
            load_encoder(path)
        assert "ehrdx pretrain wrote" in str(e.value) and "ehrdx train" not in str(e.value)


def test_events_of_codes_the_encoder_never_saw_are_counted(data, tmp_path):
    # an encoder pretrained on other coding: every event is read as the unknown code, which train did not say
    from ehrdx.data.meds import normalise_events
    from ehrdx.data.store import build_store
    from ehrdx.events_pipeline import unseen_code_events

    frame = pl.DataFrame({"subject_id": [1, 1, 2], "time": ["2020-01-01", "2020-02-01", "2020-01-01"],
                          "code": ["OTHER//A", "OTHER//B", "OTHER//A"], "numeric_value": [None, None, None]},
                         schema={"subject_id": pl.Int64, "time": pl.Utf8, "code": pl.Utf8, "numeric_value": pl.Float64})
    st = build_store([normalise_events(frame, "other.csv")], tmp_path / "store")
    vocab = data["enc"].input_encoder  # the encoder's input vocabulary, which a model started from it reads with
    said = unseen_code_events(vocab, st, np.arange(len(st)))
    assert said == {"events_with_unseen_codes": 3, "unseen_codes": 2, "events_read": 3}
    assert unseen_code_events(vocab, st, np.arange(0)) == {}
    # through train --init: data coded otherwise than the encoder's (other patients: no overlap to refuse)
    rows = [f"{900000 + p},2020-0{m}-01,OTHER//{'A' if (p + m) % 3 else 'B'}" for p in range(40) for m in range(1, 7)]
    events = tmp_path / "events.csv"
    events.write_text("subject_id,time,code\n" + "\n".join(rows) + "\n")
    r = run("train", "--events", events, "--labels", "prefix:OTHER//", "--init", data["out"] / "gru", "--epochs", "1",
            "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    unseen = json.loads((tmp_path / "m" / "metrics.json").read_text())["train_summary"]["codes_unknown_to_the_encoder"]
    assert unseen["events_with_unseen_codes"] == unseen["events_read"] > 0
    said = " ".join(r.output.split())
    assert "(100%) have one of 2 code(s) outside the pretrained encoder's vocabulary" in said
    assert "most of the data: pretrain on data coded as this data is" in said


def test_probe_without_init_is_refused_in_the_command_s_words_before_the_data_is_read(tmp_path):
    # it said 'give init=ENCODER_DIR (--init), or leave probe out' (the estimator's terms), after the data
    r = run("train", "--events", tmp_path / "absent.csv", "--probe", "--out", tmp_path / "m")
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "option --probe trains the label head" in said
    assert "give --init ENCODER_DIR" in said and "init=" not in said
