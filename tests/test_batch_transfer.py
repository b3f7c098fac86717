"""Host batches cross to a GPU packed in one buffer (Batch.pack, one copy a batch): a packed batch unpacks to
itself, every field and every part of a step; on a GPU a seeded fit with packed batches trains the model that
a copy per field trains."""

import dataclasses

import numpy as np
import pytest
import torch

from ehrdx.data.batch import PACK_ALIGN
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.models.sequence import SequenceConfig, SequenceModel
from ehrdx.train import device as device_mod
from ehrdx.train.loop import TrainConfig, predict_logits, train_model


@pytest.fixture(scope="module")
def sets(labelled_store):
    _, _, store, clf = labelled_store(140, 13, "transfer")
    rows = np.arange(len(store))
    encoder = EventEncoder.fit(store, rows[:100])

    def make(r, context=None):
        return SequenceSet(store, clf.samples(store, r, require_labels=False), encoder, new_onset=True,
                           context=context)

    return make


def _same(a, b):
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y.cpu()), f.name  # bytes copied
        else:
            assert x == y, f.name


@pytest.mark.parametrize("context", [None, 2])
def test_a_packed_batch_unpacks_to_itself(sets, context):
    ds = sets(np.arange(100), context)
    for seqs in (np.arange(ds.n_sequences), np.array([3]), np.array([], dtype=np.int64)):
        for sources in (False, True):
            b = ds.collate(seqs, sources=sources)
            p = b.pack()
            assert p.buf.dtype == torch.uint8 and p.buf.dim() == 1 and not p.buf.is_pinned()
            assert all(off % PACK_ALIGN == 0 for *_, off, _n in p.layout)  # every dtype's view is aligned
            assert {name for name, *_ in p.layout} == {f.name for f in dataclasses.fields(b)
                                                       if isinstance(getattr(b, f.name), torch.Tensor)}
            u = p.unpack()
            _same(b, u)
            for f in dataclasses.fields(b):
                if getattr(b, f.name) is None:
                    assert getattr(u, f.name) is None, f.name  # absent fields stay absent


def test_the_parts_of_a_step_keep_their_step_counts(sets):
    ds = sets(np.arange(100))
    ds.max_cells = ds.y_bits.shape[1] * 12  # 12 samples a batch at most: a step comes in parts
    parts = list(ds.step_batches(np.arange(30)))
    assert len(parts) > 1 and {b.parts for b in parts} == {len(parts)}
    for b in parts:  # the part and step counts are plain fields: they travel beside the buffer
        _same(b, b.pack().unpack())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_packed_batches_train_the_model_a_copy_per_field_trains(sets, monkeypatch):
    train, test = sets(np.arange(100)), sets(np.arange(100, 140))
    b = train.collate(np.arange(8)).pack(pin=True)
    assert b.buf.is_pinned()
    _same(train.collate(np.arange(8)), b.to("cuda", non_blocking=True).unpack())
    preds = []
    for packed in (False, True):
        monkeypatch.setattr(device_mod, "PACK_BATCHES", packed)
        torch.manual_seed(0)
        model = SequenceModel(SequenceConfig(train.encoder.n_codes, train.y_bits.shape[1], "gru",
                                             n_numeric=len(train.numeric_ids), hidden=16, layers=1, dropout=0.0))
        train_model(model, train, None, TrainConfig(batch_size=8, max_epochs=2, device="cuda", seed=5))
        preds.append(predict_logits(model, test))
    np.testing.assert_allclose(preds[0], preds[1], rtol=2e-3, atol=2e-3)  # GPU kernels: not bit-stable
