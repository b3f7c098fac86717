"""The training loop's learning-rate schedule, its step budget, early stopping on a validation metric,
the minimum number of steps, and resuming a scheduled run from a checkpoint."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from ehrdx.data.batches import SampleSet
from ehrdx.data.preprocess import EncodedFeatures
from ehrdx.train.loop import TrainConfig, epoch_budget, lr_at, masked_macro_score, predict_logits, train_model


class Linear(nn.Module):
    def __init__(self, d: int, n_labels: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, n_labels)

    def forward(self, batch):
        return self.lin(batch.dense)


def rows(n: int, seed: int, d: int = 6, n_labels: int = 3) -> SampleSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    logit = x[:, :n_labels] * 2.0 + rng.normal(size=(n, n_labels))
    y = (logit > 0.8).astype(np.float32)
    mask = rng.random((n, n_labels)) > 0.2
    feats = EncodedFeatures(dense=x, code_ids=np.zeros(0, np.int64), code_offsets=np.zeros(n + 1, np.int64))
    return SampleSet(feats, y, mask)


def test_warmup_then_cosine_reaches_zero_at_the_budget():
    cfg = TrainConfig(lr=1e-2, schedule="cosine", warmup=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)  # 10 warm-up steps rise linearly
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) < 0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.5e-2)  # halfway through the decay
    assert lrs[-1] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_at(100, 100, cfg) == pytest.approx(0.0, abs=1e-12)
    constant = TrainConfig(lr=1e-2)
    assert {lr_at(s, 100, constant) for s in range(100)} == {1e-2}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="accuracy")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup=1.0)


@pytest.fixture
def learning_rates(monkeypatch):
    """The learning rate of every optimiser step taken in the test, in order."""
    seen = []
    step = torch.optim.AdamW.step

    def recording(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    return seen


def test_the_loop_steps_the_schedule_over_max_epochs(learning_rates):
    seen = learning_rates
    train = rows(200, 0)  # 4 batches of 50 per epoch
    cfg = TrainConfig(lr=1e-2, batch_size=50, max_epochs=5, schedule="cosine", warmup=0.2)
    h = train_model(Linear(6, 3), train, None, cfg)
    assert h.steps == len(seen) == 20
    np.testing.assert_allclose(seen, [lr_at(s, 20, cfg) for s in range(20)])


def test_masked_macro_score_skips_masked_elements_and_one_class_labels():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 3)) < 0.3).astype(np.float32)
    y[:, 2] = 0  # one class only: not counted
    mask = rng.random((300, 3)) < 0.7
    s = rng.normal(size=(300, 3)) + y
    s[~mask] = 1e6 * (1 - 2 * y[~mask])  # masked elements would wreck the score if they counted
    want = np.mean([roc_auc_score(y[mask[:, j], j], s[mask[:, j], j]) for j in range(2)])
    assert masked_macro_score(y, mask, s, "auroc") == pytest.approx(want)
    want_pr = np.mean([average_precision_score(y[mask[:, j], j], s[mask[:, j], j]) for j in range(2)])
    assert masked_macro_score(y, mask, s, "auprc") == pytest.approx(want_pr)
    assert math.isnan(masked_macro_score(y[:, 2:], mask[:, 2:], s[:, 2:], "auroc"))


def test_early_stopping_on_auroc_keeps_the_best_metric_epoch():
    train, val = rows(400, 2), rows(150, 3)
    torch.manual_seed(0)
    model = Linear(6, 3)
    scores = []
    cfg = TrainConfig(lr=3e-2, batch_size=32, max_epochs=12, patience=3, monitor="auroc")

    def on_epoch(epoch, train_loss, val_value):
        scores.append(masked_macro_score(val.y, val.y_mask, predict_logits(model, val), "auroc"))
        assert val_value == pytest.approx(-scores[-1])  # what early stopping minimises: minus the AUROC

    h = train_model(model, train, val, cfg, on_epoch=on_epoch)
    assert h.best_epoch == int(np.argmax(scores))  # first best epoch (improvements need > 1e-5)
    assert h.val_loss == pytest.approx([-s for s in scores])
    assert masked_macro_score(val.y, val.y_mask, predict_logits(model, val), "auroc") == pytest.approx(max(scores))


def test_min_steps_holds_early_stopping_back():
    train, val = rows(200, 4), rows(50, 5)
    worse = iter(range(100))

    def always_worse(model):
        return float(next(worse))

    cfg = TrainConfig(batch_size=50, max_epochs=20, patience=1)
    assert train_model(Linear(6, 3), train, val, cfg, val_score=always_worse).epochs_run == 2
    worse = iter(range(100))
    cfg = TrainConfig(batch_size=50, max_epochs=20, patience=1, min_steps=4 * 6)  # 4 steps an epoch
    h = train_model(Linear(6, 3), train, val, cfg, val_score=always_worse)
    assert h.epochs_run == 6 and h.steps == 24 and h.best_epoch == 0


def test_min_steps_extends_the_budget_of_a_small_set(learning_rates):
    seen = learning_rates
    train = rows(100, 8)  # 2 batches of 50 an epoch: 3 epochs are 6 steps, min_steps asks for 10
    cfg = TrainConfig(lr=1e-2, batch_size=50, max_epochs=3, schedule="cosine", min_steps=10)
    assert epoch_budget(cfg, 2) == 5 and epoch_budget(cfg, 4) == 3 and epoch_budget(cfg, 20) == 3
    h = train_model(Linear(6, 3), train, None, cfg)
    assert h.epochs_run == 5 and h.steps == 10
    np.testing.assert_allclose(seen, [lr_at(s, 10, cfg) for s in range(10)])  # decays over the 10 steps


def test_a_scheduled_run_resumes_to_the_same_weights(tmp_path):
    train, val = rows(300, 6), rows(80, 7)
    cfg = TrainConfig(lr=1e-2, batch_size=40, max_epochs=5, patience=10, schedule="cosine", warmup=0.1,
                      monitor="auroc")
    torch.manual_seed(0)
    whole = Linear(6, 3)
    h_whole = train_model(whole, train, val, cfg, checkpoint=tmp_path / "a")

    def crash(epoch, *_):
        if epoch == 2:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    part = Linear(6, 3)
    with pytest.raises(KeyboardInterrupt):
        train_model(part, train, val, cfg, on_epoch=crash, checkpoint=tmp_path / "b")
    torch.manual_seed(1)
    resumed = Linear(6, 3)  # other initial weights: everything must come from the checkpoint
    h = train_model(resumed, train, val, cfg, checkpoint=tmp_path / "b", resume=True)
    assert h.resumed_after_epoch == 2 and h.steps == h_whole.steps == 5 * 8
    # the same operations in the same order in one process: equal by construction
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert h.val_loss == h_whole.val_loss and h.best_epoch == h_whole.best_epoch
