"""Batches packed in one buffer (Batch.pack, how host batches cross to a GPU) unpack to themselves; batches
collated in worker processes (train/workers.py) are the single-process batches, in the same order, and a
seeded fit with them trains the same model. Run here on the CPU, where COLLATE_WORKERS forces the workers;
on a GPU the fit is also checked there."""

import dataclasses

import numpy as np
import pytest
import torch

from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.models.sequence import SequenceConfig, SequenceModel
from ehrdx.train import device as device_mod
from ehrdx.train.device import collate_workers, device_batches
from ehrdx.train.loop import TrainConfig, predict_logits, train_model
from ehrdx.train.workers import worker_batches


@pytest.fixture(scope="module")
def sets(labelled_store):
    _, _, store, clf = labelled_store(140, 13, "workers")
    rows = np.arange(len(store))
    encoder = EventEncoder.fit(store, rows[:100])

    def make(r):
        return SequenceSet(store, clf.samples(store, r, require_labels=False), encoder, new_onset=True)

    return make(rows[:100]), make(rows[100:])


@pytest.fixture
def forced(monkeypatch):
    def force(n):
        monkeypatch.setattr(device_mod, "COLLATE_WORKERS", n)

    return force


def _same(a, b):
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f.name  # the same numpy code on the same arrays
        else:
            assert x == y, f.name


@pytest.mark.parametrize("context", [None, 2])
def test_a_packed_batch_unpacks_to_itself(sets, context):
    train, _ = sets
    ds = SequenceSet(train.store, train.samples, train.encoder, context=context)
    for seqs in (np.arange(ds.n_sequences), np.array([3]), np.array([], dtype=np.int64)):
        for sources in (False, True):
            b = ds.collate(seqs, sources=sources)
            p = b.pack()
            assert p.buf.dtype == torch.uint8 and p.buf.dim() == 1 and not p.buf.is_pinned()
            assert all(off % 16 == 0 for *_, off, _n in p.layout)  # every dtype's view is aligned
            u = p.unpack()
            _same(b, u)
            assert all(getattr(u, f.name) is None for f in dataclasses.fields(b) if getattr(b, f.name) is None)
    parts = list(replace_cap(train, 12).step_batches(np.arange(30)))
    assert len(parts) > 1
    for b in parts:  # a part's step counts are plain fields: they travel beside the buffer
        _same(b, b.pack().unpack())
    got = list(device_batches((b.pack() for b in parts), torch.device("cpu"), packed=True))
    for a, b in zip(parts, got, strict=True):
        _same(a, b)
    replace_cap(train, None)


def replace_cap(ds, rows):
    ds.max_cells = ds.y_bits.shape[1] * rows if rows else 1 << 40
    return ds


@pytest.mark.parametrize("cap", [None, 12])
def test_worker_batches_are_the_single_process_batches_in_order(sets, cap):
    train, _ = sets
    replace_cap(train, cap)  # 12 samples: steps come in parts
    plan = train.plan(16, shuffle=True, generator=torch.Generator().manual_seed(3), bucket=True)
    want = list(train.batches(16, shuffle=True, generator=torch.Generator().manual_seed(3), bucket=True))
    got = [p.unpack() for p in worker_batches(train, plan, workers=2)]
    assert len(got) == len(want) > len(plan) if cap else len(got) == len(want) == len(plan)
    for a, b in zip(want, got):
        _same(a, b)
    assert list(worker_batches(train, [], workers=2)) == []
    replace_cap(train, None)


def test_a_seeded_fit_with_workers_trains_the_same_model(sets, forced):
    train, test = sets

    def fit(workers):
        forced(workers)
        torch.manual_seed(0)
        model = SequenceModel(SequenceConfig(train.encoder.n_codes, train.y_bits.shape[1], "gru",
                                             n_numeric=len(train.numeric_ids), hidden=16, layers=1))
        h = train_model(model, train, None, TrainConfig(batch_size=8, max_epochs=2, device="cpu", seed=5))
        assert h.steps == 2 * -(-train.n_sequences // 8)
        return predict_logits(model, test), torch.random.get_rng_state()

    (p0, s0), (p2, s2) = fit(0), fit(2)
    assert torch.equal(s0, s2)  # the loader draws nothing from the global generator (dropout's masks)
    # the same batches in the same order through the same process and threads: equal up to float noise only
    np.testing.assert_allclose(p0, p2, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_workers_and_the_packed_thread_train_the_same_model(sets, forced):
    train, test = sets
    preds = []
    for workers in (0, 2):
        forced(workers)
        torch.manual_seed(0)
        model = SequenceModel(SequenceConfig(train.encoder.n_codes, train.y_bits.shape[1], "gru",
                                             n_numeric=len(train.numeric_ids), hidden=16, layers=1, dropout=0.0))
        train_model(model, train, None, TrainConfig(batch_size=8, max_epochs=2, device="cuda", seed=5))
        preds.append(predict_logits(model, test))
    np.testing.assert_allclose(preds[0], preds[1], rtol=2e-3, atol=2e-3)  # GPU kernels: not bit-stable


def test_an_error_in_a_worker_is_raised_in_the_training_process(sets):
    train, _ = sets
    bad = np.array([train.n_sequences + 5])  # no such sequence
    with pytest.raises(IndexError):
        list(worker_batches(train, [np.arange(4), bad], workers=1))


def test_who_collates_where(sets, forced, monkeypatch):
    train, _ = sets
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    forced(None)
    assert collate_workers(train, cpu, False) == 0  # the CPU: the loop's own thread, nothing forked
    monkeypatch.setattr(device_mod, "auto_workers", lambda: 3)
    assert collate_workers(train, cuda, False) == 3  # a GPU: the auto number
    assert collate_workers(train, cuda, True) == 0  # batches built on the GPU: nothing to collate on the host
    assert collate_workers(object(), cuda, False) == 0  # a set without an epoch plan (tables): the thread
    forced(2)
    assert collate_workers(train, cpu, False) == 2


def test_the_auto_number_leaves_cores_to_the_loop(monkeypatch):
    for cores, want in [(1, 0), (2, 0), (3, 1), (6, 4), (64, 4)]:
        monkeypatch.setattr(device_mod.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert device_mod.auto_workers() == want
