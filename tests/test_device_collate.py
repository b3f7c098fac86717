"""Batches gathered and collated with tensor indexing on the device (data/device_collate.py) are the
numpy collate's batches: run here on the CPU, where the same code checks itself against data/sequences.py."""

import dataclasses

import numpy as np
import pytest
import torch

from ehrdx.data.bits import BitTable
from ehrdx.data.device_collate import DeviceTable
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.data.sparse import SparseTable
from ehrdx.models.sequence import SequenceConfig, SequenceModel
from ehrdx.train.loop import TrainConfig, predict_logits, train_model

# float fields computed, not copied, where numpy and torch may round differently (log1p of float64 in
# another implementation, a float64 sum in another order): all within float32 rounding
COMPUTED = {"time_feats", "prior_weights", "prior_features"}


@pytest.fixture(scope="module")
def parts(labelled_store):
    _, _, store, clf = labelled_store(150, 9, "devcol")
    rows = np.arange(len(store))
    encoder = EventEncoder.fit(store, rows[:100])  # codes unseen in training map to 0, as in a real fit
    return store, clf, encoder, rows


def _set(parts, rows, context=None, new_onset=False):
    store, clf, encoder, _ = parts
    return SequenceSet(store, clf.samples(store, rows, require_labels=False), encoder, new_onset=new_onset,
                       context=context)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # a GPU session checks CUDA too


def _same(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not isinstance(x, torch.Tensor):
            assert x == y, f.name
            continue
        y = y.cpu()
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape, f.name
        if f.name in COMPUTED or (x.is_floating_point() and b.y.device.type != "cpu"):  # other kernels on a GPU
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6, msg=f.name)
        else:
            assert torch.equal(x, y), f.name  # index fields, and floats that are copies or one float32 op


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("context", [None, 3])
def test_the_device_collate_gives_the_numpy_collates_batch(parts, context, device):
    ds = _set(parts, parts[3], context, new_onset=True)
    dev = ds.collate_on(device) and ds.device_collate
    assert dev.y_table.sparse and dev.mask_table.sparse  # the SparseTables' own arrays on the device
    rng = np.random.default_rng(0)
    picks = [np.arange(ds.n_sequences), rng.permutation(ds.n_sequences)[:17], np.array([ds.n_sequences - 1]),
             np.argsort(-ds.seq_nv)[:5]]
    for seqs in picks:
        _same(ds.collate(seqs), dev.collate(seqs))
        _same(ds.collate(seqs, sources=True), dev.collate(seqs, sources=True))
    if context is not None:
        b = dev.collate(picks[0])
        assert b.prior_ids is not None and len(b.prior_ids) > 0  # some windows have an earlier past


@pytest.mark.parametrize("device", DEVICES)
def test_the_device_collate_never_reads_a_size_back_from_the_device(parts, device, monkeypatch):
    """Every output size is summed on the host (a read-back would make the host wait for the GPU's queue
    each batch: 0.39-0.43 of the ready-batch rate on the H200, BENCHMARKS.md). On the CPU: each range
    gather is given its length; on a GPU: CUDA's sync debug mode raises on any synchronising call."""
    from ehrdx.data import device_collate

    ds = _set(parts, parts[3], None, new_onset=True)
    dev = ds.collate_on(device) and ds.device_collate
    given = []
    real = device_collate.ranges

    def checked(starts, ends, total=None):
        given.append(total)
        out = real(starts, ends, total)
        return out

    monkeypatch.setattr(device_collate, "ranges", checked)
    seqs = np.random.default_rng(1).permutation(ds.n_sequences)[:40]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        batch = dev.collate(seqs)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert len(given) >= 6 and all(t is not None for t in given)  # visits, events, static, samples, y, mask
    _same(ds.collate(seqs), batch)


def test_batches_go_through_the_device_collate_when_asked_and_back(parts):
    ds = _set(parts, parts[3])
    ds.max_cells = ds.y_bits.shape[1] * 30  # and steps in parts too
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    plain = list(ds.batches(16, shuffle=True, generator=g1))
    assert ds.collate_on("cpu")
    on = list(ds.batches(16, shuffle=True, generator=g2))
    assert len(plain) == len(on) and any(b.parts > 1 for b in on)
    for a, b in zip(plain, on):
        _same(a, b)
    assert not ds.collate_on(None) and ds.device_collate is None


