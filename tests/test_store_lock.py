"""Two processes converting into one store folder (two commands given the same --store): the second gets a
clear error, never a crash halfway (one build replacing the other's temporary files) or a store mixing two
builds' arrays. Another process holds the lock here as a second open of the lock file does (flock locks
belong to an open file, so they conflict within one process too)."""

import fcntl
from contextlib import contextmanager

import numpy as np
import pytest

from cli_run import GOLDEN, run, words
from ehrdx.errors import DataError
from ehrdx.events_pipeline import WRITING, open_store


@contextmanager
def held(store_dir):
    store_dir.mkdir(parents=True, exist_ok=True)
    with open(store_dir / WRITING, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def test_a_store_folder_being_written_by_another_process_is_refused(tmp_path):
    with held(tmp_path / "store"):
        with pytest.raises(DataError, match="another ehrdx process is converting") as err:
            open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")
        assert str(tmp_path / "store") in str(err.value) and "own --store" in str(err.value)
        assert not (tmp_path / "store" / "codes.json").exists()  # nothing was written
        result = run("targets", "--meds", GOLDEN / "meds", "--labels", f"map:{GOLDEN / 'label_map.csv'}",
                     "--store", tmp_path / "store", "--out", tmp_path / "targets.parquet")
        assert result.exit_code == 2 and "another ehrdx process is converting" in words(result.output)
    # once the other process is done, the same folder converts, and again (the lock is let go each time)
    first = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")
    again = open_store(meds=GOLDEN / "meds", store_dir=tmp_path / "store")
    assert len(first) == len(again) > 0 and np.array_equal(np.asarray(first.codes), np.asarray(again.codes))
