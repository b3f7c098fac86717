"""Typed batches: named fields, moved as one object, and the one carried-forward numeric block that
training and explanations share (explanations gate it per event)."""

import dataclasses

import numpy as np
import pytest
import torch

from ehrdx.data.batch import SequenceBatch, TableBatch
from ehrdx.data.sequences import EventEncoder, SequenceSet, numeric_block, numeric_sources
from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store
from ehrdx.train.device import device_batches


def test_numeric_sources_keep_the_last_value_of_a_visit_and_carry_it_forward_within_its_sequence():
    # Two sequences: visits 0-3 of the first, visit 0-1 of the second; two numeric columns.
    vis_pos = np.array([0, 1, 2, 3, 0, 1])
    # events: (visit, column): two values of column 0 in visit 0 (the later wins), one in visit 2,
    # column 1 once in visit 3 (the first sequence's last visit), an event without a column in visit 1,
    # and column 0 once in the second sequence's visit 1 (nothing carried in from the first sequence)
    owner = np.array([0, 0, 1, 2, 3, 5])
    columns = np.array([0, 0, -1, 0, 1, 0])
    z = np.array([1.0, 2.0, 9.0, 3.0, 4.0, 5.0], dtype=np.float32)
    now, last = numeric_sources(columns, owner, vis_pos, 2)
    assert now[:, 0].tolist() == [1, -1, 3, -1, -1, 5]
    assert now[:, 1].tolist() == [-1, -1, -1, 4, -1, -1]
    assert last[:, 0].tolist() == [-1, 1, 1, 3, -1, -1]  # not carried into the second sequence
    assert last[:, 1].tolist() == [-1, -1, -1, -1, -1, -1]
    block = numeric_block(z, now, last)
    assert block.dtype == np.float32 and block.shape == (6, 8)
    np.testing.assert_array_equal(block[:, 0], [2, 0, 3, 0, 0, 5])  # value at the visit
    np.testing.assert_array_equal(block[:, 2], [1, 0, 1, 0, 0, 1])  # measured
    np.testing.assert_array_equal(block[:, 4], [0, 2, 2, 3, 0, 0])  # last value before the visit
    np.testing.assert_array_equal(block[:, 6], [0, 1, 1, 1, 0, 0])  # has a last value


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    paths = write_longitudinal(generate_longitudinal(200, seed=2), out)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}")
    clf.resolve_settings("events")  # what fit() sets first, for the hand-fitted parts below
    rows = np.arange(len(store))
    from ehrdx.tasks.labels import LabelVocab
    from ehrdx.tasks.task import label_first_times

    clf.label_vocab_ = LabelVocab(sorted(label_first_times(store, rows, clf.selector_)))
    encoder = EventEncoder.fit(store, rows)
    return SequenceSet(store, clf.samples(store, rows, require_labels=False), encoder)


def test_a_sequence_batch_is_typed_and_moves_as_one_object(dataset):
    batches = list(device_batches(dataset.batches(16), torch.device("cpu"), background=True))
    assert all(isinstance(b, SequenceBatch) and b.numeric_source is None for b in batches)
    assert sum(len(b) for b in batches) == len(dataset)
    b = batches[0]
    moved = b.to("cpu")
    assert type(moved) is SequenceBatch
    for f in dataclasses.fields(b):
        if isinstance(getattr(b, f.name), torch.Tensor):
            assert torch.equal(getattr(moved, f.name), getattr(b, f.name)), f.name
    table = TableBatch(dense=torch.zeros(2, 3), code_ids=torch.zeros(0, dtype=torch.long),
                       code_offsets=torch.zeros(2, dtype=torch.long), y=torch.zeros(2, 1),
                       y_mask=torch.ones(2, 1, dtype=torch.bool), sample_index=torch.arange(2))
    assert type(table.to("cpu", non_blocking=True)) is TableBatch and len(table) == 2


def test_gated_batches_come_from_the_training_batch_and_its_numeric_sources(dataset):
    seqs = np.arange(min(12, dataset.n_sequences))
    plain = dataset.collate(seqs)
    batch = dataset.collate(seqs, sources=True)
    assert torch.equal(plain.numeric, batch.numeric)  # asking for sources changes nothing the model reads
    K = len(dataset.numeric_ids)
    src = batch.numeric_source.numpy()
    assert src.shape == batch.numeric.shape and K > 0 and (src >= 0).any()
    # every source is an event of the entry's numeric code, at the entry's visit (value, measured) or at an
    # earlier visit of the same sequence (carried forward), and the value entries are its standardised value
    lengths = np.diff(np.append(batch.bag_offsets.numpy(), len(batch.code_ids)))
    event_visit = np.repeat(np.arange(len(lengths)), lengths)
    seq_of_visit = batch.visit_index.numpy() // batch.visit_mask.shape[1]
    z = (batch.value_weights / batch.code_weights).numpy()
    numeric = batch.numeric.numpy()
    v, c = np.nonzero(src >= 0)
    e = src[v, c]
    np.testing.assert_array_equal(batch.code_ids.numpy()[e], dataset.numeric_ids[c % K])
    carried = c >= 2 * K
    assert (event_visit[e][~carried] == v[~carried]).all()
    assert (event_visit[e][carried] < v[carried]).all()
    assert (seq_of_visit[event_visit[e]] == seq_of_visit[v]).all()
    value_entry = (c < K) | ((c >= 2 * K) & (c < 3 * K))
    np.testing.assert_allclose(numeric[v[value_entry], c[value_entry]], z[e[value_entry]], rtol=1e-5, atol=1e-6)
    assert (numeric[src < 0] == 0).all()

    E = len(batch.code_ids)
    same = batch.with_event_gates(torch.ones(E))
    for name in ("code_weights", "value_weights", "numeric"):
        assert torch.equal(getattr(same, name), getattr(batch, name)), name
    empty = batch.with_event_gates(torch.zeros(E))
    assert not empty.numeric.any() and not empty.code_weights.any() and not empty.value_weights.any()
    assert torch.equal(empty.time_feats, batch.time_feats)  # times, age and static facts stay
    # one numeric event off: exactly the entries it fills go to 0, the rest are unchanged
    i = int(e[0])
    gate = torch.ones(E)
    gate[i] = 0.0
    off = batch.with_event_gates(gate).numeric.numpy()
    assert (off[src == i] == 0).all() and (src == i).sum() >= 2
    np.testing.assert_array_equal(off[src != i], numeric[src != i])
    with pytest.raises(ValueError, match="sources=True"):
        plain.with_event_gates(torch.ones(E))
