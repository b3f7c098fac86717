from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED_TABLE = ROOT / "examples" / "seed_patients.csv"


@pytest.fixture(scope="session")
def seed_table_path() -> Path:
    return SEED_TABLE


@pytest.fixture(scope="session")
def small_cohort():
    from ehrdx.data.synth import generate_cohort

    return generate_cohort(3000, seed=1)


@pytest.fixture
def show_ids():
    """Errors with patient ids and cell values, as `ehrdx --show-ids` gives them (hidden by default)."""
    from ehrdx.errors import show_identifiers

    show_identifiers(True)
    yield
    show_identifiers(False)


@pytest.fixture(scope="session")
def labelled_store(tmp_path_factory):
    """make(n, seed, name) -> (out, paths, store, clf): a built-in longitudinal cohort written as MEDS and
    opened as a store, and an unfitted classifier whose settings are resolved and whose label vocabulary
    comes from every patient (what tests of model inputs need before any fit)."""
    import numpy as np

    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
    from ehrdx.estimator import EHRClassifier
    from ehrdx.events_pipeline import open_store
    from ehrdx.tasks.labels import LabelVocab
    from ehrdx.tasks.task import label_first_times

    def make(n: int, seed: int, name: str):
        out = tmp_path_factory.mktemp(name)
        paths = write_longitudinal(generate_longitudinal(n, seed=seed), out / "c")
        store = open_store(meds=paths["meds"], store_dir=out / "store")
        clf = EHRClassifier(labels=f"map:{paths['label_map']}")
        clf.resolve_settings("events")
        clf.label_vocab_ = LabelVocab(sorted(label_first_times(store, np.arange(len(store)), clf.selector_)))
        return out, paths, store, clf

    return make


@pytest.fixture(scope="session")
def pretrained_cohort(tmp_path_factory):
    """make(name, patients, gru_epochs) -> dict: a built-in cohort (seed 11) as a store, the same store as of
    2020-01-01 (`old_store`), its MEDS splits, and a small GRU and Transformer encoder pretrained on it and
    saved under out/gru and out/transformer (`encoders`)."""
    import torch

    from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
    from ehrdx.events_pipeline import open_store, patient_splits
    from ehrdx.pretrain import pretrain

    def make(name: str, patients: int, gru_epochs: int) -> dict:
        out = tmp_path_factory.mktemp(name)
        paths = write_longitudinal(generate_longitudinal(patients, seed=11), out)
        store = open_store(meds=paths["meds"], store_dir=out / "store")
        old_store = open_store(meds=paths["meds"], store_dir=out / "old", until="2020-01-01")
        splits = patient_splits(store, paths["meds"], 0)
        torch.manual_seed(0)
        enc = pretrain(store, splits, hidden=16, max_epochs=gru_epochs, min_count=5, batch_size=32)
        enc.save(out / "gru")
        tf = pretrain(store, splits, model="transformer", hidden=16, heads=2, layers=1, max_epochs=1, min_count=5)
        tf.save(out / "transformer")
        return {"paths": paths, "store": store, "old_store": old_store, "splits": splits, "out": out,
                "encoders": {"gru": enc, "transformer": tf}}

    return make