@pytest.mark.parametrize("context", [None, 3])
def test_a_seeded_fit_through_the_device_collate_gives_the_same_probabilities(parts, context):
    rows = parts[3]
    probs = []
    for on in (False, True):
        train, val = _set(parts, rows[:100], context), _set(parts, rows[100:], context)
        if on:
            train.collate_on("cpu"), val.collate_on("cpu")
        torch.manual_seed(0)
        model = SequenceModel(SequenceConfig(train.encoder.n_codes, train.y_bits.shape[1], "gru",
                                             n_numeric=len(train.numeric_ids), hidden=16, layers=1,
                                             prior_summary=context is not None))
        torch.manual_seed(1)  # the dropout draws: the same batches in the same order draw the same masks
        train_model(model, train, val, TrainConfig(batch_size=16, max_epochs=2, seed=2))
        probs.append(torch.sigmoid(torch.from_numpy(predict_logits(model, val))).numpy())
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_a_device_table_reads_the_rows_of_a_sparse_a_packed_and_a_dense_table(device):
    rng = np.random.default_rng(5)
    dense = rng.random((40, 19)) < 0.2
    dense[3] = True  # a full row
    dense[7] = False  # an empty one
    dense[11, :15] = True  # mostly set: listed by its clear entries
    sparse = SparseTable.from_dense(dense)
    assert sparse.flip[[3, 11]].all() and not sparse.flip[7]
    rows = np.array([11, 0, 3, 7, 7, 39, 11, 20])  # repeats and any order, as a batch's samples come
    for table in (sparse, BitTable.from_dense(dense), dense):
        t = DeviceTable(table, torch.device(device))
        assert t.sparse == (table is sparse)
        if t.sparse:  # the listed columns cross as the table keeps them: 2 bytes each
            assert t.cols.dtype == torch.int16 and len(t.cols) == sparse.n_listed
        got = t.rows(torch.as_tensor(rows, device=device)).cpu()
        assert got.dtype == torch.bool and torch.equal(got, torch.from_numpy(dense[rows]))  # bools: exact
        assert t.rows(torch.zeros(0, dtype=torch.int64, device=device)).shape == (0, 19)


def test_a_set_whose_tables_are_bit_packed_collates_on_the_device_as_with_numpy(parts):
    ds = _set(parts, parts[3], new_onset=True)
    assert isinstance(ds.y_bits, SparseTable) and isinstance(ds.mask_bits, SparseTable)  # as samples build them
    ds.y_bits, ds.mask_bits = BitTable.from_dense(ds.y_bits.dense()), BitTable.from_dense(ds.mask_bits.dense())
    dev = ds.collate_on("cpu") and ds.device_collate
    assert not dev.y_table.sparse and not dev.mask_table.sparse
    seqs = np.random.default_rng(1).permutation(ds.n_sequences)[:23]
    _same(ds.collate(seqs), dev.collate(seqs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a side stream needs a GPU (run in a GPU session)")
def test_batches_built_in_a_thread_on_a_side_stream_train_the_same_model(parts):
    from ehrdx.train import device as device_mod

    defaults = device_mod.DEVICE_COLLATE, device_mod.DEVICE_COLLATE_THREAD

    def fit(thread):
        ds = _set(parts, parts[3][:120])
        # built on the device whatever the batch size (by default only from MIN_DEVICE_BATCH patients)
        device_mod.DEVICE_COLLATE, device_mod.DEVICE_COLLATE_THREAD = True, thread
        try:
            torch.manual_seed(0)
            model = SequenceModel(SequenceConfig(n_codes=ds.encoder.n_codes, n_labels=ds.y_bits.shape[1],
                                                 n_numeric=len(ds.numeric_ids), hidden=16))
            train_model(model, ds, None, TrainConfig(batch_size=16, max_epochs=2, device="cuda", seed=0))
            return predict_logits(model, ds)
        finally:
            device_mod.DEVICE_COLLATE, device_mod.DEVICE_COLLATE_THREAD = defaults

    np.testing.assert_allclose(fit(True), fit(False), atol=2e-3)  # CUDA atomics in embedding_bag backward


def test_event_and_visit_tables_are_made_once_per_store_device_and_encoder(parts):
    """What collate reads per event and per visit is made once (a batch only gathers rows of it): sets of one
    store and encoder share it; a set with another encoder makes its own, and the first one's is let go."""
    from ehrdx.data.device_collate import _ON_DEVICE

    store, clf, _, rows = parts
    a, b = _set(parts, rows), _set(parts, rows[:40])
    da, db = (s.collate_on("cpu") and s.device_collate for s in (a, b))
    assert da.ev_z is db.ev_z and da.ev_code is db.ev_code and da.visit_feats is db.visit_feats
    assert da.visit_feats.shape == (len(store.visit_starts), 6) and da.ev_z.shape == (len(store.codes),)
    other = SequenceSet(store, clf.samples(store, rows, require_labels=False), EventEncoder.fit(store, rows[:20]))
    do = other.collate_on("cpu") and other.device_collate
    assert do.ev_code is not da.ev_code and do.visit_feats is da.visit_feats  # visits: the store's alone
    events = [k for k in _ON_DEVICE[store] if isinstance(k, tuple) and k[:2] == (torch.device("cpu"), "events")]
    assert len(events) == 1  # the other encoder's tables replaced the first's (on this device)
    _same(other.collate(np.arange(other.n_sequences)), do.collate(np.arange(other.n_sequences)))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_the_event_and_visit_tables_do_not_depend_on_their_chunks(parts, chunk):
    """They are made a chunk of events / visits at a time (bounded memory on a big store): any chunk size gives
    the one-chunk tables, across every boundary."""
    from ehrdx.data.device_collate import event_tables, visit_features

    store, _, _, rows = parts
    ds = _set(parts, rows)
    args = (store, ds._code_map, ds._mean, ds._std, ds._numeric_col)
    whole = event_tables(*args, chunk=1 << 40)
    for a, b in zip(whole, event_tables(*args, chunk=chunk), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(visit_features(store, chunk=1 << 40), visit_features(store, chunk=chunk))
    assert len(whole[0]) == len(store.codes) > 64 and len(store.visit_starts) > 64  # several chunks at 64 too
