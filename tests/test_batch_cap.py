"""A cap on samples per batch: a step of whole sequences whose dense [samples, labels] blocks would pass
it comes in parts, and the training loop accumulates the parts into one optimiser step that computes what
the whole batch would (same steps, same schedule, same weights up to float summation order)."""

import numpy as np
import pytest
import torch

from ehrdx.data.batches import ConcatSet
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import open_store
from ehrdx.models.sequence import SequenceConfig, SequenceModel
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.task import label_first_times
from ehrdx.train.loop import TrainConfig, evaluate_loss, predict_logits, train_model


@pytest.fixture(scope="module")
def sets(labelled_store):
    _, _, store, clf = labelled_store(160, 5, "cap")
    rows = np.arange(len(store))
    encoder = EventEncoder.fit(store, rows)

    def make(r):
        return SequenceSet(store, clf.samples(store, r, require_labels=False), encoder)

    return make(rows[:120]), make(rows[120:])


def _cap(ds: SequenceSet, rows: int | None) -> SequenceSet:
    ds.max_cells = ds.y_bits.shape[1] * rows if rows else 1 << 40
    return ds


def _model(ds: SequenceSet, encoder: str = "gru") -> SequenceModel:
    # No dropout: its random masks are drawn per forward call, so parts would draw other ones (training in
    # parts then differs from whole batches by those draws only).
    torch.manual_seed(0)
    return SequenceModel(SequenceConfig(ds.encoder.n_codes, ds.y_bits.shape[1], encoder,
                                        n_numeric=len(ds.numeric_ids), hidden=16, layers=1, dropout=0.0))


def test_parts_hold_whole_sequences_within_the_cap_and_carry_the_steps_counts(sets):
    train, _ = sets
    _cap(train, 25)
    seqs = np.arange(train.n_sequences)[:40]
    parts = train.step_parts(seqs)
    assert len(parts) > 2
    np.testing.assert_array_equal(np.concatenate(parts), seqs)  # in order, nothing lost or repeated
    so = train.seq_sample_offsets
    rows = [int((so[p + 1] - so[p]).sum()) for p in parts]
    assert all(r <= 25 or len(p) == 1 for r, p in zip(rows, parts))
    # greedy: a part closes only when its next sequence would not fit
    assert all(r + int(so[p[0] + 1] - so[p[0]]) > 25 for r, p in zip(rows[:-1], parts[1:]))
    whole = train.collate(seqs)
    got = list(train.step_batches(seqs, "cpu"))
    assert [b.part for b in got] == list(range(len(parts))) and {b.parts for b in got} == {len(parts)}
    assert {b.step_rows for b in got} == {len(whole)}
    assert {b.step_known for b in got} == {int(whole.y_mask.sum())}
    assert sorted(np.concatenate([b.sample_index.numpy() for b in got]).tolist()) == sorted(
        whole.sample_index.numpy().tolist())
    _cap(train, None)
    assert train.step_parts(seqs) == [seqs] or len(train.step_parts(seqs)) == 1


def test_a_single_sequence_over_the_cap_is_a_part_of_its_own(sets):
    train, _ = sets
    so = train.seq_sample_offsets
    counts = so[1:] - so[:-1]
    big = int(np.argmax(counts))
    _cap(train, max(int(counts[big]) - 1, 1))
    parts = train.step_parts(np.array([big, (big + 1) % train.n_sequences]))
    assert [len(p) for p in parts] == [1, 1]
    _cap(train, None)


def _mean_square(model, batch, logits):
    """An extra loss term that is a mean over the batch's samples (as `ehrdx update`'s distillation is)."""
    return 0.05 * (logits**2).mean()


