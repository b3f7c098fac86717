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
