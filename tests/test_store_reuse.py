"""A --store folder given again for the same data and settings is opened, not converted again (issue 15: a
conversion at hospital scale is a minute or more per command); any change to the files or the settings, or a
store left half-built, converts again."""

import os

import numpy as np
import pytest

import ehrdx.events_pipeline as pipeline
from ehrdx.data.store_source import SOURCE
from ehrdx.events_pipeline import open_store

EVENTS = "subject_id,time,code\n1,2020-01-01,DX//E11\n1,2020-02-01,DX//I10\n2,2020-01-05,DX//I10\n"


@pytest.fixture
def events(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(EVENTS)
    return path


def _no_conversion(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(pipeline, "build_store", refuse)


def test_the_same_data_and_settings_open_the_store_without_converting(events, tmp_path, monkeypatch):
    first = open_store(events=events, store_dir=tmp_path / "s")
    assert not first.reused and (tmp_path / "s" / SOURCE).exists()
    _no_conversion(monkeypatch)
    again = open_store(events=events, store_dir=tmp_path / "s")
    assert again.reused and again.meta["events"] == first.meta["events"] == 3
    np.testing.assert_array_equal(again.codes, first.codes)  # integers: the same arrays


def test_changed_files_or_settings_convert_again(events, tmp_path):
    open_store(events=events, store_dir=tmp_path / "s")
    # the same size and, within the file system's clock tick, the same time: the bytes differ
    events.write_text(EVENTS.replace("E11", "E12"))
    st = os.stat(events)
    os.utime(events, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = open_store(events=events, store_dir=tmp_path / "s")
    assert not changed.reused and "DX//E12" in changed.code_names
    assert not open_store(events=events, store_dir=tmp_path / "s", visit_gap_seconds=86400).reused
    assert not open_store(events=events, store_dir=tmp_path / "s", until="2020-01-31").reused
    assert open_store(events=events, store_dir=tmp_path / "s", until="2020-01-31").reused


def test_a_store_left_half_built_converts_again(events, tmp_path, monkeypatch):
    open_store(events=events, store_dir=tmp_path / "s")
    real = pipeline.build_store

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "build_store", crash)
    with pytest.raises(OSError):
        open_store(events=events, store_dir=tmp_path / "s", visit_gap_seconds=3600)  # another build, cut short
    assert not (tmp_path / "s" / SOURCE).exists()  # the folder holds no complete store of any source now
    monkeypatch.setattr(pipeline, "build_store", real)
    assert not open_store(events=events, store_dir=tmp_path / "s").reused


def test_the_command_says_it_opened_the_store(events, tmp_path):
    from cli_run import run, words

    for expected in (False, True):
        r = run("targets", "--events", events, "--store", tmp_path / "s", "--out", tmp_path / "t.csv")
        assert r.exit_code == 0, r.output
        assert ("converted before from the same files and settings" in words(r.output)) == expected
