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
