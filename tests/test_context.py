"""Long histories: causal attention without a mask, a bounded context (windows of visits plus a summary of
the earlier ones), and sequences that stop at each patient's last prediction time."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

import ehrdx
from ehrdx.cli import app
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.data.windows import window_starts
from ehrdx.errors import ModelError
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import patient_splits
from ehrdx.explain import explain_sample
from ehrdx.models.sequence import SequenceConfig, SequenceModel


@pytest.fixture(scope="module")
def cohort(labelled_store):
    out, paths, store, clf = labelled_store(300, 7, "context")
    rows = np.arange(len(store))
    clf.encoder_ = EventEncoder.fit(store, rows)
    samples = clf.samples(store, rows, require_labels=False)
    return out, paths, store, clf, samples


def _model(encoder: str, ds: SequenceSet, n_labels: int, prior: bool = False) -> SequenceModel:
    torch.manual_seed(0)
    return SequenceModel(SequenceConfig(ds.encoder.n_codes, n_labels, encoder, n_numeric=len(ds.numeric_ids),
                                        hidden=32, layers=2, prior_summary=prior)).eval()


def _masked_reference(model: SequenceModel, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The Transformer as it was before is_causal: an explicit [B, 1, T, T] mask of causal & valid keys."""
    T = x.shape[1]
    allowed = (torch.ones(T, T, dtype=torch.bool).tril()[None] & valid[:, None, :])[:, None]
    for block in model.blocks:
        B, T, D = x.shape
        q, k, v = block.qkv(block.norm1(x)).view(B, T, 3, block.heads, D // block.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + block.out(a.transpose(1, 2).reshape(B, T, D))
        x = x + block.ff(block.norm2(x))
    return model.out_norm(x)


def test_causal_attention_without_a_mask_matches_the_masked_version_and_ignores_padding(cohort):
    _, _, store, clf, samples = cohort
    ds = SequenceSet(store, samples, clf.encoder_)
    m = _model("transformer", ds, len(clf.label_vocab_))
    seqs = np.argsort(-ds.seq_nv)[::7][:12]  # lengths from the longest down: much padding
    batch = ds.collate(seqs)
    valid = batch.visit_mask
    assert (~valid).sum() > valid.sum() // 4  # the check means something: a quarter or more is padding
    with torch.no_grad():
        h = m.encode(batch)
        x = m.in_norm(m.visit_inputs(batch))
        torch.testing.assert_close(h[valid], _masked_reference(m, x, valid)[valid], rtol=1e-4, atol=1e-5)
        noisy = torch.where(valid[..., None], x, 100 * torch.randn_like(x))  # garbage where padding is
        out = x
        for block in m.blocks:
            out = block(out)
        noisy_out = noisy
        for block in m.blocks:
            noisy_out = block(noisy_out)
    torch.testing.assert_close(noisy_out[valid], out[valid], rtol=1e-4, atol=1e-5)
    assert (noisy_out[~valid] - out[~valid]).abs().max() > 1  # padding itself did change


def test_windows_read_between_n_and_2n_visits_and_start_every_n():
    pos = np.arange(40)
    start = window_starts(pos, 8)
    assert start[:16].tolist() == [0] * 16 and start[16:24].tolist() == [8] * 8 and start[-1] == 24
    read = pos - start + 1
    assert (read <= 16).all() and (read >= np.minimum(pos + 1, 9)).all()
    assert (window_starts(pos, None) == 0).all()
    with pytest.raises(ValueError, match="positive"):
        window_starts(pos, 0)


def test_context_sequences_share_windows_and_stop_at_the_last_sample(cohort):
    _, _, store, clf, samples = cohort
    N = 3
    ds = SequenceSet(store, samples, clf.encoder_, context=N)
    whole = SequenceSet(store, samples, clf.encoder_)
    assert ds.seq_nv.max() <= 2 * N < whole.seq_nv.max()
    assert ds.n_sequences < len(samples)  # samples of a window still share its sequence
    # each sequence ends at its latest sample, and each sample is read at its own visit
    seq_of = np.repeat(np.arange(ds.n_sequences), np.diff(ds.seq_sample_offsets))
    order = ds.sample_order
    last = np.full(ds.n_sequences, -1)
    np.maximum.at(last, seq_of, ds.sample_pos[order])
    assert (last + 1 == ds.seq_nv).all()
    assert (ds.seq_start[seq_of] + ds.sample_pos[order] == samples.n_visits[order] - 1).all()
    # visits read: at most twice the visits up to each patient's last prediction time
    latest = np.zeros(len(store), dtype=np.int64)
    np.maximum.at(latest, samples.row, samples.n_visits)
    assert ds.seq_nv.sum() <= 2 * latest.sum()
    assert whole.seq_nv.sum() == latest[np.unique(whole.seq_row)].sum()


def test_visits_after_the_last_prediction_time_are_never_read(cohort):
    _, _, store, clf, _ = cohort
    vo = np.asarray(store.visit_offsets)
    rows = np.flatnonzero(np.diff(vo) >= 10)[:5]
    # one prediction time per patient, at the end of its 6th visit: the visits after it must not be read
    t = np.asarray(store.times)[np.asarray(store.visit_ends)[vo[rows] + 5] - 1]
    s = clf.samples(store, rows, times=(rows, t), require_labels=False)
    assert (s.n_visits == 6).all()
    for context in (None, 2):
        ds = SequenceSet(store, s, clf.encoder_, context=context)
        batch = ds.collate(np.arange(ds.n_sequences))
        assert int(batch.visit_mask.sum()) == (6 if context is None else 4) * len(rows)  # window 2..5
        assert int(batch.bag_offsets.shape[0]) == int((ds.seq_nv).sum())


def test_the_summary_counts_the_codes_before_the_window_and_times_run_from_the_first_visit(cohort):
    _, _, store, clf, samples = cohort
    ds = SequenceSet(store, samples, clf.encoder_, context=2)
    whole = SequenceSet(store, samples, clf.encoder_)
    seq = int(np.argmax(ds.seq_start))
    row, first = int(ds.seq_row[seq]), int(ds.seq_start[seq])
    assert first >= 4
    batch = ds.collate(np.array([seq]))
    vo, vs = np.asarray(store.visit_offsets), np.asarray(store.visit_starts)
    before = clf.encoder_.code_map(store)[np.asarray(store.codes)[vs[vo[row]]:vs[vo[row] + first]]]
    ids, counts = np.unique(before, return_counts=True)
    assert batch.prior_ids.tolist() == ids.tolist()
    w = np.log1p(counts) / np.log1p(counts).sum()
    np.testing.assert_allclose(batch.prior_weights.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(batch.prior_features.numpy()[0], [np.log1p(first) / 5, np.log1p(len(before)) / 10, 1],
                               rtol=1e-6)
    # the window's visits have the time features (time since the first visit, first-visit flag) they have
    # in the whole history: the same visits of the patient's whole-history sequence
    w_seq = int(np.flatnonzero((whole.seq_row == row) & (whole.seq_start == 0))[0])
    full = whole.collate(np.array([w_seq]))
    n = int(ds.seq_nv[seq])
    np.testing.assert_array_equal(batch.time_feats.numpy(), full.time_feats.numpy()[first:first + n])  # exact: the same elementwise numpy ops on the same visits


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_a_sample_alone_reads_the_same_window_as_in_the_whole_set(cohort, encoder):
    _, _, store, clf, samples = cohort
    ds = SequenceSet(store, samples, clf.encoder_, context=3)
    m = _model(encoder, ds, len(clf.label_vocab_), prior=True)
    deep = np.flatnonzero(samples.n_visits >= 9)[:6]
    with torch.no_grad():
        batch = ds.collate(np.arange(ds.n_sequences))
        every = m(batch).numpy()[np.argsort(batch.sample_index.numpy())]
        one = SequenceSet(store, samples.subset(deep), clf.encoder_, context=3)
        alone = m(one.collate(np.arange(one.n_sequences)))
        alone = alone.numpy()[np.argsort(one.collate(np.arange(one.n_sequences)).sample_index.numpy())]
    np.testing.assert_allclose(alone, every[deep], rtol=1e-4, atol=1e-5)


def test_context_is_a_setting_saved_with_the_model_and_refused_where_nothing_reads_sequences(cohort, tmp_path):
    _, paths, store, _, _ = cohort
    tr, va, te = patient_splits(store, paths["meds"], 0)
    clf = EHRClassifier(model="transformer", labels=f"map:{paths['label_map']}", hidden=16, layers=1,
                        max_epochs=1, context=3)
    assert clf.get_params()["context"] == 3
    clf.fit(store, tr, va)
    assert clf.model_.config.prior_summary
    clf.save(tmp_path / "m")
    back = ehrdx.load(tmp_path / "m")
    assert back.context == 3
    s = clf.samples(store, te, require_labels=False)
    np.testing.assert_allclose(back.predict_samples(store, s), clf.predict_samples(store, s), rtol=1e-5, atol=1e-6)
    # an explanation reads the sample's window, numbering visits in the patient's whole history
    deep = int(np.flatnonzero(s.n_visits >= 9)[0])
    start = int(window_starts(s.n_visits[deep : deep + 1] - 1, 3)[0])
    out = explain_sample(clf, store, s, deep, top_labels=1, top_events=50)
    vo, vs, ve = (np.asarray(a) for a in (store.visit_offsets, store.visit_starts, store.visit_ends))
    first = vo[s.row[deep]] + start
    assert out["events_read"] == int((np.minimum(ve[first:first + s.n_visits[deep] - start], s.cutoff[deep])
                                      - vs[first:first + s.n_visits[deep] - start]).sum())
    assert min(e["visit"] for e in out["labels"][0]["events"]) > start >= 3  # 1-based: visits 4 .. 9
    # a model directory from before the setting: no "context" in its params, loads as the whole history
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["params"]["context"] == 3 and cfg["model"]["prior_summary"] is True
    del cfg["params"]["context"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))  # config.json holds the checksums, has none
    assert ehrdx.load(tmp_path / "m").context is None
    for model in ("mlp", "logistic", "gbm"):
        with pytest.raises(ModelError, match="does not read visit sequences"):
            EHRClassifier(model=model, labels=f"map:{paths['label_map']}", context=3).fit(store, tr, va)
    with pytest.raises(ModelError, match="positive"):
        EHRClassifier(labels=f"map:{paths['label_map']}", context=0).fit(store, tr, va)


def test_context_on_the_command_line_trains_and_a_table_refuses_it(cohort, tmp_path, seed_table_path):
    _, paths, _, _, _ = cohort
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--meds", str(paths["meds"]), "--labels", f"map:{paths['label_map']}",
                            "--model", "gru", "--epochs", "1", "--hidden", "16", "--context", "4",
                            "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert ehrdx.load(tmp_path / "m").context == 4
    r = runner.invoke(app, ["train", str(seed_table_path), "--context", "4", "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "--context" in r.output
