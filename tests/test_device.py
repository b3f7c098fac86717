"""Device choice, mixed precision and the background batch producer (all runnable without a GPU)."""

import numpy as np
import pytest
import torch

from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.errors import ModelError
from ehrdx.estimator import EventClassifier
from ehrdx.events_pipeline import open_store, patient_splits
from ehrdx.train.device import device_batches, prefetch, resolve_device, resolve_precision


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("dev")
    paths = write_longitudinal(generate_longitudinal(500, seed=3), out)
    store = open_store(meds=paths["meds"], store_dir=out / "store")
    return paths, store, patient_splits(store, paths["meds"], 0)


def test_auto_is_cuda_only_when_a_gpu_is_there_and_bad_names_are_refused():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ModelError, match="not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="sees no CUDA GPU.*--device auto or cpu"):
            resolve_device("cuda")


def test_precision_auto_is_fp32_and_bf16_is_there_when_asked():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"  # measured faster here, see BENCHMARKS.md
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ModelError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_prefetch_keeps_order_and_raises_the_producers_error():
    assert [b["i"] for b in prefetch({"i": i} for i in range(50))] == list(range(50))

    def broken():
        yield {"i": 0}
        raise ValueError("bad batch 1")

    got = []
    with pytest.raises(ValueError, match="bad batch 1"):
        for b in prefetch(broken()):
            got.append(b["i"])
    assert got == [0]
    # a consumer that stops early does not leave the producer blocked
    it = prefetch({"i": i} for i in range(1000))
    assert next(it)["i"] == 0
    it.close()


def _fit(paths, store, splits, **kw):
    tr, va, _ = splits
    clf = EventClassifier(model="gru", labels=f"map:{paths['label_map']}", hidden=16, max_epochs=2, patience=5,
                          seed=1, **kw)
    return clf.fit(store, tr, va)


def test_background_batches_train_exactly_like_inline_batches(cohort, monkeypatch):
    paths, store, splits = cohort
    inline = _fit(paths, store, splits)
    from ehrdx.train import loop

    monkeypatch.setattr(loop, "device_batches", lambda b, d, **kw: device_batches(b, d, background=True, **kw))
    background = _fit(paths, store, splits)
    for k, v in inline.model_.state_dict().items():
        torch.testing.assert_close(background.model_.state_dict()[k], v, rtol=0, atol=0)
    assert inline.history_.train_loss == background.history_.train_loss


def test_bf16_autocast_trains_on_the_cpu_and_stays_close_to_fp32(cohort):
    paths, store, splits = cohort
    te = splits[2]
    fp32 = _fit(paths, store, splits, precision="fp32")
    bf16 = _fit(paths, store, splits, precision="bf16")
    assert bf16.history_.precision == "bf16" and fp32.history_.precision == "fp32"
    assert all(np.isfinite(bf16.history_.train_loss))
    a = fp32.evaluate(store, te)["all"]["macro_auroc"]
    b = bf16.evaluate(store, te)["all"]["macro_auroc"]
    assert abs(a - b) < 0.03, (a, b)
    # weights are kept in float32 whatever the arithmetic
    assert all(p.dtype == torch.float32 for p in bf16.model_.parameters())


def test_to_moves_a_fitted_model_and_predictions_do_not_change(cohort):
    paths, store, splits = cohort
    clf = _fit(paths, store, splits)
    s = clf.samples(store, splits[2])
    before = clf.predict_samples(store, s)
    after = clf.to("auto").predict_samples(store, s)
    # on a GPU, cuDNN's recurrent kernels may use TF32 arithmetic
    np.testing.assert_allclose(after, before, atol=1e-5 if not torch.cuda.is_available() else 2e-3)
    assert clf.history_.device == "cpu" and clf.history_.processes == 1


def test_batches_are_built_on_a_gpu_only_from_the_measured_batch_size(monkeypatch):
    """train/device.py collate_on_device: numpy + copy below MIN_DEVICE_BATCH patients a batch, the device
    collate from there (measured on an H200, BENCHMARKS.md); never on the CPU; DEVICE_COLLATE forces it."""
    from ehrdx.train import device as device_mod

    class Stub:  # a sequence set's collate_on, recorded (no GPU needed)
        def collate_on(self, device):
            self.asked = device
            return device is not None

    gpu, n = torch.device("cuda"), device_mod.MIN_DEVICE_BATCH
    monkeypatch.setattr(device_mod, "DEVICE_COLLATE", None)
    for size, expected in ((256, False), (n - 1, False), (n, True), (2048, True)):
        ds = Stub()
        assert device_mod.collate_on_device(ds, gpu, size) is expected
        assert ds.asked == (gpu if expected else None)
    assert device_mod.collate_on_device(Stub(), torch.device("cpu"), 4096) is False
    monkeypatch.setattr(device_mod, "DEVICE_COLLATE", True)
    assert device_mod.collate_on_device(Stub(), gpu, 16) is True
    monkeypatch.setattr(device_mod, "DEVICE_COLLATE", False)
    assert device_mod.collate_on_device(Stub(), gpu, 4096) is False