@pytest.mark.parametrize("encoder,extra", [("gru", None), ("transformer", None), ("gru", _mean_square)])
def test_training_in_parts_gives_the_same_model_as_whole_batches(sets, encoder, extra):
    train, val = sets
    cfg = TrainConfig(batch_size=32, max_epochs=2, lr=5e-3, seed=3, patience=5)
    results = []
    for cap in (None, 20):
        _cap(train, cap), _cap(val, cap)
        model = _model(train, encoder)
        history = train_model(model, train, val, cfg, extra_loss=extra)
        results.append((history, model.state_dict(), predict_logits(model, val), evaluate_loss(model, val)))
    (h1, w1, p1, l1), (h2, w2, p2, l2) = results
    assert h1.steps == h2.steps > 0  # parts are not steps
    np.testing.assert_allclose(h1.train_loss, h2.train_loss, rtol=1e-5)
    for k in w1:
        if k.endswith("qkv.bias"):
            # its key third has a zero gradient (softmax ignores a shift shared by all keys): float noise,
            # which AdamW scales up to lr-sized moves that change no output
            continue
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)
    # Float sums in another order only: probabilities agree to 1e-5
    np.testing.assert_allclose(1 / (1 + np.exp(-p1)), 1 / (1 + np.exp(-p2)), atol=1e-5)
    assert abs(l1 - l2) < 1e-5
    _cap(train, None), _cap(val, None)


def test_a_concatenated_set_passes_every_part_of_a_step(sets):
    train, val = sets
    _cap(train, 15), _cap(val, 15)
    both = ConcatSet(train, val)
    g = torch.Generator().manual_seed(0)
    batches = list(both.batches(16, shuffle=True, generator=g))
    seen = np.concatenate([b.sample_index.numpy() for b in batches])
    assert sorted(seen.tolist()) == list(range(len(both)))
    steps = sum(b.part == b.parts - 1 for b in batches)
    assert steps == -(-train.n_sequences // 16) + -(-val.n_sequences // 16) < len(batches)
    _cap(train, None), _cap(val, None)



def _ddp_worker(rank: int, store_dir: str, label_map: str, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    from ehrdx.data.store import EventStore

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        store = EventStore(store_dir)
        clf = EHRClassifier(labels=f"map:{label_map}")
        clf.resolve_settings("events")
        rows = np.arange(len(store))[:80]
        clf.label_vocab_ = LabelVocab(sorted(label_first_times(store, rows, clf.selector_)))
        ds = SequenceSet(store, clf.samples(store, rows, require_labels=False), EventEncoder.fit(store, rows))
        # whole steps everywhere, then rank 0 in parts of 12 samples and rank 1 whole
        for name, cap in (("whole", None), ("parts", 12 if rank == 0 else None)):
            model = _model(_cap(ds, cap))
            history = train_model(model, ds, None, TrainConfig(batch_size=32, max_epochs=2, lr=5e-3, seed=3))
            np.savez(f"{out}/{name}_{rank}.npz", steps=history.steps,
                     **{k: v.numpy() for k, v in model.state_dict().items()})
        dist.barrier()  # both done before either tears the group down (a gloo abort was seen once under load)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch: ~10 s on an idle 2-core box
def test_processes_whose_steps_come_in_different_numbers_of_parts_train_together(tmp_path):
    """Under torchrun every process takes the same steps; a step's parts accumulate without a gradient
    exchange until its last part, so one process may cut its share into parts and another not."""
    import socket

    import torch.multiprocessing as mp

    paths = write_longitudinal(generate_longitudinal(80, seed=5), tmp_path / "c")
    open_store(meds=paths["meds"], store_dir=tmp_path / "store")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(paths["label_map"]), port, str(tmp_path)), nprocs=2,
             join=True)
    w = {(n, r): dict(np.load(tmp_path / f"{n}_{r}.npz")) for n in ("whole", "parts") for r in (0, 1)}
    assert int(w["parts", 0]["steps"]) == int(w["parts", 1]["steps"]) == int(w["whole", 0]["steps"]) > 0
    for k, v in w["whole", 0].items():
        np.testing.assert_array_equal(w["parts", 0][k], w["parts", 1][k])  # exact by construction: both apply the same all-reduced gradients
        np.testing.assert_allclose(w["parts", 0][k], v, atol=1e-5, rtol=1e-4, err_msg=k)  # and match whole steps
