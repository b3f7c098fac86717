"""The Transformer on packed visits (models/transformer.py): the same states as on the padded grid, causal,
its cheaper dropout, and a Transformer saved before the change loading and predicting the same."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ehrdx
from ehrdx.data.sequences import EventEncoder, SequenceSet
from ehrdx.data.synth import write_hospital
from ehrdx.estimator import EHRClassifier
from ehrdx.events_pipeline import open_store
from ehrdx.models.sequence import SequenceConfig, SequenceModel
from ehrdx.models.transformer import CausalBlock, VisitDropout, VisitLayout, causal_attention, length_groups
from ehrdx.tasks.labels import LabelVocab
from ehrdx.tasks.task import label_first_times

FIXTURES = Path(__file__).parent / "fixtures"
# Packed and padded runs add the same numbers, but attention kernels block the keys by the padded length, so
# sums may round differently: a tolerance, not equality.
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _grid(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(visit_index, visit_mask) of sequences of these lengths, padded at the end, as a batch has them."""
    T = max(lengths)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    return mask.flatten().nonzero()[:, 0], mask


def _padded_block(block: CausalBlock, x: torch.Tensor, visit_index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The block as it ran before: on the [B, T, D] grid (zeros at padding), read back at the visits."""
    B, T = mask.shape
    grid = x.new_zeros(B * T, x.shape[1]).index_copy(0, visit_index, x).view(B, T, -1)
    return block(grid).reshape(B * T, -1).index_select(0, visit_index)


def _packed_block(block: CausalBlock, x: torch.Tensor, visit_index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The block on packed visits, its rows put back in the batch's visit order."""
    layout = VisitLayout(visit_index, mask)
    return block(layout.pack(x), layout).index_select(0, layout.rows(visit_index))


def test_length_groups_hold_sequences_within_a_ratio_of_their_longest_and_short_ones_together():
    lengths = np.array([30, 1500, 1400, 20, 1300, 900, 70, 880, 60, 5])
    groups = length_groups(lengths, min_length=64, ratio=0.9)
    assert [lengths[g].tolist() for g in groups] == [[1500, 1400], [1300], [900, 880], [70], [60, 30, 20, 5]]
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))  # each sequence once
    assert len(length_groups(np.array([40, 3, 64]), min_length=64)) == 1


@pytest.mark.parametrize("lengths", [[300, 290, 200, 120, 70, 65, 30, 5, 1], [128] * 6, [50, 10, 1]])
def test_attention_on_packed_visits_equals_attention_on_the_padded_grid(lengths):
    visit_index, mask = _grid(lengths)
    layout = VisitLayout(visit_index, mask)
    torch.manual_seed(0)
    qkv = torch.randn(len(visit_index), 3 * 32)
    B, T = mask.shape
    padded = qkv.new_zeros(B * T, 96).index_copy(0, visit_index, qkv).view(B, T, 96)
    want = causal_attention(padded, heads=4).reshape(B * T, 32).index_select(0, visit_index)
    got = layout.attend(layout.pack(qkv), heads=4).index_select(0, layout.rows(visit_index))
    torch.testing.assert_close(got, want, **TOL)
    n_groups = len(layout.groups)
    assert n_groups == {9: 5, 6: 1, 3: 1}[len(lengths)]  # long mixed lengths are grouped; short or equal are not
    if len(set(lengths)) == 1:
        assert layout.groups[0][-1] is None  # no padding: attends in place, no scatter or gather


def test_a_later_visit_does_not_change_the_states_of_earlier_visits():
    torch.manual_seed(1)
    block = CausalBlock(32, heads=4, dropout=0.1).eval()
    lengths = [260, 250, 100, 40, 12]
    visit_index, mask = _grid(lengths)
    x = torch.randn(len(visit_index), 32)
    with torch.no_grad():
        before = _packed_block(block, x, visit_index, mask)
        torch.testing.assert_close(before, _padded_block(block, x, visit_index, mask), **TOL)
        # The 40-visit sequence gets 200 more visits: it moves to the longest group and the grid grows.
        longer = [260, 250, 100, 240, 12]
        visit_index2, mask2 = _grid(longer)
        starts, starts2 = np.cumsum([0, *lengths]), np.cumsum([0, *longer])
        old_rows = np.concatenate([np.arange(starts2[i], starts2[i] + n) for i, n in enumerate(lengths)])
        x2 = torch.randn(len(visit_index2), 32)
        x2[torch.from_numpy(old_rows)] = x
        after = _packed_block(block, x2, visit_index2, mask2)
    def group_sizes(vi, m):
        return [g[2] for g in VisitLayout(vi, m).groups]

    assert (group_sizes(visit_index, mask), group_sizes(visit_index2, mask2)) == ([2, 1, 2], [3, 1, 1])
    torch.testing.assert_close(after[torch.from_numpy(old_rows)], before, **TOL)
    assert starts[-1] == len(old_rows) and starts2[-1] == len(old_rows) + 200


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    """A few hospital-shaped patients: long histories of very different lengths."""
    out = tmp_path_factory.mktemp("hospital_tf")
    paths, _ = write_hospital(40, out, seed=2)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    rows = np.arange(len(store))
    clf = EHRClassifier(labels="prefix:ICD10CM//:1")
    clf.resolve_settings("events")  # what fit() sets first, for the hand-fitted parts below
    clf.label_vocab_ = LabelVocab.from_first_times(label_first_times(store, rows, clf.selector_))
    clf.encoder_ = EventEncoder.fit(store, rows)
    ds = SequenceSet(store, clf.samples(store, rows, require_labels=False), clf.encoder_)
    return ds, len(clf.label_vocab_)


def _padded_states(model: SequenceModel, batch) -> torch.Tensor:
    """The Transformer's sample states as computed before it ran on packed visits: every block on [B, T, H]."""
    x = model.drop(model.in_norm(model.visit_inputs(batch)))
    for block in model.blocks:
        x = block(x)
    h = model.out_norm(x)
    return h.reshape(-1, h.shape[-1]).index_select(0, batch.gather)


def test_model_states_on_packed_visits_equal_the_padded_computation_on_long_histories(hospital):
    ds, n_labels = hospital
    torch.manual_seed(0)
    m = SequenceModel(SequenceConfig(ds.encoder.n_codes, n_labels, "transformer", n_numeric=len(ds.numeric_ids),
                                     hidden=32, layers=2, dropout=0.0)).eval()  # no dropout: train = eval
    seqs = np.argsort(-ds.seq_nv)[::2][:12]  # lengths from the longest down: much padding, several groups
    batch = ds.collate(seqs)
    assert (~batch.visit_mask).sum() > batch.visit_mask.sum()  # more padding than visits on the grid
    assert len(VisitLayout(batch.visit_index, batch.visit_mask).groups) >= 3
    with torch.no_grad():
        torch.testing.assert_close(m.states(batch), _padded_states(m, batch), **TOL)
        grid = m.encode(batch)  # [B, T, H], zeros at padding
        assert grid.shape[:2] == batch.visit_mask.shape and not grid[~batch.visit_mask].any()
    m.train()  # the same gradients
    grads = []
    for states in (m.states, lambda b: _padded_states(m, b)):
        m.zero_grad()
        states(batch).square().sum().backward()
        grads.append(m.blocks[0].qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_the_transformer_uses_visit_dropout_and_recurrent_models_keep_torch_dropout():
    tf = SequenceModel(SequenceConfig(10, 2, "transformer", hidden=16, layers=2))
    drops = [tf.drop, *(b.drop for b in tf.blocks)]
    assert all(isinstance(d, VisitDropout) and d.p == 0.1 for d in drops)
    gru = SequenceModel(SequenceConfig(10, 2, "gru", hidden=16))
    assert type(gru.drop) is nn.Dropout
    assert [k for k in tf.state_dict() if "drop" in k] == []  # dropout holds no weights: old state dicts load


def test_visit_dropout_drops_its_rate_keeps_the_mean_and_draws_the_same_masks_at_any_thread_count():
    drop = VisitDropout(0.1).train()
    x = torch.ones(1000, 256)
    masks = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        torch.manual_seed(7)
        try:
            masks.append(drop(x))
        finally:
            torch.set_num_threads(before)
    y = masks[0]
    assert torch.equal(masks[0], masks[1])  # one serial generator, as nn.Dropout
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.003
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 65536 / (65536 - 6554)))
    assert abs(float(y.mean()) - 1.0) < 0.01
    torch.manual_seed(8)
    assert not torch.equal(drop(x), y)  # a new draw
    assert torch.equal(drop.eval()(x), x)  # off in evaluation
    assert torch.equal(VisitDropout(0.0).train()(x), x) and not VisitDropout(1.0).train()(x).any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        VisitDropout(1.5)


def test_a_transformer_saved_before_packed_visits_loads_and_predicts_the_same(tmp_path):
    golden = FIXTURES / "transformer_golden"
    clf = ehrdx.load(golden / "model")
    assert (clf.model_.config.encoder, clf.model_.config.layers, clf.model_.config.heads) == ("transformer", 2, 2)
    store = open_store(meds=FIXTURES / "golden" / "meds", store_dir=tmp_path / "store")
    samples = clf.samples(store, None, require_labels=False)
    proba = clf.predict_samples(store, samples)
    np.testing.assert_allclose(proba, np.load(golden / "proba.npy"), atol=1e-6, rtol=0)
    clf.save(tmp_path / "again")
    np.testing.assert_allclose(ehrdx.load(tmp_path / "again").predict_samples(store, samples), proba, atol=1e-6,
                               rtol=0)
